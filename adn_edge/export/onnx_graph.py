"""Turning a static sub-network into a clean ONNX graph.

``torch.onnx.export`` does the tracing; this module does what our contract adds on
top: stable initializer names shared across the sub-networks of one checkpoint,
metadata, a float16 variant with float32 I/O, and the graph checks (no
BatchNormalization, names consistent across graphs).

Exporter choice: the TorchScript-based exporter (``dynamo=False``) at opset 17. It
is ~20x faster than the dynamo exporter on these models (16 ResNet-50 graphs must
export and verify in seconds, not minutes), produces plain Conv/Gemm/MatMul graphs
whose parameter names are the module's FQNs, and opset 17 (with native
LayerNormalization) is well inside what TensorRT 10.3's ONNX parser (JetPack 6)
supports. The exporter's deprecation warning is silenced here, in one place.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def trace_to_onnx(static: nn.Module, input_size: int, dynamic_batch: bool = True, batch: int = 1,
                  opset: int = OPSET) -> onnx.ModelProto:
    """Export ``static`` (a module ``x -> logits``) to an in-memory ONNX model."""
    x = torch.zeros(batch, 3, input_size, input_size)
    dynamic_axes = {INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(static, (x,), buf, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _digest(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(arr)
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()


class TransposeIndex:
    """Content digests of every 2-D parameter of a parent model, transposed.

    The exporter constant-folds ``weight.T`` of linear layers applied to 3-D inputs
    (MatMul) into new initializers with throw-away names; this index recovers the
    parameter they came from, so they can be named ``<param>.T`` in every graph.
    Built once per parent model (not per graph) so the naming cannot depend on
    which sub-network is being exported.
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._index: dict[str, str | None] | None = None

    def lookup(self, digest: str) -> str | None:
        if self._index is None:
            index: dict[str, str | None] = {}
            for name, p in self._model.named_parameters():
                if p.ndim == 2:
                    d = _digest(p.detach().cpu().numpy().T)
                    index[d] = None if d in index else f"{name}.T"  # ambiguous -> no name
            self._index = index
        return self._index.get(digest)


def rename_initializers(model: onnx.ModelProto, known: dict[str, str], transposes: TransposeIndex | None) -> None:
    """Give every initializer its stable name (docs/model-directory.md), in place.

    Known parameters take their stable names; folded transposes take ``<param>.T``;
    any other constant is named by its content digest (``const.<sha>``), which
    trivially keeps "identical tensor <=> identical name". Initializers that end up
    with the same name and the same bytes are merged.
    """
    graph = model.graph
    _undo_deduplication(graph, known)
    mapping: dict[str, str] = {}
    keep: dict[str, onnx.TensorProto] = {}
    for init in list(graph.initializer):
        arr = numpy_helper.to_array(init)
        old = init.name
        if old in known:
            new = known[old]
        else:
            digest = _digest(arr)
            new = (transposes.lookup(digest) if transposes and arr.ndim == 2 else None) or f"const.{digest[:16]}"
        mapping[old] = new
        if new in keep:
            if not np.array_equal(numpy_helper.to_array(keep[new]), arr):
                raise RuntimeError(f"two different tensors would both be named {new!r}")
            continue
        init.name = new
        keep[new] = init
    del graph.initializer[:]
    graph.initializer.extend(keep.values())
    for node in _all_nodes(graph):
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]


def _undo_deduplication(graph: onnx.GraphProto, known: dict[str, str]) -> None:
    """Give back each parameter its own initializer.

    The exporter merges initializers with equal bytes (common in untrained models:
    every freshly folded bias is zero) and re-creates the others with Identity nodes,
    which would make a tensor's name depend on which other tensors happen to be in
    the same graph. Restoring them keeps names a function of the parameter alone.
    """
    inits = {i.name: i for i in graph.initializer}
    drop = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] in known:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            drop.append(node)
    for node in drop:
        graph.node.remove(node)


def _all_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)


def set_metadata(model: onnx.ModelProto, meta: dict[str, Any]) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    model.producer_name = "adn-edge"


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 weights and arithmetic, float32 input and output.

    This is what TensorRT's strongly typed networks (TensorRT 11, and an option on
    10.x) need for FP16: precision comes from the graph, not from builder flags.
    Uses ONNX Runtime's own converter (shipped inside onnxruntime, so no extra
    dependency), which keeps I/O in float32 with boundary Casts.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    topological_sort(m16.graph)
    return m16


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so every input is produced before use (the converter appends Casts)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            raise RuntimeError("ONNX graph has a cycle or an undefined input: " + ", ".join(
                i for n in rest for i in n.input if i not in available))
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in _all_nodes(model.graph):
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def initializer_digests(model: onnx.ModelProto) -> dict[str, str]:
    return {i.name: _digest(numpy_helper.to_array(i)) for i in model.graph.initializer}
