"""Export sub-networks of an ADN model to verified ONNX graphs in a model directory.

For each requested code: materialise (skipped blocks gone, twins chosen, BN folded),
trace to ONNX, give initializers their stable names, attach metadata, check the graph,
compare ONNX Runtime against the unfolded PyTorch ADN forward, and only then move the
file into place and record it in ``manifest.json``. A graph that fails parity is
never written (exit 1: that is our bug, not the user's input).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from adn_edge import __version__, subnet
from adn_edge.modeldir import manifest
from adn_edge.errors import AdnError, ParityError
from adn_edge.export import onnx_graph as og
from adn_edge.export.parity import FP16_TOLERANCE, FP32_TOLERANCE, Parity, compare, onnxruntime_logits, \
    parity_inputs, reference_logits
from adn_edge.fileio import ensure_writable_dir, write_bytes
from adn_edge.flops import arch_costs
from adn_edge.materialize import materialize, stable_names
from adn_edge.models.folding import Folder
from adn_edge.models.base import ADNModel
from adn_edge.models.registry import get_spec
from adn_edge.modeldir.lock import writing
from adn_edge.modeldir.names import onnx_name
from adn_edge.modeldir.retire import retire

Iterate = Callable[[Sequence[str], str], Iterable[str]]


@dataclass
class ExportOptions:
    fp16: bool = False
    dynamic_batch: bool = True
    batch: int = 1
    """Static batch size when ``dynamic_batch`` is False (else the tracing batch)."""
    input_size: int | None = None
    parity_samples: int = 2
    tolerance: float = FP32_TOLERANCE
    fp16_tolerance: float = FP16_TOLERANCE
    opset: int = og.OPSET
    recalibration: Sequence[Any] | None = None
    """Image batches to re-estimate each sub-network's BN statistics on before folding
    (``export --recalibrate``); None keeps the checkpoint's statistics."""
    recalibration_source: str | None = None


@dataclass
class ExportedSubnet:
    code: str
    files: dict[str, str]
    parity: dict[str, Parity]
    gmacs: float
    params: int
    nodes: int
    seconds: float
    op_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"code": self.code, "skip_cfg": subnet.to_skip_cfg(self.code), "files": self.files,
                "gmacs": round(self.gmacs, 6), "params": self.params, "nodes": self.nodes,
                "parity": {k: v.record() for k, v in self.parity.items()}, "seconds": round(self.seconds, 3)}


def fp16_twin(graph: onnx.ModelProto) -> onnx.ModelProto:
    """The float16 form of a verified float32 graph (float32 I/O, float16 inside), for
    TensorRT 11's strongly typed builds; its metadata says so, the rest is kept."""
    g16 = og.to_float16(graph)
    og.set_metadata(g16, {**og.metadata(graph), "adn.precision": "fp16"})
    onnx.checker.check_model(g16)
    return g16


def default_out_dir(arch: str) -> Path:
    return Path("engines") / arch


