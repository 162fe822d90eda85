"""Constants shared by the INT8 tests and their fixtures."""

from adn_edge.data import EMBEDDED_DATASET

DATA = f"builtin:{EMBEDDED_DATASET}"
"""The embedded model's own built-in data (Fashion-MNIST): calibration from its training
split, evaluation on its test split (2,000 images)."""
TEST_IMAGES = 2000
"""Images in the test split of DATA (one image = 0.05 points of top-1)."""
CODES = ["1111", "0101", "0000"]
"""Exported sub-networks of the embedded model."""
QUANTIZED = ["1111", "0000"]
"""The ones the session fixture quantises (0101 stays FP32 only)."""
SAMPLES = 128
"""Calibration images in the fixture: fewer than the recommended 300, to stay fast."""
SEG_SAMPLES = 128
"""Calibration images of the INT8 segments fixture (each part k sees them through 2^k prefixes)."""
SEG_DROP_POINTS = 1.0
"""Tolerance of the segment tests: INT8-through-segments top-1 at most this many points below the
float32 segments, per sub-network, on the 2,000 test images of DATA (one image = 0.05 points).
Measured with 128 calibration images: at most 0.55 (1000; mean 0.03 over the 16 chains); with
the default 512 (the acceptance run, docs/model-directory.md): at most 0.45 (1111; mean -0.02)."""
SEG_MIN_AGREEMENT = 97.0
"""Percent of test images on which every INT8 chain and its float32 chain predict the same class
(measured with 128 calibration images: 97.85 (0110) to 99.65; with 512: 98.05 (0110) to 99.8)."""
SEG_LOGIT_REL_TOLERANCE = 0.1
"""||int8 - fp32|| / ||fp32|| of each chain's logits on the test split. Measured with 128
calibration images: 0.020-0.043, except the chains 0100-0111 (stage 1 skipped, stage 2
kept): 0.055-0.070 (with 512: 0.019-0.038 and 0.051-0.066). A broken scale gives 0.30 or
more (measured on the monolithic graphs, tests/quantize/test_quantize.py)."""
