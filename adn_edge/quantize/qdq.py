"""One sub-network's FP32 graph -> its calibrated Q/DQ graph, through ONNX Runtime.

The recipe, and why each choice (see the package docstring for the library choice):

* ``QuantFormat.QDQ``: QuantizeLinear/DequantizeLinear pairs around float operators.
  TensorRT 10/11 build explicit-quantisation engines from exactly this; ONNX Runtime
  fuses the same pairs into integer kernels (QLinearConv, QLinearAdd, QGemm).
  QOperator graphs (QLinearConv nodes in the file) run on ONNX Runtime only.
* INT8 weights, **per output channel**, symmetric: a folded convolution's channels
  differ in scale by orders of magnitude (BatchNorm's gamma/sigma is folded into
  them), so one scale per tensor would round small channels to zero.
* INT8 activations, **symmetric** (zero point 0): TensorRT accepts nothing else, and
  then the graph is one file for every target.
* biases stay float32 (``QuantizeBias=False``): TensorRT's ONNX parser rejects a
  DequantizeLinear of an INT32 bias ("only activation types allowed as input"), and
  quantises biases itself; ONNX Runtime quantises them when it fuses the kernel.
* a dedicated Q/DQ pair per consumer, each with its *own* scale initializer. A
  tensor read by two layers (a residual block's input feeds its first convolution and
  the skip connection) otherwise ends in one QuantizeLinear with two
  DequantizeLinears. TensorRT handles that, but ONNX Runtime's x86 kernels are U8S8
  (VNNI multiplies unsigned by signed bytes): it rewrites each signed Q->DQ pair to
  unsigned, only for a Q with a single consumer, and the convolutions behind an
  unconverted one stay float (measured on ResNet50-ADN's super-net, one thread: 20 of
  53 convolutions stayed float, 56-60 ms per image against 27 ms with every one fused
  and 76 ms for FP32). ``DedicatedQDQPair`` alone is not enough,
  because ONNX Runtime's common-subexpression elimination merges identical
  QuantizeLinear nodes back into one at load time; distinct scale initializer names
  (same values) keep them apart. See :func:`_separate_shared_quantizers`.
* every initializer the quantiser created is named by its content
  (``<name>.<sha256[:12]>``): INT8 graphs keep the naming rule of docs/model-directory.md (same name
  <=> same bytes across the sub-networks of a checkpoint), so the runtime still shares
  identical INT8 weights between sessions, and the per-sub-network activation scales,
  which differ, never collide under one name.

Calibration itself (running the graph on the images and turning the observed tensors
into ranges) is ONNX Runtime's calibrators; their ranges are cached as JSON beside
the graphs (:func:`calibrate`), keyed by what produced them (:func:`cache_key`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from adn_edge.errors import AdnError, AdnFailure
from adn_edge.fileio import read_json, write_text
from adn_edge.quantize.defaults import DEFAULT_METHOD, DEFAULT_PERCENTILE, METHODS
from adn_edge.modeldir.names import RANGES_SUFFIX, ranges_cache_name

ENTROPY_BINS = 512
"""Histogram bins for the entropy method (128 quantised bins). ONNX Runtime's default
(128 bins, equal to the quantised bins) leaves its KL search one candidate threshold,
i.e. plain min/max. Of the settings tried on the embedded model, 512/128 clipped least:
1024 or 2048 bins with 255 quantised bins cut INT8/FP32 agreement to 17-74 %."""
PERCENTILE_BINS = 2048
RECIPE = 1
"""Bumped whenever the quantisation recipe changes, so graphs made by an older one
are redone (it is part of every graph's recorded settings, not of the range cache:
ranges do not depend on it)."""

QUANTIZED_OP_TYPES = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
    "MatMulInteger", "QLinearAdd", "QLinearMul", "QGemm", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSoftmax", "QLinearReduceMean", "QAttention",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QuantizeWithOrder", "DequantizeWithOrder",
})
WEIGHTED_OP_TYPES = ("Conv", "Gemm", "MatMul", "ConvTranspose")
CACHE_SUFFIX = RANGES_SUFFIX


@dataclass(frozen=True)
class Method:
    """A calibration method and the parameters that change its ranges."""

    name: str
    percentile: float = DEFAULT_PERCENTILE

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise AdnError(f"Unknown calibration method {self.name!r}.",
                           f"Use --method {' | '.join(METHODS)} (default {DEFAULT_METHOD}).")
        if self.name == "percentile" and not 50.0 < float(self.percentile) <= 100.0:
            raise AdnError(f"The percentile must be in (50, 100], not {self.percentile}.")

    def ort(self) -> Any:
        from onnxruntime.quantization import CalibrationMethod

        return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}[self.name]

    def calibrator_options(self) -> dict[str, Any]:
        """``extra_options`` of ONNX Runtime's ``create_calibrator``."""
        if self.name == "minmax":
            return {"symmetric": True}
        if self.name == "entropy":
            return {"symmetric": True, "num_bins": ENTROPY_BINS, "num_quantized_bins": 128}
        return {"symmetric": True, "num_bins": PERCENTILE_BINS, "percentile": float(self.percentile)}

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"name": self.name, **{k: v for k, v in self.calibrator_options().items()
                                                     if k != "symmetric"}}
        return rec


