"""What INT8 costs: top-1 of the Q/DQ graph against its own FP32 graph, on the same images.

Both graphs run through ONNX Runtime on the CPU with the optimisations a deployment
gets (the Q/DQ pairs fused into integer kernels), so the INT8 figure is the accuracy
of what ships, not of a simulation. Besides the two top-1 figures, *agreement* (the
share of images on which both predict the same class) is reported: on an easy test
set two graphs can have equal top-1 yet disagree on many images, and agreement is
what tells a user whether INT8 is a drop-in replacement.

Results go to two places in the model directory:

* ``eval-int8.json``: the ``eval.json`` schema (so every reader of evaluation results
  can take it as the INT8 accuracy), with ``precision: "int8"`` and, per sub-network,
  the FP32 reference measured on the same images::

      {"schema": 1, "dataset": "digits", "split": "test", "samples": 360,
       "source": "onnxruntime", "precision": "int8", "recalibrated": false,
       "subnets": {"1111": {"top1": 98.9, "top5": 100.0, "samples": 360,
                            "top1_fp32": 99.2, "top5_fp32": 100.0,
                            "agreement": 99.4, "drop": 0.3}}}

* ``eval.json`` (the FP32 results bench plots and policies read): each sub-network
  gains an ``int8`` record beside its FP32 figures. The file is created when absent;
  an existing one is extended only when it was measured on the same data (dataset,
  split, sample count), and otherwise left alone (a note says so).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.fileio import read_json, write_json
from adn_edge.modeldir.names import eval_name
from adn_edge.modeldir.results import identity, write_eval_record
from adn_edge.quantize.defaults import DROP_WARN_POINTS
from adn_edge.fileio import check_threads

EVAL_INT8_FILENAME = eval_name("int8")
EVAL_FILENAME = eval_name()
SCHEMA = 1


@dataclass
class EvalSet:
    """Evaluation images held in memory once for every sub-network (decoded once)."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_eval_set(spec: str | os.PathLike[str], model_dir: Path, num_classes: int,
                  limit: int | None = None) -> EvalSet:
    """The test split of ``spec`` (``builtin``/``builtin:NAME`` or an ImageFolder),
    preprocessed as the model directory expects (same code as ``adn-edge eval``)."""
    import torch
    from torch.utils.data import DataLoader

    from adn_edge.train import data as data_mod
    from adn_edge.train.evaluate import preprocess_for_directory

    prep = preprocess_for_directory(model_dir)
    ds = data_mod.load_data(spec, "test", prep)
    ds_classes = getattr(ds, "num_classes", None)
    if ds_classes is not None and ds_classes > num_classes:
        raise AdnError(f"The evaluation data {str(spec)!r} has {ds_classes} classes but the model predicts "
                       f"{num_classes}.", "Evaluate on data with the classes the model was trained on.")
    if limit is not None and limit < len(ds):
        idx = data_mod.stratified_fraction(ds.targets, limit / len(ds), 0)[:limit]
        ds = torch.utils.data.Subset(ds, [int(i) for i in idx])
    xs, ys = [], []
    for x, y in DataLoader(ds, batch_size=128, shuffle=False):
        xs.append(x.numpy().astype(np.float32, copy=False))
        ys.append(y.numpy().astype(np.int64, copy=False))
    base = getattr(ds, "dataset", ds)
    return EvalSet(data_mod.dataset_label(base), str(getattr(base, "split", "test")),
                   np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys), num_classes)


