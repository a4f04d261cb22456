"""Hardware profiles as data: one YAML per GPU (datasheet numbers with a source for each group),
``defaults.efficiency.yaml`` (literature efficiency defaults with their sources), and
``calibration/<gpu>.yaml`` written by ``tune calibrate`` from measurements on that GPU.

This package holds no code; it exists so the YAML files install with rooftune.
"""

from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent
CALIBRATION_DIR = PROFILE_DIR / "calibration"
