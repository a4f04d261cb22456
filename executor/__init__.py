"""rooftune's GPU side: a PyTorch Llama at real shapes, microbenchmarks and calibration.

Imports torch; nothing in ``simulator`` or ``tuner`` imports this package at import time."""
