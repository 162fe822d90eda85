"""Constants shared by the INT8 tests and their fixtures."""

CODES = ["1111", "0101", "0000"]
"""Exported sub-networks of the embedded model."""
QUANTIZED = ["1111", "0000"]
"""The ones the session fixture quantises (0101 stays FP32 only)."""
SAMPLES = 128
"""Calibration images in the fixture: fewer than the recommended 300, to stay fast."""
