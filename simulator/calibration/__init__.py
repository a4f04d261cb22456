"""Measured efficiency back into the model: ``fit`` fits a GPU profile's efficiency fields
from the executor's bench files, ``fit_saved`` runs that fit over a saved directory and writes
the calibration, ``fidelity`` scores the calibrated model against every measured step."""