class Exporter:
    """Holds one loaded model and exports any of its sub-networks into one directory."""

    def __init__(self, model: ADNModel, out_dir: str | Path, source: dict[str, Any],
                 options: ExportOptions | None = None) -> None:
        self.model = model.eval()
        self.spec = get_spec(model.arch)
        self.out_dir = ensure_writable_dir(out_dir)
        self.source = source
        self.options = options or ExportOptions()
        self.input_size = self.options.input_size or self.spec.input_size
        self.folder = Folder(model)
        self.transposes = og.TransposeIndex(model)
        if self.options.recalibration is not None:
            from adn_edge.train.recalibrate import check_recalibratable

            check_recalibratable(model)
        self.costs = arch_costs(model.arch, model.num_classes, self.input_size)
        self._digests: dict[str, str] = {}
        self._replaced: dict[str, Any] | None = None
        self.manifest = self._open_manifest()

    def _open_manifest(self) -> dict[str, Any]:
        shape: list[int | None] = [None if self.options.dynamic_batch else self.options.batch, 3,
                                   self.input_size, self.input_size]
        fresh = manifest.new(self.model.arch, self.model.num_skippable_stages, self.model.num_classes, shape,
                             list(self.spec.mean), list(self.spec.std), self.source, self.options.opset)
        fresh["recalibration"] = self._recalibration_record()
        # Evaluation preprocessing, for everything that feeds real images (calibration, eval).
        fresh["input"].update(resize=self.spec.eval_resize(self.input_size), interpolation=self.spec.interpolation)
        self._replaced = None
        if not manifest.path_in(self.out_dir).exists():
            return fresh
        try:
            old = manifest.load(self.out_dir)
        except AdnError:
            return fresh
        same = (old["arch"] == fresh["arch"] and old["source"].get("sha256") == self.source.get("sha256")
                and old["input"]["shape"] == fresh["input"]["shape"] and old.get("opset") == fresh["opset"])
        same = same and old.get("recalibration") == self._recalibration_record()
        if not same:
            self._replaced = old  # its graphs, engines and results go once the new ones are written
            return fresh
        return old

    def _recalibration_record(self) -> dict[str, Any] | None:
        batches = self.options.recalibration
        if batches is None:
            return None
        return {"data": self.options.recalibration_source, "samples": int(sum(len(b) for b in batches)),
                "note": "BN statistics re-estimated per sub-network before folding: folded tensors are "
                        "sub-network specific (named <tensor>@<code>), so runtimes share fewer weights"}

    def _subject(self, code: str) -> tuple[ADNModel, Folder, og.TransposeIndex]:
        """The model a sub-network is exported from, with its folder and transpose index:
        the checkpoint's model, or a copy recalibrated for this sub-network alone."""
        if self.options.recalibration is None:
            return self.model, self.folder, self.transposes
        from adn_edge.train.recalibrate import recalibrated

        model = recalibrated(self.model, code, self.options.recalibration)
        return model, Folder(model, variant=f"@{code}"), og.TransposeIndex(model)

    def resolve(self, specs: Sequence[str] | str | None) -> list[str]:
        return subnet.expand(specs, self.model.num_skippable_stages, self.model.arch,
                             cost=lambda c: self.costs[c].macs)

    def export(self, specs: Sequence[str] | str | None, iterate: Iterate | None = None) -> list[ExportedSubnet]:
        codes = self.resolve(specs)
        iterate = iterate or (lambda items, _desc: items)
        results = []
        with writing(self.out_dir, "export"):
            # Read under the lock: a writer that finished meanwhile added entries to keep.
            self.manifest = self._open_manifest()
            for code in iterate(codes, f"export {self.model.arch}"):
                results.append(self.export_one(code))
                manifest.save(self.out_dir, self.manifest)  # after each: a crash keeps what was verified
            self.retire_replaced()
        return results

    def retire_replaced(self) -> None:
        """After a fresh manifest replaced one of other weights or options (under the
        writer lock): remove what only the old one listed, set its results aside."""
        if self._replaced is not None:
            retire(self.out_dir, self._replaced, self.manifest)
            self._replaced = None

    def _graph(self, code: str, model: ADNModel, folder: Folder, transposes: og.TransposeIndex) -> onnx.ModelProto:
        static = materialize(model, code, folder)
        opts = self.options
        graph = og.trace_to_onnx(static, self.input_size, opts.dynamic_batch, opts.batch, opts.opset)
        og.rename_initializers(graph, stable_names(static, folder), transposes)
        cost = self.costs[code]
        og.set_metadata(graph, {
            "adn.arch": self.model.arch, "adn.subnet": code, "adn.skip_cfg": subnet.to_skip_cfg(code),
            "adn.gflops": f"{cost.gmacs:.6f}", "adn.params": cost.params,
            "adn.source_sha256": self.source.get("sha256", ""), "adn.version": __version__,
            "adn.num_classes": self.model.num_classes, "adn.input_size": self.input_size,
            "adn.mean": ",".join(map(str, self.spec.mean)), "adn.std": ",".join(map(str, self.spec.std)),
            "adn.precision": "fp32", "adn.recalibrated": int(opts.recalibration is not None),
        })
        counts = og.op_counts(graph)
        if counts.get("BatchNormalization"):
            raise RuntimeError(f"{code}: BatchNormalization survived folding")
        onnx.checker.check_model(graph)
        self._check_names(code, graph)
        return graph

    def _check_names(self, code: str, graph: onnx.ModelProto) -> None:
        """Names shared with graphs exported earlier must hold the same bytes."""
        for name, digest in og.initializer_digests(graph).items():
            prev = self._digests.setdefault(name, digest)
            if prev != digest:
                raise RuntimeError(f"{code}: initializer {name!r} differs from the one of the same name "
                                   "in another sub-network (stable naming broken)")

    def parity_x(self) -> np.ndarray:
        """Parity inputs; a static-batch graph accepts only its own batch size."""
        opts = self.options
        return parity_inputs(self.input_size, opts.parity_samples if opts.dynamic_batch else opts.batch)

    def _verify(self, code: str, model: ADNModel, data: bytes, tolerance: float, what: str) -> Parity:
        x = self.parity_x()
        result = compare(onnxruntime_logits(data, x), reference_logits(model, code, x), tolerance)
        if not result.ok:
            raise ParityError(
                f"{self.model.arch} {code} ({what}): ONNX Runtime differs from PyTorch by relative error "
                f"{result.rel_err:.3g} (> {tolerance:g}); the graph was not written.")
        return result

    def export_one(self, code: str) -> ExportedSubnet:
        t0 = time.perf_counter()
        model, folder, transposes = self._subject(code)
        graph = self._graph(code, model, folder, transposes)
        data = graph.SerializeToString()
        files: dict[str, str] = {}
        parity = {"onnx": self._verify(code, model, data, self.options.tolerance, "fp32")}
        name = onnx_name(self.model.arch, code)
        write_bytes(self.out_dir / name, data)
        files["onnx"] = name
        if self.options.fp16:
            d16 = fp16_twin(graph).SerializeToString()
            parity["onnx_fp16"] = self._verify(code, model, d16, self.options.fp16_tolerance, "fp16")
            name16 = onnx_name(self.model.arch, code, ".fp16")
            write_bytes(self.out_dir / name16, d16)
            files["onnx_fp16"] = name16
        cost = self.costs[code]
        counts = og.op_counts(graph)
        entry = self.manifest["subnets"].get(code, {})
        entry.update({
            "code": code, "skip_cfg": subnet.to_skip_cfg(code), "gmacs": round(cost.gmacs, 6),
            "params": cost.params,
            "files": {**entry.get("files", {}), **{k: manifest.file_record(self.out_dir, v) for k, v in files.items()}},
            "parity": {**entry.get("parity", {}), **{k: v.record() for k, v in parity.items()}},
            "graph": {"nodes": sum(counts.values()), "initializers": len(graph.graph.initializer)},
            "recalibrated": self.options.recalibration is not None,
        })
        self.manifest["subnets"][code] = entry
        return ExportedSubnet(code, files, parity, cost.gmacs, cost.params, sum(counts.values()),
                              time.perf_counter() - t0, counts)


def export(model: ADNModel, out_dir: str | Path, subnets: Sequence[str] | str | None = "all",
           source: dict[str, Any] | None = None, options: ExportOptions | None = None,
           iterate: Iterate | None = None) -> list[ExportedSubnet]:
    """Export ``subnets`` of ``model`` into ``out_dir`` (see :class:`Exporter`)."""
    exp = Exporter(model, out_dir, source or {"path": None, "sha256": "", "weights": "in-memory"}, options)
    return exp.export(subnets, iterate)