def session(path_or_bytes: str | bytes, threads: int | None = None) -> Any:
    """A CPU session as deployments get it: extended optimisations (Q/DQ fusion)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if check_threads(threads, "threads"):
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])


def logits(sess: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    name = sess.get_inputs()[0].name
    out = [sess.run(None, {name: images[i:i + batch_size]})[0] for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32, copy=False)


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    """||out - ref|| / ||ref|| in float64, the figure export parity uses too."""
    o, r = out.astype(np.float64), ref.astype(np.float64)
    return float(np.linalg.norm(o - r) / max(float(np.linalg.norm(r)), 1e-30))


def _topk(lg: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, lg.shape[1])
    top = np.argpartition(-lg, k - 1, axis=1)[:, :k] if k < lg.shape[1] else np.argsort(-lg, axis=1)
    return 100.0 * float(np.mean(np.any(top == labels[:, None], axis=1)))


@dataclass
class Comparison:
    """FP32 vs INT8 of one sub-network on one evaluation set."""

    dataset: str
    split: str
    samples: int
    top1_fp32: float
    top1_int8: float
    top5_fp32: float | None
    top5_int8: float | None
    agreement: float
    rel_err: float
    threshold: float

    @property
    def drop(self) -> float:
        return self.top1_fp32 - self.top1_int8

    @property
    def warning(self) -> bool:
        return self.drop > self.threshold

    def record(self) -> dict[str, Any]:
        def r4(v: float | None) -> float | None:
            return None if v is None else round(float(v), 4)

        return {"dataset": self.dataset, "split": self.split, "samples": self.samples,
                "top1_fp32": r4(self.top1_fp32), "top1_int8": r4(self.top1_int8), "top5_fp32": r4(self.top5_fp32),
                "top5_int8": r4(self.top5_int8), "agreement": r4(self.agreement), "drop": r4(self.drop),
                "threshold": self.threshold, "warning": self.warning, "logit_rel_err": r4(self.rel_err)}


def compare(fp32_logits: np.ndarray, int8_logits: np.ndarray, data: EvalSet,
            threshold: float = DROP_WARN_POINTS) -> Comparison:
    labels = data.labels
    top5 = data.num_classes >= 5
    agree = 100.0 * float(np.mean(np.argmax(fp32_logits, 1) == np.argmax(int8_logits, 1)))
    return Comparison(data.name, data.split, len(data), _topk(fp32_logits, labels, 1), _topk(int8_logits, labels, 1),
                      _topk(fp32_logits, labels, 5) if top5 else None, _topk(int8_logits, labels, 5) if top5 else None,
                      agree, rel_err(int8_logits, fp32_logits), threshold)


def _same_data(old: Mapping[str, Any], rec: Mapping[str, Any]) -> bool:
    same = all(old.get(k) == rec.get(k) for k in ("schema", "dataset", "split", "samples"))
    ident_old = old.get("identity") if isinstance(old.get("identity"), Mapping) else {}
    return same and ident_old.get("source_sha256") == rec["identity"]["source_sha256"]


def write_eval_files(model_dir: Path, comparisons: Mapping[str, Comparison],
                     manifest: Mapping[str, Any]) -> tuple[list[Path], list[str]]:
    """Write ``eval-int8.json`` and extend (or create) ``eval.json``; returns paths and notes.

    Both record the identity of the graphs measured (readers ignore them once the
    directory holds other weights); ``eval-int8.json`` goes through the one eval-file
    writer, so ``adn-edge eval --precision int8`` later extends it instead of replacing it."""
    if not comparisons:
        return [], []
    first = next(iter(comparisons.values()))
    base = {"schema": SCHEMA, "dataset": first.dataset, "split": first.split, "samples": first.samples,
            "source": "onnxruntime", "recalibrated": manifest.get("recalibration") is not None,
            "identity": identity(manifest, list(comparisons))}
    written: list[Path] = []
    int8_rec: dict[str, Any] = {**base, "precision": "int8", "segmented": False,
                                "reference": "fp32 graphs on the same images", "subnets": {}}
    for code, c in comparisons.items():
        int8_rec["subnets"][code] = {"top1": round(c.top1_int8, 4), "top5": None if c.top5_int8 is None else
                                     round(c.top5_int8, 4), "samples": c.samples,
                                     "top1_fp32": round(c.top1_fp32, 4),
                                     "top5_fp32": None if c.top5_fp32 is None else round(c.top5_fp32, 4),
                                     "agreement": round(c.agreement, 4), "drop": round(c.drop, 4)}
    int8_path, notes = write_eval_record(model_dir, int8_rec, "int8")
    written.append(int8_path)

    fp_path = model_dir / EVAL_FILENAME
    fp_rec: dict[str, Any] | None
    if fp_path.exists():
        try:
            fp_rec = read_json(fp_path, "evaluation file")
        except AdnError:
            fp_rec = None
        if not (isinstance(fp_rec, dict) and isinstance(fp_rec.get("subnets"), dict) and _same_data(fp_rec, base)):
            notes.append(f"{fp_path.name} holds results on other data; the INT8 figures are in "
                         f"{EVAL_INT8_FILENAME} only")
            return written, notes
    else:
        fp_rec = {**base, "subnets": {}}
    for code, c in comparisons.items():
        entry = fp_rec["subnets"].get(code)
        if not isinstance(entry, dict):
            entry = {"top1": round(c.top1_fp32, 4), "top5": None if c.top5_fp32 is None else round(c.top5_fp32, 4),
                     "samples": c.samples}
        entry["int8"] = {"top1": round(c.top1_int8, 4), "top5": None if c.top5_int8 is None else
                         round(c.top5_int8, 4), "agreement": round(c.agreement, 4), "drop": round(c.drop, 4)}
        fp_rec["subnets"][code] = entry
    graphs = (fp_rec.get("identity") or {}).get("graphs")
    if isinstance(graphs, dict):  # the sub-networks added here are measured on these graphs too
        graphs.update(base["identity"]["graphs"])
    write_json(fp_path, fp_rec)
    written.append(fp_path)
    return written, notes
