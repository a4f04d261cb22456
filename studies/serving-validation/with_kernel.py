"""``tune`` with the paged decode kernel launched as a sweep chose (``kernel_launch.choose``):
``python3 with_kernel.py CHOICE.json ARGS...`` is ``tune ARGS...`` after ``kernel_launch.apply``
of the choice's launch. ``run.sh`` takes it as its ``TUNE``; ``choose_kernel.py`` writes the
choice."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import kernel_launch  # noqa: E402

from tuner.cli import main  # noqa: E402

choice = json.loads(Path(sys.argv[1]).read_text())
launch = kernel_launch.apply(choice["launch"])
print(f"decode kernel launch: {launch}", file=sys.stderr, flush=True)
sys.exit(main(sys.argv[2:]))
