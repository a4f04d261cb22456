"""Pick the paged decode kernel's launch from ``decode_gap.py`` kernel sweeps:
``python3 choose_kernel.py CHOICE.json SWEEP.json...`` writes the choice (``kernel_launch.
choose`` over all the sweeps' rows: the fastest by geometric mean, the defaults unless another
beats them by 2 %) and prints it, with each launch's mean ratio to the defaults."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import kernel_launch  # noqa: E402


def main() -> int:
    rows = []
    for path in sys.argv[2:]:
        try:
            rows += json.loads(Path(path).read_text()).get("kernel_sweep", [])
        except (OSError, ValueError) as error:
            print(f"skipping {path}: {error}")
    try:
        choice = kernel_launch.choose(rows)
    except ValueError as error:  # no sweep ran: the defaults
        print(f"no choice ({error}); the defaults")
        choice = {"launch": kernel_launch.DEFAULT, "ratio": 1.0, "points": []}
    Path(sys.argv[1]).write_text(json.dumps(choice, indent=1))
    print(f"chosen: {choice['launch']} ({choice['ratio']:.3f} of the defaults' time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
