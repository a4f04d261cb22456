"""``tune`` with the decode kernel's chunks split by work (``executor.decode_splits.BY_WORK``):
the command the by-work runs used, ``TUNE="python3 by_work.py" run.sh ...``. By work has been
the default since those runs (``h100-by-work-2026-12-07/``), so it now runs ``tune`` as is."""

import sys

from executor import decode_splits
from tuner.cli import main

decode_splits.BY_WORK = True
sys.exit(main())
