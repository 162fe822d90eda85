"""Constants shared by the INT8 tests and their fixtures."""

CODES = ["1111", "0101", "0000"]
"""Exported sub-networks of the embedded model."""
QUANTIZED = ["1111", "0000"]
"""The ones the session fixture quantises (0101 stays FP32 only)."""
SAMPLES = 128
"""Calibration images in the fixture: fewer than the recommended 300, to stay fast."""
SEG_SAMPLES = 128
"""Calibration images of the INT8 segments fixture (each part k sees them through 2^k prefixes)."""
SEG_DROP_POINTS = 1.5
"""Tolerance of the segment tests: INT8-through-segments top-1 at most this many points below the
float32 segments, per sub-network, on the 360 built-in test images (one image = 0.28 points).
Measured with 128 calibration images: at most 0.83 (0111, 0001); with the default 512 (the
acceptance run, docs/model-directory.md): at most 0.83 (0100)."""
