"""The report's decode-step figure (``tuner.plots.traffic_steps``) from a run's kept
iterations (``tune validate --traffic --iterations PATH.csv``), for runs made before the plan's
validation section kept ``decode_steps`` itself.

    python3 studies/serving-validation/decode_steps_plot.py ITERATIONS.csv OUT.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from tuner import plots
from tuner.iteration_log import read_iterations
from tuner.traffic import decode_steps


def main() -> int:
    loads = [{"load": load, "decode_steps": decode_steps(records)}
             for load, records in read_iterations(Path(sys.argv[1])).items()]  # fmt: skip
    with open(sys.argv[2], "wb") as out:
        out.write(plots.traffic_steps(loads=loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
