"""Helpers of the manifest tests: a real model directory with every kind of record, cheap
copies of it, and a recorder of every file the process opens.

The base directory is what the writers produce: ``resnet_tiny`` exported with the real
exporter (three sub-networks, float32 and float16 graphs, the 8 segment graphs and
their float16 twins), plus an engine record and a quantization record shaped as
``adn-edge build`` and ``adn-edge quantize`` write them (those tools need TensorRT or
~15 s of calibration; their own tests save through the same validation).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import site
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.modeldir import manifest

ARCH = "resnet_tiny"
CODES = ("1111", "0101", "0000")
ENGINE = f"{ARCH}_1111.fp16.engine"
SEG_ENGINE = f"{ARCH}_seg0_full.fp16.engine"
EVIL = "evil.onnx"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def engine_record(directory: Path, name: str, key: str) -> dict[str, Any]:
    """An engine record as ``backends/tensorrt/plan.py:engine_record`` writes it."""
    rec = manifest.file_record(directory, name)
    return {**rec, "precision": "fp16",
            "precision_observed": {"layers": 12, "compute_layers": 8, "by_precision": {"FP16": 8},
                                   "reduced_fraction": 1.0, "detailed": True},
            "tensorrt_version": "10.3.0", "gpu": "Orin (nvgpu)", "compute_capability": "8.7",
            "sm_count": 16, "gpu_memory_mib": 62841,
            "build_seconds": 12.5, "built_at": "2025-01-01T00:00:00+00:00",
            "options": {"precision": "fp16", "min_batch": 1, "opt_batch": 1, "max_batch": 8, "workspace_mb": 1024,
                        "opt_level": 3},
            "source": {"key": key, "path": f"{ARCH}_1111.fp16.onnx", "sha256": "0" * 64, "strongly_typed": True},
            "timing_cache": f"{ARCH}.timing.cache", "calibration": None}


def quantization_record() -> dict[str, Any]:
    """A quantization record as ``adn-edge quantize`` writes it (quantize/runner.py)."""
    method = {"name": "percentile", "num_bins": 2048, "percentile": 99.999}
    return {
        "settings": {"source_sha256": "1" * 64, "method": method, "samples": 512,
                     "calibration_fingerprint": "2" * 64, "recipe": 1},
        "calibration": {"source": "builtin:digits", "kind": "builtin", "samples": 512, "requested": 512,
                        "fingerprint": "2" * 64, "preprocess": {"input_size": 32}, "available": 1437,
                        "selection": "random subset, seed 0"},
        "method": method,
        "library": {"name": "onnxruntime.quantization.quantize_static", "version": "1.20.0", "format": "QDQ",
                    "recipe": 1},
        "cache": {"path": f"{ARCH}_0101.int8.percentile.ranges.json", "key": "3" * 64, "sha256": "4" * 64},
        "qdq": {"QuantizeLinear": 44, "DequantizeLinear": 61, "weighted_layers": 17, "quantized_layers": 17,
                "float_layers": []},
        "accuracy": {"dataset": "digits", "split": "test", "samples": 360, "top1_fp32": 10.0, "top1_int8": 10.0,
                     "drop": 0.0, "threshold": 1.0, "warning": False},
    }


def make_base(root: Path) -> Path:
    """Export the base directory into ``root/resnet_tiny`` and return it."""
    import torch

    from adn_edge.export import export
    from adn_edge.export.exporter import ExportOptions
    from adn_edge.export.segments import export_segments
    from adn_edge.models import create_model
    from adn_edge.models.random_weights import random_state_dict

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = create_model(ARCH)
        model.load_state_dict(random_state_dict(model, seed=7), strict=True)
        model.eval()
        d = root / ARCH
        export(model, d, list(CODES), options=ExportOptions(fp16=True))
        export_segments(model, d, options=ExportOptions(fp16=True))
    finally:
        torch.set_num_threads(threads)
    m = manifest.load(d)
    (d / ENGINE).write_bytes(b"PLAN (not a real engine: read by no test)")
    (d / SEG_ENGINE).write_bytes(b"PLAN (segment)")
    m["subnets"]["1111"]["engines"] = {"fp16": engine_record(d, ENGINE, "onnx_fp16")}
    m["subnets"]["0101"]["quantization"] = quantization_record()
    m["segments"]["parts"][0]["engines"] = {"full": {"fp16": engine_record(d, SEG_ENGINE, "onnx_fp16")}, "skip": {}}
    manifest.save(d, m)
    return d


def link_copy(base: Path, dest: Path) -> Path:
    """``base`` copied into ``dest`` with hard links (graphs are never written in place by
    the tests: a damaged file is unlinked and recreated), the manifest as a real copy."""
    dest.mkdir(parents=True)
    for p in base.iterdir():
        if p.name == manifest.FILENAME:
            (dest / p.name).write_bytes(p.read_bytes())
        elif p.is_file():
            os.link(p, dest / p.name)
    return dest


def reference_logits(directory: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Logits of every monolithic graph of ``directory`` on ``batch`` (ONNX Runtime, plain sessions)."""
    import onnxruntime as ort

    m = manifest.load(directory)
    out = {}
    for code, entry in m["subnets"].items():
        sess = ort.InferenceSession(str(directory / entry["files"]["onnx"]["path"]),
                                    providers=["CPUExecutionProvider"])
        out[code] = sess.run(["logits"], {"input": batch})[0]
    return out


