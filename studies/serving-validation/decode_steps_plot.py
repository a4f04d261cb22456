"""The report's decode-step figure (``tuner.plots.traffic_steps``) from a run's kept
iterations (``tune validate --traffic --iterations PATH.csv``), for runs made before the plan's
validation section kept ``decode_steps`` itself.

    python3 studies/serving-validation/decode_steps_plot.py ITERATIONS.csv OUT.png
"""

from __future__ import annotations

import csv
import sys
from types import SimpleNamespace

from tuner import plots
from tuner.traffic import decode_steps


def main() -> int:
    with open(sys.argv[1], newline="") as source:
        rows = list(csv.DictReader(source))
    loads = []
    for load in dict.fromkeys(r["load"] for r in rows):  # in the run's order
        records = [SimpleNamespace(path=r["path"], decodes=int(r["decodes"]),
                                   step_s=float(r["step_s"]), predicted_s=float(r["predicted_s"]))
                   for r in rows if r["load"] == load]  # fmt: skip
        loads.append({"load": load, "decode_steps": decode_steps(records)})
    with open(sys.argv[2], "wb") as out:
        out.write(plots.traffic_steps(loads=loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
