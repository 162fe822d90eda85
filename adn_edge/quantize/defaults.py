"""The documented numbers of ``adn-edge quantize``, importable without numpy or onnx
(the command line reads them for its help text at start-up)."""

from __future__ import annotations

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "percentile"
"""Percentile (99.999 % of |x|, ONNX Runtime's default) ignores the rare outlier that sets
a min/max range. On the embedded model (``benchmarks/bench_int8.py``) it matches min/max:
INT8 agrees with FP32 on >= 99.7 % of the test images of every sub-network, top-1 at most
0.28 points lower. ONNX Runtime's entropy (KL) search clips harder: agreement down to
98.6 % there, and to 80 % on an export without BatchNorm recalibration, so it is offered,
not the default."""
DEFAULT_PERCENTILE = 99.999

MIN_SAMPLES = 10
"""Below this many images calibration is refused (exit 2): every range would be
set by a handful of activations, and the graph would look fine but misclassify."""
RECOMMENDED_SAMPLES = 300
"""Below this a warning is printed. NVIDIA and ONNX Runtime both suggest a few
hundred representative images (about 500 for ImageNet); ranges from fewer are noisy,
and entropy/percentile histograms from fewer are sparse in their tails."""
DEFAULT_SAMPLES = 512

DROP_WARN_POINTS = 1.0
"""Warn when INT8 top-1 is more than this many points below FP32 (issue 6's floor)."""
INT8_REL_TOLERANCE = 0.15
"""Relative logit error (||int8 - fp32|| / ||fp32||) above which a warning is printed.
Min/max and percentile ranges give 1.5-2.5 % on the embedded model's sub-networks, and
8-bit activations through ~50 layers (ResNet-50) stay well under this; above it the
ranges are probably wrong (too few or unrepresentative calibration images)."""
