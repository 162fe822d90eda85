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


def bench_report(latency: dict[str, float], energy: dict[str, float] | None = None, backend: str = "onnxruntime",
                 device: str = "cpu", segmented: bool | None = None, precision: str | None = None) -> dict:
    subnets = {}
    for code, ms in latency.items():
        e = None if energy is None else energy[code]
        subnets[code] = {"latency_ms": {"mean": ms * 0.9, "p50": ms * 0.9, "p90": ms * 0.95, "p99": ms,
                                        "min": ms * 0.8, "max": ms * 1.2},
                         "throughput_ips": 1000 / ms, "iterations": 100, "power_w": None if e is None else 5.0,
                         "energy_mj": e, "energy_above_idle_mj": None, "power_samples": None}
    report = {"schema": 1, "device": {"kind": device, "name": "test", "power_mode": None}, "backend": backend,
              "batch": 1, "power": {"source": "none" if energy is None else "tegrastats", "rail": None,
                                    "idle_w": None, "interval_ms": None}, "subnets": subnets}
    if segmented is not None:  # reports from before segmented runs existed have no such key
        report["segmented"] = segmented
    if precision is not None:  # nor a precision
        report["precision"] = precision
    return report
