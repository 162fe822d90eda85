"""``quantize_directory``: every exported sub-network of a model directory -> its INT8 graph.

Per sub-network, each from its *own* calibration pass (skipped stages and the
skip-aware norms give every sub-network different activation statistics, so one
set of scales cannot serve them all):

1. verify the FP32 graph against the manifest, refuse one that is already quantised;
2. skip it when its INT8 graph is up to date (same FP32 graph, images, method,
   sample count and recipe; ``force`` redoes it);
3. ranges: from the calibration cache when its key matches, else ONNX Runtime's
   calibrator over the images (:func:`~adn_edge.quantize.qdq.calibrate`);
4. ``quantize_static`` -> Q/DQ graph, finalised and checked
   (:mod:`adn_edge.quantize.qdq`), written atomically as ``<arch>_<code>.int8.onnx``;
5. accuracy against the FP32 graph on the evaluation data (when there is some) and
   the logit error; a drop above the threshold is a warning, not a failure;
6. the manifest records the graph (``files.onnx_int8``), how it was calibrated
   (``quantization``) and what it costs (``quantization.accuracy``,
   ``parity.onnx_int8``), saved after every sub-network so that an interrupted run
   keeps what it finished.

Nothing here imports torch except the built-in dataset and the evaluation data
loaders (:mod:`adn_edge.train.data`), which need it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.modeldir import manifest as manifest_mod
from adn_edge import subnet as subnet_mod
from adn_edge.errors import AdnError, AdnFailure, AdnProblem
from adn_edge.fileio import ensure_writable_dir, sha256_file, write_bytes
from adn_edge.quantize import accuracy as acc_mod
from adn_edge.quantize import defaults, qdq
from adn_edge.quantize.calibration import CalibrationData
from adn_edge.modeldir.lock import writing
from adn_edge.modeldir.names import int8_name

Iterate = Callable[[Sequence[str], str], Iterable[str]]
Log = Callable[[str], None]
FILE_KEY = "onnx_int8"
CALIB_BATCH = 8
PARITY_SAMPLES = 64
"""Calibration images the logit error is measured on when there is no evaluation data."""


@dataclass
class QuantizeOptions:
    method: str = defaults.DEFAULT_METHOD
    samples: int = defaults.DEFAULT_SAMPLES
    percentile: float = defaults.DEFAULT_PERCENTILE
    eval_data: str | None = "auto"
    """Evaluation data for the accuracy check: ``builtin``/``builtin:NAME``, an
    ImageFolder directory (its val/ or test/ split when present), ``auto`` (the
    built-in test split when calibrating on the built-in data, else none) or None."""
    eval_samples: int | None = None
    drop_threshold: float = defaults.DROP_WARN_POINTS
    force: bool = False
    """Re-quantise sub-networks whose INT8 graph is up to date (ranges still come from
    the cache when it matches)."""
    use_cache: bool = True
    """False: ignore cached ranges and calibrate again (the cache is rewritten)."""
    threads: int | None = None
    """CPU threads for the accuracy sessions (None: ONNX Runtime's default)."""

    def checked_method(self) -> qdq.Method:
        """The calibration method these options name, after refusing bad values (an
        AdnError, exit 2): what both ``quantize`` and ``quantize --segments`` check
        before taking the directory's lock."""
        method = qdq.Method(self.method, self.percentile)
        if self.eval_samples is not None and self.eval_samples < 1:
            raise AdnError(f"--eval-samples must be at least 1, not {self.eval_samples}.")
        if self.drop_threshold < 0:
            raise AdnError(f"The accuracy-drop threshold must be >= 0 points, not {self.drop_threshold}.")
        return method


@dataclass
class SubnetQuantization:
    code: str
    status: str
    """``quantized`` or ``up to date``."""
    file: str
    cache: str
    """``hit``, ``miss`` (calibrated now) or ``-`` (skipped)."""
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    accuracy: acc_mod.Comparison | None = None
    accuracy_record: dict[str, Any] | None = None
    rel_err: float | None = None
    warnings: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        acc = self.accuracy.record() if self.accuracy is not None else self.accuracy_record
        return {"code": self.code, "skip_cfg": subnet_mod.to_skip_cfg(self.code), "status": self.status,
                "file": self.file, "calibration_cache": self.cache, "seconds": round(self.seconds, 3),
                "qdq": self.stats, "logit_rel_err": None if self.rel_err is None else round(self.rel_err, 6),
                "accuracy": acc, "warnings": list(self.warnings)}


@dataclass
class QuantizeReport:
    directory: Path
    arch: str
    method: dict[str, Any]
    calibration: dict[str, Any]
    subnets: list[SubnetQuantization]
    eval_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "arch": self.arch, "method": self.method,
                "calibration": self.calibration, "library": qdq.library_record(),
                "subnets": [s.record() for s in self.subnets], "eval_files": self.eval_files,
                "warnings": self.warnings, "notes": self.notes, "seconds": round(self.seconds, 2)}