# --------------------------------------------------------------------------- inspection


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def is_quantized(model: onnx.ModelProto) -> bool:
    """Does the graph already hold quantisation (Q/DQ pairs or integer operators)?"""
    if metadata(model).get("adn.precision") == "int8":
        return True
    return any(node.op_type in QUANTIZED_OP_TYPES for node in model.graph.node)


def check_not_quantized(model: onnx.ModelProto, label: str) -> None:
    if is_quantized(model):
        found = sorted({n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES})
        raise AdnError(
            f"{label} is already quantised (it holds {', '.join(found) or 'INT8 metadata'}); quantising it again "
            "would calibrate rounded activations and stack a second set of scales on the first.",
            "Quantise the float32 graph that `adn-edge export` wrote: re-export the sub-network "
            "(adn-edge export CHECKPOINT --subnet CODE --out DIR), then run adn-edge quantize on that directory.")


@dataclass
class QdqStats:
    quantize_linear: int
    dequantize_linear: int
    weighted_layers: int
    quantized_layers: int
    float_layers: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"QuantizeLinear": self.quantize_linear, "DequantizeLinear": self.dequantize_linear,
                "weighted_layers": self.weighted_layers, "quantized_layers": self.quantized_layers,
                "float_layers": list(self.float_layers)}


