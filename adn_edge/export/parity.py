"""Parity: does the exported graph compute what the ADN model computes?

The reference is the *unfolded* ADN model's own forward with the official skip
list, not the static module we exported from, so a mistake in materialisation
(wrong twin, wrong block, bad folding) is caught here too, not only exporter bugs.
The figure is the relative error ||onnx - ref|| / ||ref|| over a random batch, plus
the largest absolute difference, computed in float64.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from adn_edge import subnet
from adn_edge.models.base import ADNModel

FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 2e-2


@dataclass(frozen=True)
class Parity:
    rel_err: float
    max_abs_err: float
    tolerance: float
    samples: int
    runtime: str = "onnxruntime-cpu"

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.rel_err)) and self.rel_err <= self.tolerance

    def record(self) -> dict[str, float | int | str]:
        return asdict(self)


def parity_inputs(input_size: int, samples: int = 2, seed: int = 0) -> np.ndarray:
    """A standard-normal batch: normalised images have roughly unit variance."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((samples, 3, input_size, input_size), dtype=np.float32)


def reference_logits(model: ADNModel, code: str, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x), skip=subnet.to_skip(code)).double().numpy()


def compare(out: np.ndarray, ref: np.ndarray, tolerance: float) -> Parity:
    out64, ref64 = out.astype(np.float64), ref.astype(np.float64)
    denom = max(float(np.linalg.norm(ref64)), 1e-30)
    rel = float(np.linalg.norm(out64 - ref64) / denom)
    return Parity(rel, float(np.max(np.abs(out64 - ref64))), tolerance, int(out.shape[0]))


def onnxruntime_logits(model_bytes_or_path: bytes | str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes_or_path, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]