def _resolve_codes(man: dict[str, Any], specs: Sequence[str] | str | None) -> list[str]:
    """Sub-networks with a float32 graph to quantise (``all`` = every one of them)."""
    present = {c: e for c, e in man["subnets"].items() if "onnx" in (e.get("files") or {})}
    return manifest_mod.resolve_codes(man, specs, present)


def _eval_spec(options: QuantizeOptions, calib: CalibrationData) -> str | None:
    spec = options.eval_data
    if spec is None or str(spec).lower() in ("none", "no", "off"):
        return None
    if str(spec).lower() == "auto":
        return calib.source if calib.kind == "builtin" else None
    return str(spec)


def _settings(fp32_sha: str, method: qdq.Method, calib: CalibrationData) -> dict[str, Any]:
    """What an INT8 graph is a function of; equal settings -> the graph is up to date."""
    return {"source_sha256": fp32_sha, "method": method.record(), "samples": calib.count,
            "calibration_fingerprint": calib.fingerprint(), "recipe": qdq.RECIPE}


def quantize_directory(directory: str | os.PathLike[str], calib: str | os.PathLike[str],
                       subnets: Sequence[str] | str | None = "all", options: QuantizeOptions | None = None,
                       iterate: Iterate | None = None, log: Log | None = None) -> QuantizeReport:
    """Calibrate and quantise ``subnets`` of an exported model directory (see module doc).

    ``calib``: a folder of images or ``builtin``/``builtin:NAME``. Raises
    :class:`~adn_edge.errors.AdnError` for bad input (exit 2 on the command line).
    """
    t_start = time.perf_counter()
    opts = options or QuantizeOptions()
    method = opts.checked_method()
    directory = Path(directory)
    manifest_mod.load(directory)  # a clear error before the lock creates anything
    ensure_writable_dir(directory)
    with writing(directory, "quantize"):
        return _quantize_locked(directory, subnets, calib, opts, method, log, iterate, t_start)


def _quantize_locked(directory: Path, subnets: Sequence[str] | str | None, calib: str | os.PathLike[str],
                     opts: QuantizeOptions, method: qdq.Method, log: Log | None,
                     iterate: Iterate | None, t_start: float) -> QuantizeReport:
    man = manifest_mod.load(directory)  # read under the lock: a writer that finished meanwhile counts
    arch = str(man["arch"])
    codes = _resolve_codes(man, subnets)
    data = CalibrationData.open(calib, man, opts.samples)
    say = log or (lambda _msg: None)
    report = QuantizeReport(directory, arch, method.record(), data.record(), [], warnings=list(data.warnings))
    for w in data.warnings:
        say(f"warning: {w}")
    eval_spec = _eval_spec(opts, data)
    eval_set: acc_mod.EvalSet | None = None
    if eval_spec is not None:
        eval_set = acc_mod.load_eval_set(eval_spec, directory, int(man["num_classes"]), opts.eval_samples)
    else:
        report.notes.append("no evaluation data: INT8 accuracy was not measured (pass --data builtin or an "
                            "ImageFolder directory)")
    input_name = str(man["input"].get("name", "input"))
    iterate = iterate or (lambda items, _desc: items)
    comparisons: dict[str, acc_mod.Comparison] = {}
    for code in iterate(codes, f"quantize {arch} ({method.name})"):
        result = _quantize_one(directory, man, code, method, data, opts, eval_set, input_name)
        report.subnets.append(result)
        if result.accuracy is not None:
            comparisons[code] = result.accuracy
        for w in result.warnings:
            report.warnings.append(f"{code}: {w}")
            say(f"warning: {code}: {w}")
        manifest_mod.save(directory, man)  # after each: an interruption keeps what was finished
    if comparisons:
        paths, notes = acc_mod.write_eval_files(directory, comparisons, man)
        report.eval_files = [p.name for p in paths]
        report.notes += notes
    report.seconds = time.perf_counter() - t_start
    return report


