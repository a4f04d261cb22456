"""``tune`` with the decode kernel's chunks split by work (``executor.decode_splits.BY_WORK``),
for a validation run against the default rule: ``TUNE="python3 by_work.py" run.sh ...``."""

import sys

from executor import decode_splits
from tuner.cli import main

decode_splits.BY_WORK = True
sys.exit(main())
