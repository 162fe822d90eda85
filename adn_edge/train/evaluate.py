"""Top-1/top-5 accuracy of every sub-network, and ``eval.json`` in the model directory.

Two sources, one result format:

* a PyTorch ADN model: each sub-network is *materialised* (blocks dropped, twins
  chosen, BN folded; ``adn_edge.materialize``) and that static module is evaluated,
  so the figure belongs to what export ships, not to the training-time forward;
  optionally after per-sub-network BN recalibration (``recalibrate.py``);
* an exported model directory, through ``EngineSwitcher`` and any runtime backend
  (ONNX Runtime, TensorRT, torch): the accuracy of the deployed engines.

Each batch is read once and run through every requested sub-network, so a slow
ImageFolder is decoded once, not 2^S times. Results go to ``<model_dir>/eval.json``
(atomically), the file the runtime's accuracy-aware policies and the bench plots read::

    {"schema": 1, "dataset": "digits", "split": "test", "samples": 360,
     "source": "pytorch" | "onnxruntime" | "tensorrt" | ...,
     "subnets": {"1111": {"top1": 99.4, "top5": 100.0, "samples": 360}, ...}}

``top1``/``top5`` are percentages; ``top5`` is null with fewer than 5 classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.fileio import read_json
from adn_edge.modeldir.names import eval_name
from adn_edge.modeldir import ModelDir, open_dir
from adn_edge.modeldir.preprocess import Preprocess
from adn_edge.modeldir.results import identity, write_eval_record

SCHEMA = 1
Iterate = Callable[[Sequence[Any], str], Iterable[Any]]


@dataclass
class SubnetAccuracy:
    code: str
    correct1: int = 0
    correct5: int | None = 0
    samples: int = 0

    @property
    def top1(self) -> float:
        return 100.0 * self.correct1 / self.samples if self.samples else float("nan")

    @property
    def top5(self) -> float | None:
        if self.correct5 is None or not self.samples:
            return None
        return 100.0 * self.correct5 / self.samples

    def record(self) -> dict[str, Any]:
        top5 = self.top5
        return {"top1": round(self.top1, 4), "top5": None if top5 is None else round(top5, 4),
                "samples": self.samples}


@dataclass
class EvalResult:
    dataset: str
    split: str
    source: str
    subnets: dict[str, SubnetAccuracy] = field(default_factory=dict)
    recalibrated: bool = False
    precision: str | None = None
    """Of an exported directory's graphs or engines (what ran); None for PyTorch."""
    segmented: bool = False
    identity: dict[str, Any] | None = None
    """What was measured (:func:`adn_edge.modeldir.results.identity`): readers ignore the
    results once the directory holds other weights or other graphs."""

    @property
    def samples(self) -> int:
        return max((s.samples for s in self.subnets.values()), default=0)

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"schema": SCHEMA, "dataset": self.dataset, "split": self.split,
                               "samples": self.samples, "source": self.source, "recalibrated": self.recalibrated}
        if self.precision is not None:
            rec.update(precision=self.precision, segmented=self.segmented)
        if self.identity is not None:
            rec["identity"] = self.identity
        rec["subnets"] = {c: s.record() for c, s in self.subnets.items()}
        return rec

    def top1(self) -> dict[str, float]:
        return {c: s.top1 for c, s in self.subnets.items()}