class Reads:
    """Every file the process opens while armed, by real path: an audit hook on the
    ``open`` event, which ``open``, ``io.open``, ``os.open``, ``Path.read_bytes`` and
    the import system all raise (docs.python.org, "Audit events table"). Installed
    once per process (audit hooks cannot be removed); disarmed it does nothing."""

    _installed = False
    _lock = threading.Lock()
    armed = False
    paths: list[str] = []

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if not cls._installed:
                sys.addaudithook(cls._hook)
                cls._installed = True

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.armed and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            try:
                cls.paths.append(os.path.realpath(os.fsdecode(args[0])))
            except Exception:  # noqa: BLE001 - a hook must never raise into the code it watches
                cls.paths.append(f"<unresolvable {args[0]!r}>")

    def __enter__(self) -> Reads:
        self.install()
        Reads.paths = []
        Reads.armed = True
        return self

    def __exit__(self, *exc: object) -> None:
        Reads.armed = False


def _library_roots() -> list[str]:
    """Where imports legitimately read from: the Python installation and sys.path."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages()}
    roots |= {p for p in sys.path if p and os.path.isdir(p)}
    return sorted({os.path.realpath(r) for r in roots})


def inside(path: str, root: str) -> bool:
    root = os.path.realpath(root)
    return path == root or path.startswith(root + os.sep)


def reads_outside(paths: list[str], directory: Path, forbidden_root: Path) -> list[str]:
    """The recorded reads that are neither inside ``directory`` nor library/system reads.

    Anything under ``forbidden_root`` (the example's own temporary tree, which holds the
    "outside" decoy next to the model directory) other than the directory itself counts,
    even if a library root happened to contain it."""
    bad = []
    libs = _library_roots()
    for p in paths:
        if inside(p, str(directory)):
            continue
        if inside(p, str(forbidden_root)):
            bad.append(p)
            continue
        if p.startswith(("/proc/self/", f"/proc/{os.getpid()}/")) or any(inside(p, r) for r in libs):
            continue
        if _OWN_TEMP.fullmatch(p):
            continue
        bad.append(p)
    return bad


_OWN_TEMP = re.compile(re.escape(tempfile.gettempdir()) + r"/adn-edge-switch-graph-[^/]+(/part\d+_(full|skip)\.onnx)?")
"""The one-session segmented backend's own temporary files: ONNX Runtime writes each
segment form it optimised there and the backend reads it back (switch_graph.py). Not
model-directory data: written by this process from bytes already checked."""