def _quantize_one(directory: Path, man: dict[str, Any], code: str, method: qdq.Method, data: CalibrationData,
                  opts: QuantizeOptions, eval_set: acc_mod.EvalSet | None, input_name: str) -> SubnetQuantization:
    import onnx

    t0 = time.perf_counter()
    arch = str(man["arch"])
    entry = man["subnets"][code]
    files = entry.setdefault("files", {})
    src_rec = files["onnx"]
    fp32_path = manifest_mod.verify_file(directory, src_rec)
    fmodel = onnx.load(str(fp32_path))
    qdq.check_not_quantized(fmodel, f"The float32 graph of sub-network {code} ({src_rec['path']})")
    name = int8_name(arch, code)
    settings = _settings(str(src_rec["sha256"]), method, data)
    old = entry.get("quantization") or {}
    warnings: list[str] = []

    if not opts.force and old.get("settings") == settings and FILE_KEY in files and _verifies(directory, files[FILE_KEY]):
        prev_acc = old.get("accuracy")
        comparison: acc_mod.Comparison | None = None
        if eval_set is not None and not (isinstance(prev_acc, dict) and prev_acc.get("dataset") == eval_set.name
                                         and prev_acc.get("split") == eval_set.split
                                         and prev_acc.get("samples") == len(eval_set)
                                         and prev_acc.get("threshold") == opts.drop_threshold):
            comparison = _compare(fp32_path, directory / name, eval_set, opts)
            old["accuracy"] = comparison.record()
            warnings += _accuracy_warnings(comparison)
        elif isinstance(prev_acc, dict) and eval_set is not None:
            comparison = _comparison_from_record(prev_acc)
            warnings += _accuracy_warnings(comparison)
        return SubnetQuantization(code, "up to date", name, "-", time.perf_counter() - t0, old.get("qdq", {}),
                                  comparison, prev_acc if comparison is None else None,
                                  (entry.get("parity") or {}).get(FILE_KEY, {}).get("rel_err"), warnings)

    cache_file = directory / qdq.cache_name(arch, code, method)
    key = qdq.cache_key(str(src_rec["sha256"]), data.fingerprint(), method, data.count)
    hit = opts.use_cache and qdq.cache_valid(cache_file, key)
    step = "calibrate"
    try:
        if not hit:
            batches = list(data.batches(CALIB_BATCH))
            qdq.calibrate(fp32_path, batches, method, input_name, cache_file,
                          {"key": key, "graph_sha256": src_rec["sha256"], "graph": src_rec["path"],
                           "calibration": data.source, "fingerprint": data.fingerprint(),
                           "method": method.record(), "samples": data.count})
        step = "quantise"
        qmodel = qdq.quantize_graph(fp32_path, cache_file, method)
    except (AdnProblem, KeyboardInterrupt):
        raise
    except Exception as exc:  # ONNX Runtime's tools raise plain exceptions
        raise AdnFailure(f"ONNX Runtime could not {step} sub-network {code} ({src_rec['path']}): "
                         f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}. "
                         "Nothing was written for it; the sub-networks before it are saved.") from exc
    meta = {"adn.precision": "int8", "adn.quant.format": "QDQ", "adn.quant.method": method.name,
            "adn.quant.samples": data.count, "adn.quant.calibration": data.source,
            "adn.quant.fingerprint": data.fingerprint(), "adn.quant.source_sha256": src_rec["sha256"],
            "adn.quant.library": f"onnxruntime {qdq.library_record()['version']}"}
    qmodel = qdq.finalize(qmodel, fmodel, meta)
    stats = qdq.check_qdq(qmodel, f"The INT8 graph of sub-network {code}")
    if stats.float_layers:
        warnings.append(f"{len(stats.float_layers)} weighted layer(s) stayed float: {', '.join(stats.float_layers[:3])}")
    blob = qmodel.SerializeToString()
    del qmodel

    comparison = None
    if eval_set is not None:
        comparison = _compare(fp32_path, blob, eval_set, opts)
        rel, samples = comparison.rel_err, comparison.samples
        warnings += _accuracy_warnings(comparison)
    else:
        x = data.array()[:PARITY_SAMPLES]
        ref = acc_mod.logits(acc_mod.session(str(fp32_path), opts.threads), x)
        rel = acc_mod.rel_err(acc_mod.logits(acc_mod.session(blob, opts.threads), x), ref)
        samples = len(x)
    if not np.isfinite(rel) or rel > defaults.INT8_REL_TOLERANCE:
        warnings.append(f"INT8 logits differ from FP32 by {rel:.1%} (relative), more than the "
                        f"{defaults.INT8_REL_TOLERANCE:.0%} expected; check that the calibration images are "
                        "representative")

    write_bytes(directory / name, blob)
    files[FILE_KEY] = manifest_mod.file_record(directory, name)
    entry.setdefault("parity", {})[FILE_KEY] = {
        "rel_err": rel, "tolerance": defaults.INT8_REL_TOLERANCE, "samples": samples,
        "reference": "onnx", "data": comparison.dataset if comparison else data.source,
        "runtime": "onnxruntime-cpu"}
    entry["quantization"] = {
        "settings": settings, "calibration": data.record(), "method": method.record(),
        "library": qdq.library_record(),
        "cache": {"path": cache_file.name, "key": key, "sha256": sha256_file(cache_file)},
        "qdq": stats.record(), "accuracy": comparison.record() if comparison else None,
    }
    return SubnetQuantization(code, "quantized", name, "hit" if hit else "miss", time.perf_counter() - t0,
                              stats.record(), comparison, None, rel, warnings)


