"""Segmented export: each stage in its two forms, instead of every sub-network whole.

A model with S skippable stages has 2^S sub-networks, but part k of any of them
depends only on flag k (:meth:`ADNModel.static_stages`). So 2*S graphs, part k
"full" (flag 1) and "skip" (flag 0), chained in code order, compute every
sub-network: ``<arch>_seg{k}_{full|skip}.onnx``. Part 0 carries the stem and part
S-1 the head, so there are no separate stem/head graphs (2*S, not 2*S+2).

Why bother when ONNX Runtime already shares weights across the 2^S monolithic
sessions (``onnxruntime_backend``)? Because not every runtime can: TensorRT engines
embed their weights, so 16 ResNet-50 engines hold 16 copies, while the 8 segment
engines hold each tensor once. The cost is a graph boundary per stage (no fusion
across it, one more launch, the activation handed over between graphs); the
runtime's ``segmented=True`` mode and ``benchmarks/bench_switcher.py`` measure it.

Graphs chain by tensor name: part 0 reads ``input``, part k writes ``x{k+1}``,
which part k+1 reads, and part S-1 writes ``logits``. Initializers carry the same
stable names as in the monolithic graphs (CONTRACTS.md section 3), because they are
built with the same :class:`~adn_edge.materialize.Folder`.

Like the monolithic export, nothing is written unless every one of the 2^S chains
matches the ADN model's own forward (float64 relative error within tolerance);
then the files are written atomically and recorded under the manifest's top-level
``segments`` key::

    "segments": {"schema": 1, "count": S, "opset": 17,
      "parts": [{"index": 0, "input": "input", "output": "x1",
                 "input_shape": [null, 3, 224, 224], "output_shape": [null, 256, 56, 56],
                 "files": {"full": {"path": "resnet50_seg0_full.onnx", "sha256": ..., "bytes": ...},
                           "skip": {...}}}, ...],
      "parity": {"rel_err_max": 2e-7, "tolerance": 1e-4, "samples": 2, "runtime": "onnxruntime-cpu"},
      "subnets": {"1010": {"gmacs": ..., "params": ..., "rel_err": ...}, ...},
      "weights": {"bytes_unique": ..., "bytes_total": ...}}
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from adn_edge import __version__, manifest, subnet
from adn_edge.errors import ParityError
from adn_edge.export import onnx_graph as og
from adn_edge.export.exporter import Exporter, ExportOptions
from adn_edge.export.parity import compare, parity_inputs, reference_logits
from adn_edge.fileio import write_bytes
from adn_edge.materialize import stable_names
from adn_edge.models.base import ADNModel

SCHEMA = 1
KINDS = {"1": "full", "0": "skip"}


def segment_file(arch: str, index: int, kind: str) -> str:
    return f"{arch}_seg{index}_{kind}.onnx"


def io_names(index: int, count: int) -> tuple[str, str]:
    """(input, output) tensor names of part ``index`` of ``count``."""
    return (og.INPUT_NAME if index == 0 else f"x{index}",
            og.OUTPUT_NAME if index == count - 1 else f"x{index + 1}")


def _trace(part: nn.Module, example: torch.Tensor, names: tuple[str, str], dynamic_batch: bool,
           opset: int) -> onnx.ModelProto:
    dynamic_axes = {names[0]: {0: "N"}, names[1]: {0: "N"}} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(part, (example,), buf, dynamo=False, opset_version=opset, input_names=[names[0]],
                          output_names=[names[1]], dynamic_axes=dynamic_axes, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _run_chain(sessions: list[dict[str, Any]], code: str, x: np.ndarray) -> np.ndarray:
    v = x
    for k, flag in enumerate(code):
        sess = sessions[k][flag]
        v = sess.run(None, {sess.get_inputs()[0].name: v})[0]
    return v


class SegmentExporter:
    """Exports the 2*S segment graphs of one loaded model into a model directory."""

    def __init__(self, model: ADNModel, out_dir: str | Path, source: dict[str, Any] | None = None,
                 options: ExportOptions | None = None) -> None:
        self.exp = Exporter(model, out_dir, source or {"path": None, "sha256": "", "weights": "in-memory"}, options)
        self.model = self.exp.model
        self.count = model.num_skippable_stages

    def _examples(self) -> list[torch.Tensor]:
        """The tensor entering each part (traced with it); the same for either flag
        of earlier stages, which is checked: chaining relies on it."""
        opts = self.exp.options
        size = self.exp.input_size
        batch = opts.batch
        outs = []
        for flag in "10":
            parts = self.model.static_stages(flag * self.count, self.exp.folder)
            x = torch.zeros(batch, 3, size, size)
            seen = []
            with torch.no_grad():
                for part in parts:
                    seen.append(x)
                    x = part.eval()(x)
            outs.append(seen)
        for a, b in zip(*outs, strict=True):
            if a.shape != b.shape:
                raise RuntimeError(f"{self.model.arch}: a stage's output shape depends on its flag "
                                   f"({tuple(a.shape)} vs {tuple(b.shape)}); it cannot be segmented")
        return outs[0]

    def _graph(self, index: int, flag: str, example: torch.Tensor, digests: dict[str, str]) -> onnx.ModelProto:
        code = "1" * self.count
        code = code[:index] + flag + code[index + 1:]
        part = self.model.static_stages(code, self.exp.folder)[index].eval()
        opts = self.exp.options
        names = io_names(index, self.count)
        graph = _trace(part, example, names, opts.dynamic_batch, opts.opset)
        og.rename_initializers(graph, stable_names(part, self.exp.folder), self.exp.transposes)
        og.set_metadata(graph, {
            "adn.arch": self.model.arch, "adn.segment": index, "adn.segments": self.count,
            "adn.flag": flag, "adn.kind": KINDS[flag], "adn.input": names[0], "adn.output": names[1],
            "adn.source_sha256": self.exp.source.get("sha256", ""), "adn.version": __version__,
            "adn.num_classes": self.model.num_classes, "adn.input_size": self.exp.input_size,
            "adn.precision": "fp32",
        })
        if og.op_counts(graph).get("BatchNormalization"):
            raise RuntimeError(f"segment {index} ({KINDS[flag]}): BatchNormalization survived folding")
        onnx.checker.check_model(graph)
        for name, digest in og.initializer_digests(graph).items():
            if digests.setdefault(name, digest) != digest:
                raise RuntimeError(f"segment {index}: initializer {name!r} differs from the one of the same name "
                                   "in another segment (stable naming broken)")
        return graph

    def export(self) -> dict[str, Any]:
        import onnxruntime as ort

        examples = self._examples()
        digests: dict[str, str] = {}
        graphs: list[dict[str, bytes]] = []
        sizes: dict[str, int] = {}
        total = 0
        for k in range(self.count):
            pair = {}
            for flag in KINDS:
                g = self._graph(k, flag, examples[k], digests)
                for init in g.graph.initializer:
                    nbytes = numpy_helper.to_array(init).nbytes
                    sizes[init.name] = nbytes
                    total += nbytes
                pair[flag] = g.SerializeToString()
            graphs.append(pair)

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sessions = [{f: ort.InferenceSession(d, so, providers=["CPUExecutionProvider"]) for f, d in pair.items()}
                    for pair in graphs]
        opts = self.exp.options
        x = parity_inputs(self.exp.input_size, opts.parity_samples)
        per_code: dict[str, Any] = {}
        worst = 0.0
        for code in subnet.all_codes(self.count):
            result = compare(_run_chain(sessions, code, x), reference_logits(self.model, code, x), opts.tolerance)
            if not result.ok:
                raise ParityError(
                    f"{self.model.arch} {code} (segmented): the chained segment graphs differ from PyTorch by "
                    f"relative error {result.rel_err:.3g} (> {opts.tolerance:g}); nothing was written.")
            worst = max(worst, result.rel_err)
            cost = self.exp.costs[code]
            per_code[code] = {"gmacs": round(cost.gmacs, 6), "params": cost.params, "rel_err": result.rel_err}

        out_dir = self.exp.out_dir
        arch = self.model.arch
        parts = []
        for k, pair in enumerate(graphs):
            files = {}
            for flag, data in pair.items():
                name = segment_file(arch, k, KINDS[flag])
                write_bytes(out_dir / name, data)
                files[KINDS[flag]] = manifest.file_record(out_dir, name)
            in_name, out_name = io_names(k, self.count)
            in_shape = list(examples[k].shape)
            out_shape = list(examples[k + 1].shape) if k + 1 < self.count else [in_shape[0], self.model.num_classes]
            if opts.dynamic_batch:
                in_shape[0] = out_shape[0] = None
            parts.append({"index": k, "input": in_name, "output": out_name, "input_shape": in_shape,
                          "output_shape": out_shape, "files": files})
        record = {
            "schema": SCHEMA, "count": self.count, "opset": opts.opset, "parts": parts,
            "parity": {"rel_err_max": worst, "tolerance": opts.tolerance, "samples": int(x.shape[0]),
                       "runtime": "onnxruntime-cpu"},
            "subnets": per_code,
            "weights": {"bytes_unique": sum(sizes.values()), "bytes_total": total},
        }
        self.exp.manifest["segments"] = record
        manifest.save(out_dir, self.exp.manifest)
        return record


def export_segments(model: ADNModel, out_dir: str | Path, source: dict[str, Any] | None = None,
                    options: ExportOptions | None = None) -> dict[str, Any]:
    """Export the 2*S segment graphs of ``model`` into ``out_dir`` (see the module docstring).

    Returns the manifest's ``segments`` record. Use the same ``source`` as for the
    monolithic export so both land in one manifest.
    """
    return SegmentExporter(model, out_dir, source, options).export()