def check_qdq(model: onnx.ModelProto, label: str = "the INT8 graph") -> QdqStats:
    """What TensorRT and ONNX Runtime need from the graph, checked (our bug if not).

    ``onnx.checker`` passes; there are Q/DQ pairs; every zero point is an INT8 zero
    (symmetric); no DequantizeLinear reads INT32 (TensorRT's parser rejects it); no
    QOperator node; every weighted layer reads its weight through a DequantizeLinear.
    """
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise AdnFailure(f"{label} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    counts = op_counts(model)
    problems: list[str] = []
    if not counts.get("QuantizeLinear") or not counts.get("DequantizeLinear"):
        problems.append("it has no QuantizeLinear/DequantizeLinear pairs")
    qop = sorted(t for t in counts if t in QUANTIZED_OP_TYPES and t not in ("QuantizeLinear", "DequantizeLinear"))
    if qop:
        problems.append(f"it holds QOperator nodes ({', '.join(qop)}) that TensorRT cannot parse")
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is None or zp.data_type != onnx.TensorProto.INT8 or np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{node.name} is not symmetric INT8 (zero point must be an INT8 zero)")
            break
        if node.op_type == "DequantizeLinear" and node.input[0] in inits \
                and inits[node.input[0]].data_type == onnx.TensorProto.INT32:
            problems.append(f"{node.name} dequantizes an INT32 tensor (a quantised bias), which TensorRT rejects")
            break
    weighted = quantized = 0
    floats: list[str] = []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OP_TYPES or len(node.input) < 2:
            continue
        weighted += 1
        w = producers.get(node.input[1])
        x = producers.get(node.input[0])
        if w is not None and w.op_type == "DequantizeLinear" and x is not None and x.op_type == "DequantizeLinear":
            quantized += 1
        else:
            floats.append(node.name or node.output[0])
    if problems:
        raise AdnFailure(f"{label} is not a valid TensorRT/ONNX Runtime Q/DQ graph: {'; '.join(problems)}.")
    return QdqStats(counts.get("QuantizeLinear", 0), counts.get("DequantizeLinear", 0), weighted, quantized, floats)


# --------------------------------------------------------------------------- quiet ORT


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantisation tools print progress to stdout and warn through the
    root logger; neither may reach a ``--json`` stdout or a user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _registry_ops() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


# --------------------------------------------------------------------------- calibration cache


def cache_name(arch: str, code: str, method: Method) -> str:
    return ranges_cache_name(arch, code, method.name)


def cache_key(graph_sha256: str, data_fingerprint: str, method: Method, samples: int) -> str:
    """What the ranges are a function of: the float graph, the images, the method
    (with its parameters) and how many images were used."""
    blob = json.dumps({"graph": graph_sha256, "data": data_fingerprint, "method": method.record(),
                       "samples": int(samples)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_valid(path: Path, key: str) -> bool:
    """Whether ``path`` holds ranges written for ``key`` (anything unreadable: no)."""
    if not path.is_file():
        return False
    try:
        data = read_json(path, "calibration cache")
    except AdnError:
        return False
    return isinstance(data, dict) and isinstance(data.get("adn_edge"), dict) and data["adn_edge"].get("key") == key \
        and isinstance(data.get("data"), dict) and bool(data["data"])


def _chunks(batches: list[np.ndarray], chunk: int) -> Iterator[list[np.ndarray]]:
    """Runs of at most ``chunk`` batches of one shape: the histogram calibrators stack
    one call's outputs into a single array, which fails on a short last batch."""
    run: list[np.ndarray] = []
    for b in batches:
        if run and (len(run) == chunk or b.shape != run[0].shape):
            yield run
            run = []
        run.append(b)
    if run:
        yield run


class RangeCalibrator:
    """ONNX Runtime's calibrator for ``method`` over one graph, fed in as many calls as
    the caller likes (:meth:`feed`), its ranges written once at the end (:meth:`write`).

    The monolithic quantiser feeds one sub-network's images (:func:`calibrate`); the
    segment quantiser (:mod:`adn_edge.quantize.segments`) keeps one per segment form
    open and feeds each the features of every prefix as they are computed, so no
    prefix's activations have to be held for the whole calibration set. The
    calibrators accumulate across calls: min/max keeps the running extremes, the
    histogram methods merge their histograms.
    """

    def __init__(self, graph_path: Path, method: Method) -> None:
        from onnxruntime.quantization.calibrate import create_calibrator

        self.graph_path = Path(graph_path)
        self._tmp = tempfile.TemporaryDirectory(prefix="adn-calib-")
        try:
            with _quiet():
                self._calibrator = create_calibrator(
                    Path(graph_path), _registry_ops(), augmented_model_path=str(Path(self._tmp.name) / "augmented.onnx"),
                    calibrate_method=method.ort(), extra_options=method.calibrator_options())
        except BaseException:
            self._tmp.cleanup()
            raise
        self.inputs = 0
        """Samples fed so far (images, or feature maps of one image)."""

    def feed(self, input_name: str, batches: list[np.ndarray], chunk: int = 8) -> None:
        """Run the calibrator over ``batches``, ``chunk`` at a time: the histogram
        calibrators keep every intermediate tensor of everything fed in one call
        (hundreds of MB per ResNet-50 batch), and stack one call's outputs into a
        single array (so one call holds batches of one shape)."""
        from adn_edge.quantize.calibration import ArrayReader

        with _quiet():
            for group in _chunks(batches, chunk):
                self._calibrator.collect_data(ArrayReader(input_name, group))
        self.inputs += sum(int(b.shape[0]) for b in batches)

    def write(self, cache_path: Path, key_record: Mapping[str, Any]) -> None:
        """The ranges (ONNX Runtime's cache format, plus our key), atomically to ``cache_path``."""
        from onnxruntime.quantization.calibrate import CalibrationCacheEncoder

        with _quiet():
            ranges = self._calibrator.compute_data()
        payload = ranges.to_dict()
        payload["smooth_quant"] = False
        payload["adn_edge"] = dict(key_record)
        write_text(cache_path, json.dumps(payload, cls=CalibrationCacheEncoder))

    def close(self) -> None:
        """Release the session (and its arena) and the augmented graph now."""
        self._calibrator.infer_session = None
        self._tmp.cleanup()

    def __enter__(self) -> RangeCalibrator:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def calibrate(graph_path: Path, batches: list[np.ndarray], method: Method, input_name: str, cache_path: Path,
              key_record: Mapping[str, Any], chunk: int = 8) -> None:
    """Run ONNX Runtime's calibrator for ``method`` over ``batches``; write the ranges
    (ONNX Runtime's cache format, plus our key) atomically to ``cache_path``
    (:class:`RangeCalibrator`, fed once)."""
    with RangeCalibrator(graph_path, method) as calibrator:
        calibrator.feed(input_name, batches, chunk)
        calibrator.write(cache_path, key_record)


# --------------------------------------------------------------------------- quantisation


def quantize_graph(graph_path: Path, cache_path: Path, method: Method) -> onnx.ModelProto:
    """ONNX Runtime's ``quantize_static`` with the recipe above, from cached ranges."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="adn-quant-") as tmp, _quiet():
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(graph_path), str(out), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            per_channel=True, reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=method.ort(), calibration_cache_path=str(cache_path),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                           "DedicatedQDQPair": True},
        )
        return onnx.load(str(out))


def _digest(t: onnx.TensorProto) -> str:
    a = np.ascontiguousarray(numpy_helper.to_array(t))
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()


def _separate_shared_quantizers(graph: onnx.GraphProto) -> int:
    """Give every QuantizeLinear that duplicates another (same input, same scale) its
    own copy of the scale and zero point, so ONNX Runtime cannot merge them again.

    Returns how many were separated. Values are unchanged; only names differ.
    """
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    groups: dict[tuple[str, ...], list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            groups.setdefault(tuple(node.input), []).append(node)
    separated = 0
    for members in groups.values():
        for k, q in enumerate(members[1:], start=1):
            renamed = {}
            for slot in (1, 2):
                if len(q.input) <= slot or q.input[slot] not in inits:
                    continue
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[q.input[slot]])
                copy.name = f"{q.input[slot]}.{k}"
                graph.initializer.append(copy)
                inits[copy.name] = copy
                renamed[q.input[slot]] = copy.name
                q.input[slot] = copy.name
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    for i, name in enumerate(dq.input):
                        if i > 0 and name in renamed:
                            dq.input[i] = renamed[name]
            separated += 1
    return separated


def _content_names(graph: onnx.GraphProto, float_digests: Mapping[str, str]) -> None:
    """Initializers the float graph has (same name, same bytes) keep their names; every
    other one is renamed ``<name>.<sha256[:12]>`` of its content."""
    mapping: dict[str, str] = {}
    for init in graph.initializer:
        digest = _digest(init)
        if float_digests.get(init.name) == digest:
            continue
        new = f"{init.name}.{digest[:12]}"
        mapping[init.name] = new
        init.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for vi in list(graph.input):
        if vi.name in mapping:  # initializers listed as inputs (old IR): keep the pair consistent
            vi.name = mapping[vi.name]


def finalize(qmodel: onnx.ModelProto, fmodel: onnx.ModelProto, meta: Mapping[str, Any]) -> onnx.ModelProto:
    """Dedicated quantizers, content-addressed names, metadata; in place, returned."""
    graph = qmodel.graph
    _separate_shared_quantizers(graph)
    _content_names(graph, {i.name: _digest(i) for i in fmodel.graph.initializer})
    del graph.value_info[:]  # shape-inference leftovers of the quantiser; ONNX Runtime re-infers
    del qmodel.metadata_props[:]
    for k, v in {**metadata(fmodel), **meta}.items():
        entry = qmodel.metadata_props.add()
        entry.key, entry.value = k, str(v)
    qmodel.producer_name = "adn-edge"
    return qmodel


def float_outputs(model: onnx.ModelProto) -> list[str]:
    """Drop the QuantizeLinear -> DequantizeLinear pair in front of each graph output, in
    place: the layer before it (a classifier's Gemm) then writes the float output itself,
    as a float-output integer kernel (ONNX Runtime's QGemm, TensorRT's INT8 GEMM with a
    float epilogue). Returns the outputs changed.

    Why: an 8-bit grid on the logits (10 classes, one scale) makes exact ties between the
    top classes common (up to 4 % of the images of the embedded model's sub-networks), and
    top-1 then depends on how the reader breaks ties (numpy's argmax, argpartition and
    torch's topk each differ); a float output has none. Used for the segments' chain
    output (:mod:`adn_edge.quantize.segments`)."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    changed: list[str] = []
    for out in graph.output:
        dq = producers.get(out.name)
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or readers.get(out.name) \
                or readers.get(q.output[0]) != [dq]:
            continue
        source = q.input[0]
        if source in outputs or source not in producers:
            continue
        for node in graph.node:  # the float tensor takes the output's name
            for i, name in enumerate(node.output):
                if name == source:
                    node.output[i] = out.name
            for i, name in enumerate(node.input):
                if name == source and node is not q:
                    node.input[i] = out.name
        graph.node.remove(dq)
        graph.node.remove(q)
        changed.append(out.name)
    if changed:
        used = {name for node in graph.node for name in node.input}
        for init in [i for i in graph.initializer if i.name not in used]:
            graph.initializer.remove(init)
    return changed


def library_record() -> dict[str, Any]:
    import onnxruntime

    return {"name": "onnxruntime.quantization.quantize_static", "version": onnxruntime.__version__,
            "format": "QDQ", "weights": "int8, per output channel, symmetric",
            "activations": "int8, per tensor, symmetric (zero point 0)", "bias": "float32 (quantised by the runtime)",
            "dedicated_qdq_pairs": True, "recipe": RECIPE}