def topk_correct(logits: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                 ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many samples have their target among the k largest logits, for each k."""
    lg = torch.as_tensor(np.asarray(logits) if isinstance(logits, np.ndarray) else logits).float()
    tg = torch.as_tensor(np.asarray(targets) if isinstance(targets, np.ndarray) else targets).long().view(-1, 1)
    kmax = min(max(ks), lg.shape[1])
    top = lg.topk(kmax, dim=1).indices.cpu()
    hits = top == tg.cpu()
    return {k: int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks}


def _loader(data: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def _accumulate(acc: SubnetAccuracy, logits: Any, targets: torch.Tensor, num_classes: int) -> None:
    counts = topk_correct(logits, targets, (1, 5))
    acc.correct1 += counts[1]
    if num_classes >= 5 and acc.correct5 is not None:
        acc.correct5 += counts[5]
    else:
        acc.correct5 = None
    acc.samples += int(targets.shape[0])


def _data_label(data: Dataset) -> tuple[str, str]:
    return str(getattr(data, "name", type(data).__name__)), str(getattr(data, "split", "?"))


def _check_classes(data: Dataset, num_classes: int, what: str) -> None:
    """Refuse data whose classes are not the model's: a 1000-class model scored on the
    10 built-in digit classes would "measure" 0 % and write it down as a result."""
    data_classes = getattr(data, "num_classes", None)
    if data_classes is not None and data_classes != num_classes:
        raise AdnError(f"The data has {data_classes} classes but {what} predicts {num_classes}: its labels "
                       "cannot be compared with the model's outputs.",
                       "Evaluate on data with the classes the model was trained on (the same class folders, "
                       "or --data builtin for the 10-class models trained on it).")


def evaluate_model(model: Any, data: Dataset, codes: str | Sequence[str] | None = "all", batch_size: int = 256,
                   recalibrate_with: list[Any] | None = None, recal_samples: int | None = None,
                   iterate: Iterate | None = None, device: str | torch.device | None = None,
                   num_workers: int = 0) -> EvalResult:
    """Accuracy of sub-networks ``codes`` (default all 2^S) of an ADN model on ``data``.

    Each sub-network runs as its materialised static module. ``recalibrate_with``: a
    list of training-image batches; when given, each sub-network is first
    recalibrated on them (:func:`~adn_edge.train.recalibrate.recalibrated`).
    """
    from adn_edge.flops import arch_costs
    from adn_edge.materialize import materialize
    from adn_edge.models.folding import Folder

    S = model.num_skippable_stages
    try:
        costs = arch_costs(model.arch, model.num_classes)
        cost: Callable[[str], float] | None = lambda c: costs[c].macs  # noqa: E731
    except AdnError:
        cost = None
    wanted = subnet.expand(codes, S, model.arch, cost=cost)
    _check_classes(data, model.num_classes, f"the {model.arch} model")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    statics: dict[str, torch.nn.Module] = {}
    if recalibrate_with is not None:
        from adn_edge.train.recalibrate import recalibrated

        for c in wanted:
            statics[c] = materialize(recalibrated(model, c, recalibrate_with, recal_samples), c).to(dev)
    else:
        folder = Folder(model)
        statics = {c: materialize(model, c, folder).to(dev) for c in wanted}
    name, split = _data_label(data)
    result = EvalResult(name, split, "pytorch", {c: SubnetAccuracy(c) for c in wanted},
                        recalibrated=recalibrate_with is not None)
    loader = _loader(data, batch_size, num_workers)
    it = iterate(loader, f"eval {model.arch} ({len(wanted)} sub-networks)") if iterate else loader
    with torch.inference_mode():
        for x, y in it:
            x = x.to(dev)
            for c in wanted:
                _accumulate(result.subnets[c], statics[c](x), y, model.num_classes)
    return result


def evaluate_directory(model_dir: str | os.PathLike[str] | ModelDir, data: Dataset, codes: str | Sequence[str] | None = "all",
                       backend: str = "auto", batch_size: int = 64, iterate: Iterate | None = None,
                       precision: str | None = None, segmented: bool = False) -> EvalResult:
    """Accuracy of exported sub-networks through ``EngineSwitcher`` on ``data``.

    ``data`` must be preprocessed with the directory's input size and mean/std
    (:func:`preprocess_for_directory`). ``precision`` and ``segmented`` open the
    switcher as a robot would (``precision="int8", segmented=True``: the calibrated
    INT8 segment engines), which is the accuracy worth knowing before deploying them.
    """
    opened = open_dir(model_dir)
    directory, num_classes = opened.path, opened.num_classes
    _check_classes(data, num_classes, f"the model in {str(directory)!r}")
    try:
        from adn_edge.runtime import EngineSwitcher
    except ImportError as exc:
        raise AdnError(f"The runtime (adn_edge.runtime.EngineSwitcher) is not available: {exc}.",
                       "Evaluate the checkpoint with PyTorch instead (adn-edge eval CHECKPOINT).") from None
    name, split = _data_label(data)
    # The switcher resolves the codes: in segmented mode every chain counts, exported whole or not.
    sw = EngineSwitcher.open(opened, backend=backend, subnets="all" if codes is None else codes,
                             precision=precision, segmented=segmented)
    wanted = list(sw.codes)
    try:
        source = _backend_name(sw, backend)
        ran = getattr(sw.engine, "precision", None)
        result = EvalResult(name, split, source, {c: SubnetAccuracy(c) for c in wanted},
                            precision=str(ran) if ran else "fp32", segmented=segmented,
                            identity=identity(opened.manifest, wanted))
        loader = _loader(data, batch_size)
        it = iterate(loader, f"eval {directory.name} on {source}") if iterate else loader
        for x, y in it:
            batch = np.ascontiguousarray(x.numpy(), dtype=np.float32)
            for c in wanted:
                sw.switch(c)
                _accumulate(result.subnets[c], np.asarray(sw.infer(batch)), y, num_classes)
    finally:
        sw.close()
    return result


def _backend_name(sw: Any, requested: str) -> str:
    for attr in ("backend_name",):
        v = getattr(sw, attr, None)
        if isinstance(v, str):
            return v
    b = getattr(sw, "backend", None)
    v = getattr(b, "name", None) if b is not None else None
    if isinstance(v, str):
        return v
    if isinstance(b, str):
        return b
    return requested


def preprocess_for_directory(model_dir: str | os.PathLike[str] | ModelDir) -> Preprocess:
    """The :class:`~adn_edge.modeldir.preprocess.Preprocess` an exported directory expects (from its manifest)."""
    return open_dir(model_dir).preprocess()


def eval_path(model_dir: str | os.PathLike[str], variant: str = "") -> Path:
    """``eval.json``, or ``eval-<variant>.json`` (``eval-int8-segmented.json``) for a run
    of other graphs than the default ones: policies read ``eval.json`` first, so an
    evaluation of INT8 engines is kept beside the default accuracies, not over them."""
    return Path(model_dir) / eval_name(variant)


def write_eval(model_dir: str | os.PathLike[str], result: EvalResult, merge: bool = True, variant: str = "") -> Path:
    """Write ``eval[-variant].json`` (:func:`adn_edge.modeldir.results.write_eval_record`:
    atomically, under the directory's lock, merged with a compatible earlier run, an
    incompatible one set aside rather than overwritten)."""
    path, _notes = write_eval_record(model_dir, result.record(), variant, merge)
    return path


def read_eval(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    rec: dict[str, Any] = read_json(eval_path(model_dir), "evaluation file")
    return rec
