"""Constants and comparisons shared by the runtime tests."""

from __future__ import annotations

import numpy as np

from adn_edge import subnet

ARCH = "resnet_tiny"
CODES = subnet.all_codes(4)
TOL = 1e-4
"""Relative error allowed against the ADN forward (float32 folding noise is ~1e-7)."""


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a64 - b64) / max(np.linalg.norm(b64), 1e-30))