def _verifies(directory: Path, record: dict[str, Any]) -> bool:
    try:
        manifest_mod.verify_file(directory, record)
    except AdnError:
        return False
    return True


def _compare(fp32_path: Path, int8: Path | bytes, eval_set: acc_mod.EvalSet,
             opts: QuantizeOptions) -> acc_mod.Comparison:
    ref = acc_mod.logits(acc_mod.session(str(fp32_path), opts.threads), eval_set.images)
    out = acc_mod.logits(acc_mod.session(int8 if isinstance(int8, bytes) else str(int8), opts.threads),
                         eval_set.images)
    return acc_mod.compare(ref, out, eval_set, opts.drop_threshold)


def _accuracy_warnings(c: acc_mod.Comparison) -> list[str]:
    if not c.warning:
        return []
    return [(f"INT8 top-1 is {c.drop:.2f} points below FP32 ({c.top1_int8:.2f}% vs {c.top1_fp32:.2f}% on "
             f"{c.dataset} {c.split}, {c.samples} images; agreement {c.agreement:.1f}%), above the "
             f"{c.threshold:g}-point threshold: try another --method, or more calibration images")]


def _comparison_from_record(rec: dict[str, Any]) -> acc_mod.Comparison:
    return acc_mod.Comparison(str(rec["dataset"]), str(rec["split"]), int(rec["samples"]), float(rec["top1_fp32"]),
                              float(rec["top1_int8"]), rec.get("top5_fp32"), rec.get("top5_int8"),
                              float(rec["agreement"]), float(rec.get("logit_rel_err") or 0.0),
                              float(rec["threshold"]))
