"""A version-faithful test double of TensorRT's Python module (``import tensorrt``).

No CI machine has a GPU or TensorRT. This double lets the *real* TensorRT-facing code
run on a CPU: ``adn_edge.backends.tensorrt.builder`` (parse, configure, build, time,
calibrate, inspect) and ``adn_edge.backends.tensorrt.runner`` (deserialise, contexts,
enqueue, CUDA graphs), over the CUDA double of :mod:`tests.runtime._fake_cuda`.

Version-faithful: :func:`make_tensorrt` builds the module of one TensorRT release from
its name-level API listing (``tests/fixtures/tensorrt/api-*.json``: 10.3, 10.16, 11.1).
Exactly the listed names exist; anything else raises ``AttributeError`` as the real
module does (``trt.IInt8EntropyCalibrator2`` on 11.1, ``config.int8_calibrator`` on
11.1, ``engine.device_memory_size`` on 11.1), also for setting attributes on its
objects (pybind11 objects have no ``__dict__``). A listed name the double does not
implement raises ``NotImplementedError``, so a gap in the double is never mistaken
for an absence in TensorRT.

Behaviour, as strict as TensorRT or stricter: the ONNX parser reports unsupported
operators and malformed graphs through ``ParserError``; 11.x networks are strongly typed
(the FP16/INT8 flags do not exist) and a 10.x strongly typed network refuses them; INT8
needs a calibrator or Q/DQ nodes; the calibrator protocol is driven as TensorRT does
(cache first, then batches read from device memory, then the cache written back, a
cache of another version ignored); TF32 is on by default; timing caches carry their
version and GPU (another version's cache yields no cache, another GPU's is refused by
``set_timing_cache``/``combine``); plans load only on the version and compute capability
that built them, and one from another GPU of the same compute capability loads with a
warning, as on a Jetson; execution contexts inherit the engine's profiling verbosity
(counted: an enqueue at DETAILED NVTX verbosity costs latency on hardware); a context
captured into a live CUDA graph must not be rebound; the first enqueue at a shape must
not happen inside a stream capture (TensorRT allocates then; the capture is lost).

The "engine" is the ONNX graph, run by ONNX Runtime on the CPU at stream
synchronisation, reading and writing the fake device memory. It proves wiring (which
engine for which code, buffers, batches, graphs, versions), never TensorRT's speed or
numerics: nothing measured with it is a measurement.
"""

from __future__ import annotations

import functools
import importlib.machinery
import json
import struct
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.runtime._fake_cuda import (
    AGX_ORIN_64GB, ORIN_NANO_8GB, FakeFault, FakeGpu, GpuSpec, install_cuda_python, install_pycuda,
)

__all__ = ["AGX_ORIN_64GB", "ORIN_NANO_8GB", "TAGS", "FakeFault", "FakeGpu", "GpuSpec", "Installed", "install",
           "listing", "make_tensorrt", "plan_header"]

LISTINGS = Path(__file__).resolve().parents[1] / "fixtures" / "tensorrt"
VERSIONS = {"10.3": ("10.3.0", "api-v10.3.0.json"), "10.16": ("10.16.2.10", "api-v10.16.json"),
            "11.1": ("11.1.0", "api-v11.1.json")}
"""Listing tag -> (``tensorrt.__version__``, listing file). 10.16.2.10 is what JetPack
7.2.1 prints; JetPack 6 prints 10.3.0."""
TAGS = tuple(VERSIONS)
MAGIC = b"FAKETRT2"
CACHE_MAGIC = b"FAKETC2\n"
MAX_OPSET = {"10.3": 20, "10.16": 22, "11.1": 23}

SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum
Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish Identity If
InstanceNormalization IsInf IsNaN LRN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop MatMul Max
MaxPool Mean Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad Pow QuantizeLinear RandomUniform Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
Relu Reshape Resize ReverseSequence RoiAlign Round ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin
Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Where Xor
""".split())
"""Operators of the default ONNX domain the TensorRT ONNX parser converts (a subset is
enough: anything else is reported as UNSUPPORTED_NODE, which is what the double is for)."""

LAYER_TYPES = {"Conv": "CaskConvolution", "ConvTranspose": "CaskDeconvolution", "Gemm": "CaskGemmMatrixMultiply",
               "MatMul": "CaskGemmMatrixMultiply", "GlobalAveragePool": "CaskPooling", "AveragePool": "CaskPooling",
               "MaxPool": "CaskPooling", "GlobalMaxPool": "CaskPooling", "ReduceMean": "Reduce",
               "Softmax": "CaskSoftMaxV2", "Flatten": "Shuffle", "Reshape": "Shuffle", "Transpose": "Shuffle",
               "Squeeze": "Shuffle", "Unsqueeze": "Shuffle", "Cast": "Cast", "Concat": "Concatenation",
               "Slice": "Slice", "Gather": "Gather", "Shape": "Shape", "Identity": "NoOp",
               "QuantizeLinear": "NoOp", "DequantizeLinear": "NoOp"}
"""ONNX operator -> the inspector's LayerType (everything else is a fused PointWiseV2)."""
HEAVY = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
VERBOSITY_ORDER = ("NONE", "LAYER_NAMES_ONLY", "DETAILED")
REDUCED_FLAGS = ("FP16", "INT8", "BF16", "FP8", "INT4", "FP4")


@functools.cache
def listing(tag: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((LISTINGS / VERSIONS[tag][1]).read_text())
    return data


def plan_header(plan: bytes) -> dict[str, Any]:
    """What the double recorded in a plan it built (flags, precision, GPU): for tests."""
    if not plan.startswith(MAGIC):
        raise ValueError("not a plan of the TensorRT double")
    (n,) = struct.unpack("<I", plan[len(MAGIC):len(MAGIC) + 4])
    header: dict[str, Any] = json.loads(plan[len(MAGIC) + 4:len(MAGIC) + 4 + n])
    return header


def _plan_parts(plan: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<I", plan[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    return json.loads(plan[start:start + n]), plan[start + n:]


# =========================================================================== the module machinery


class _Absent:
    """A member of the implementation that this TensorRT version does not have."""

    def __init__(self, owner: str, name: str) -> None:
        self.owner, self.name = owner, name

    def _error(self) -> AttributeError:
        return AttributeError(f"'tensorrt.tensorrt.{self.owner}' object has no attribute '{self.name}'")

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        raise self._error()

    def __set__(self, obj: Any, value: Any) -> None:
        raise self._error()


class _TrtObject:
    """Base of every implementation class: pybind11 objects take no new attributes."""

    _rt: _Runtime
    _restricted = False

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        if name.startswith("_") or not cls.__dict__.get("_restricted", False):
            object.__setattr__(self, name, value)  # internal state, or a user's Python subclass
            return
        attr = getattr(cls, name, None)
        if isinstance(attr, (property, _Absent)):
            object.__setattr__(self, name, value)  # the descriptor decides (or refuses)
            return
        raise AttributeError(f"'tensorrt.tensorrt.{cls.__name__}' object has no attribute '{name}'")


class _EnumValue:
    __slots__ = ("enum", "name", "value")

    def __init__(self, enum: str, name: str, value: int) -> None:
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _EnumValue) and (other.enum, other.value) == (self.enum, self.value)

    def __hash__(self) -> int:
        return hash((self.enum, self.value))

    def __repr__(self) -> str:
        return f"<{self.enum}.{self.name}: {self.value}>"

    def __str__(self) -> str:
        return f"{self.enum}.{self.name}"


ENUMS = ("BuilderFlag", "MemoryPoolType", "ProfilingVerbosity", "NetworkDefinitionCreationFlag",
         "ExecutionContextAllocationStrategy", "TensorIOMode", "DataType", "LayerInformationFormat", "ErrorCode",
         "Severity", "QuantizationFlag", "CalibrationAlgoType", "OnnxParserFlag", "TensorLocation",
         "EngineCapability", "HardwareCompatibilityLevel", "TacticSource", "PreviewFeature", "TensorFormat")
_FIXED_VALUES = {"NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1,
                                                  "PREFER_AOT_PYTHON_PLUGINS": 2, "PREFER_JIT_PYTHON_PLUGINS": 3},
                 "Severity": {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4},
                 "ProfilingVerbosity": {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2}}


def _make_enum(name: str, members: list[str]) -> type:
    fixed = _FIXED_VALUES.get(name, {})
    values = [m for m in members if not m.startswith("_") and m.isupper() or m in fixed]
    ns: dict[str, Any] = {"__module__": "tensorrt.tensorrt"}
    taken = set(fixed.values())
    nxt = 0
    for m in values:
        if m in fixed:
            v = fixed[m]
        else:
            while nxt in taken:
                nxt += 1
            v, nxt = nxt, nxt + 1
            taken.add(v)
        ns[m] = _EnumValue(name, m, v)
    ns["__members__"] = {m: ns[m] for m in values}
    return type(name, (), ns)


class _Runtime:
    """Per-module state: the version, its listing, the GPU, the module's own classes."""

    def __init__(self, tag: str, gpu: FakeGpu) -> None:
        self.tag = tag
        self.version = VERSIONS[tag][0]
        self.major = int(self.version.split(".")[0])
        self.api = listing(tag)
        self.gpu = gpu
        self.classes: dict[str, type] = {}
        self.module: types.ModuleType | None = None
        self.log_lines: list[tuple[str, str]] = []
        """Everything the double logged, (severity, message), whoever the logger was."""
        self.calibrations: list[tuple[str, list[np.ndarray]]] = []
        """Per calibrated build: the input name and every batch read from device memory."""

    def cls(self, name: str) -> type:
        return self.classes[name]

    def enum(self, name: str) -> Any:
        return self.classes[name]

    def has(self, cls: str, member: str) -> bool:
        return member in self.api["classes"].get(cls, [])

    def log(self, logger: Any, severity: str, msg: str) -> None:
        self.log_lines.append((severity, msg))
        sev = getattr(self.enum("Severity"), severity)
        if logger is not None:
            logger.log(sev, msg)

    @property
    def version_code(self) -> int:
        parts = [int(p) for p in self.version.split(".")[:3]] + [0, 0]
        return parts[0] * 10000 + parts[1] * 100 + parts[2]

    def gpu_key(self) -> dict[str, Any]:
        s = self.gpu.spec
        return {"name": s.name, "cc": f"{s.major}.{s.minor}", "sms": s.sm_count, "memory": s.memory_bytes}


def _enum_arg(value: Any, enum: str, where: str) -> _EnumValue:
    """pybind11's type check of an enum argument."""
    if not isinstance(value, _EnumValue) or value.enum != enum:
        raise TypeError(f"{where}: incompatible function arguments: {enum} expected, got {value!r}")
    return value


def _shape(dims: Any) -> tuple[int, ...]:
    if isinstance(dims, Dims):
        return dims._shape
    if isinstance(dims, (list, tuple)):
        return tuple(int(d) for d in dims)
    raise TypeError(f"incompatible function arguments: expected Dims, got {type(dims).__name__}")


# =========================================================================== implementation classes


class Dims(_TrtObject):
    def __init__(self, shape: Any = ()) -> None:
        self._shape = tuple(int(d) for d in shape)

    def __len__(self) -> int:
        return len(self._shape)

    def __getitem__(self, i: int) -> int:
        return self._shape[i]

    def __eq__(self, other: object) -> bool:
        try:
            return self._shape == _shape(other)
        except TypeError:
            return False

    def __hash__(self) -> int:
        return hash(self._shape)

    def __repr__(self) -> str:
        return f"({', '.join(map(str, self._shape))})"


class ILogger(_TrtObject):
    def __init__(self) -> None:
        pass

    def log(self, severity: Any, msg: str) -> None:  # pure virtual in TensorRT
        raise NotImplementedError("ILogger.log is pure virtual")


class Logger(ILogger):
    def __init__(self, min_severity: Any = None) -> None:
        self._min = min_severity

    def log(self, severity: Any, msg: str) -> None:
        if self._min is None or int(severity) <= int(self._min):
            sys.stderr.write(f"[fake TensorRT] {severity}: {msg}\n")

    @property
    def min_severity(self) -> Any:
        return self._min


class ITensor(_TrtObject):
    def __init__(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        self._name, self._shape, self._dtype = name, shape, dtype

    @property
    def name(self) -> str:
        return self._name

    @property
    def shape(self) -> Dims:
        return self._rt.cls("Dims")(self._shape)

    @property
    def dtype(self) -> Any:
        return self._dtype


class INetworkDefinition(_TrtObject):
    def __init__(self, flags: int, strongly_typed: bool) -> None:
        self._flags, self._strongly_typed = flags, strongly_typed
        self._model: Any = None
        self._onnx: bytes = b""
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def num_layers(self) -> int:
        return 0 if self._model is None else len(self._model.graph.node)

    def get_input(self, i: int) -> ITensor:
        return self._inputs[i]

    def get_output(self, i: int) -> ITensor:
        return self._outputs[i]

    def get_flag(self, flag: Any) -> bool:
        return bool(self._flags & (1 << int(flag)))


class ParserError(_TrtObject):
    def __init__(self, code: Any, desc: str, node: int = -1, name: str = "", op: str = "") -> None:
        self._code, self._desc, self._node, self._name, self._op = code, desc, node, name, op

    def code(self) -> Any:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op

    def file(self) -> str:
        return "ModelImporter.cpp"

    def func(self) -> str:
        return "parseGraph"

    def line(self) -> int:
        return 0

    def __str__(self) -> str:
        return f"In node {self._node} ({self._op}): {self._code.name}: {self._desc}"


_ELEM = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8", 16: "BF16"}


class OnnxParser(_TrtObject):
    def __init__(self, network: INetworkDefinition, logger: Any) -> None:
        if not isinstance(network, INetworkDefinition):
            raise TypeError("OnnxParser(): incompatible function arguments")
        self._network, self._logger = network, logger
        self._errors: list[ParserError] = []

    def _fail(self, code: str, desc: str, node: int = -1, name: str = "", op: str = "") -> bool:
        err = self._rt.cls("ParserError")(getattr(self._rt.enum("ErrorCode"), code), desc, node, name, op)
        self._errors.append(err)
        self._rt.log(self._logger, "ERROR", f"ModelImporter: {err}")
        return False

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx

        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as exc:  # noqa: BLE001 - protobuf's many errors
            return self._fail("MODEL_DESERIALIZE_FAILED", f"Failed to parse ONNX model from file: {path} ({exc})")
        if not proto.graph.node:
            return self._fail("INVALID_GRAPH", "the graph has no nodes")
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset > MAX_OPSET[self._rt.tag]:
            return self._fail("UNSUPPORTED_GRAPH", f"this version of the parser supports opsets up to "
                              f"{MAX_OPSET[self._rt.tag]}, the model uses {opset}")
        ok = True
        for i, node in enumerate(proto.graph.node):
            if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
                ok = self._fail("UNSUPPORTED_NODE", f"No importer registered for op: {node.op_type}", i, node.name,
                                node.op_type) and ok
        if not ok:
            return False
        inits = {t.name for t in proto.graph.initializer}
        dt = self._rt.enum("DataType")
        tensors = []
        for vi in proto.graph.input:
            if vi.name in inits:
                continue
            t = vi.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            tensors.append(self._rt.cls("ITensor")(vi.name, shape, getattr(dt, _ELEM.get(t.elem_type, "FLOAT"))))
        outs = []
        for vi in proto.graph.output:
            t = vi.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            outs.append(self._rt.cls("ITensor")(vi.name, shape, getattr(dt, _ELEM.get(t.elem_type, "FLOAT"))))
        net = self._network
        net._model, net._onnx, net._inputs, net._outputs = proto, bytes(model), tensors, outs
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, i: int) -> ParserError:
        return self._errors[i]

    def clear_errors(self) -> None:
        self._errors.clear()


class IOptimizationProfile(_TrtObject):
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
        self._shapes[name] = (_shape(min), _shape(opt), _shape(max))

    def get_shape(self, name: str) -> list[Dims]:
        return [self._rt.cls("Dims")(s) for s in self._shapes.get(name, ((), (), ()))]

    def _valid(self) -> bool:
        return all(len(a) == len(b) == len(c) and all(x <= y <= z for x, y, z in zip(a, b, c, strict=True))
                   for a, b, c in self._shapes.values())

    def __bool__(self) -> bool:
        return self._valid()


class IHostMemory(_TrtObject):
    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    def __bytes__(self) -> bytes:
        return self._data

    @property
    def nbytes(self) -> int:
        return len(self._data)

    @property
    def dtype(self) -> Any:
        return self._rt.enum("DataType").UINT8


class ITimingCache(_TrtObject):
    def __init__(self, key: dict[str, Any], entries: set[str]) -> None:
        self._key, self._entries = key, entries

    def serialize(self) -> IHostMemory:
        body = json.dumps({"key": self._key, "entries": sorted(self._entries)}).encode()
        return self._rt.cls("IHostMemory")(CACHE_MAGIC + body)

    def combine(self, other: ITimingCache, ignore_mismatch: bool) -> bool:
        if not isinstance(other, ITimingCache):
            raise TypeError("combine(): incompatible function arguments: ITimingCache expected, got "
                            f"{type(other).__name__}")
        if other._key != self._key and not ignore_mismatch:
            self._rt.log(None, "ERROR", "ITimingCache::combine: the caches were generated on different devices")
            return False
        self._entries |= other._entries
        return True

    def reset(self) -> bool:
        self._entries.clear()
        return True


class IInt8Calibrator(_TrtObject):
    def __init__(self) -> None:
        pass

    def get_algorithm(self) -> Any:
        return self._rt.enum("CalibrationAlgoType").ENTROPY_CALIBRATION_2

    def get_batch_size(self) -> int:
        raise NotImplementedError("pure virtual")

    def get_batch(self, names: list[str]) -> list[int] | None:
        raise NotImplementedError("pure virtual")

    def read_calibration_cache(self) -> bytes | None:
        raise NotImplementedError("pure virtual")

    def write_calibration_cache(self, cache: Any) -> None:
        raise NotImplementedError("pure virtual")


class IInt8EntropyCalibrator2(IInt8Calibrator):
    pass


class IBuilderConfig(_TrtObject):
    def __init__(self) -> None:
        bf = self._rt.enum("BuilderFlag")
        self._flags: set[str] = {"TF32"} if hasattr(bf, "TF32") else set()  # TensorRT's default
        self._pools: dict[int, int] = {}
        self._opt_level = 3
        self._verbosity = self._rt.enum("ProfilingVerbosity").LAYER_NAMES_ONLY
        self._profiles: list[IOptimizationProfile] = []
        self._calibrator: IInt8Calibrator | None = None
        self._calibration_profile: IOptimizationProfile | None = None
        self._timing_cache: ITimingCache | None = None

    def _flag(self, flag: Any) -> str:
        return _enum_arg(flag, "BuilderFlag", "IBuilderConfig").name

    def set_flag(self, flag: Any) -> None:
        self._flags.add(self._flag(flag))

    def clear_flag(self, flag: Any) -> None:
        self._flags.discard(self._flag(flag))

    def get_flag(self, flag: Any) -> bool:
        return self._flag(flag) in self._flags

    @property
    def flags(self) -> int:
        bf = self._rt.enum("BuilderFlag")
        return sum(1 << int(getattr(bf, f)) for f in self._flags)

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        if int(size) < 0:
            raise ValueError("pool size must be non-negative")
        self._pools[int(pool)] = int(size)

    def get_memory_pool_limit(self, pool: Any) -> int:
        return self._pools.get(int(pool), self._rt.gpu.spec.memory_bytes)

    @property
    def builder_optimization_level(self) -> int:
        return self._opt_level

    @builder_optimization_level.setter
    def builder_optimization_level(self, level: int) -> None:
        if not 0 <= int(level) <= 5:
            raise ValueError(f"builder optimization level {level} is outside 0..5")
        self._opt_level = int(level)

    @property
    def profiling_verbosity(self) -> Any:
        return self._verbosity

    @profiling_verbosity.setter
    def profiling_verbosity(self, v: Any) -> None:
        self._verbosity = _enum_arg(v, "ProfilingVerbosity", "profiling_verbosity")

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not isinstance(profile, IOptimizationProfile) or not profile._valid():
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    @property
    def int8_calibrator(self) -> IInt8Calibrator | None:
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, calibrator: IInt8Calibrator | None) -> None:
        if calibrator is not None and not isinstance(calibrator, IInt8Calibrator):
            raise TypeError("int8_calibrator: an IInt8Calibrator expected")
        self._calibrator = calibrator

    def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
        if not profile._valid():
            return False
        self._calibration_profile = profile
        return True

    def get_calibration_profile(self) -> IOptimizationProfile | None:
        return self._calibration_profile

    def create_timing_cache(self, serialized: bytes) -> ITimingCache | None:
        blob = bytes(serialized)
        key = self._rt.gpu_key() | {"trt": self._rt.version}
        if not blob:
            return self._rt.cls("ITimingCache")(key, set())
        if not blob.startswith(CACHE_MAGIC):
            self._rt.log(None, "ERROR", "ITimingCache::deserialize: the blob is not a timing cache")
            return None
        data = json.loads(blob[len(CACHE_MAGIC):])
        if data["key"].get("trt") != self._rt.version:
            self._rt.log(None, "WARNING", f"The timing cache was created by TensorRT {data['key'].get('trt')}; "
                         f"this is {self._rt.version}: it is ignored.")
            return None
        return self._rt.cls("ITimingCache")(data["key"], set(data["entries"]))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if not isinstance(cache, ITimingCache):
            raise TypeError("set_timing_cache(): incompatible function arguments. The following argument types are "
                            f"supported: (self, cache: ITimingCache, ignore_mismatch: bool) -> bool; got "
                            f"{type(cache).__name__}")
        key = self._rt.gpu_key() | {"trt": self._rt.version}
        if cache._key != key and not ignore_mismatch:
            self._rt.log(None, "ERROR", "IBuilderConfig::setTimingCache: the timing cache was created on another "
                         "device")
            return False
        self._timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._timing_cache


class Builder(_TrtObject):
    def __init__(self, logger: Any) -> None:
        if not isinstance(logger, ILogger):
            raise TypeError("Builder(): incompatible function arguments: an ILogger expected")
        self._logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        known = {int(v) for v in self._rt.enum("NetworkDefinitionCreationFlag").__members__.values()}
        bits = {b for b in range(32) if int(flags) >> b & 1}
        if bits - known:
            raise ValueError(f"create_network: unknown NetworkDefinitionCreationFlag bits {sorted(bits - known)}")
        strongly = self._rt.major >= 11 or 1 in bits
        return self._rt.cls("INetworkDefinition")(int(flags), strongly)

    def create_builder_config(self) -> IBuilderConfig:
        return self._rt.cls("IBuilderConfig")()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return self._rt.cls("IOptimizationProfile")()

    @property
    def platform_has_tf32(self) -> bool:
        return self._rt.gpu.spec.major >= 8

    @property
    def platform_has_fast_fp16(self) -> bool:
        return True

    def _error(self, msg: str) -> None:
        self._rt.log(self._logger, "ERROR", msg)

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        rt = self._rt
        if network._model is None or not network._outputs:
            self._error("Network must have at least one output")
            return None
        profiles: dict[str, tuple[tuple[int, ...], ...]] = {}
        for t in network._inputs:
            if -1 not in t._shape:
                continue
            p = next((p for p in config._profiles if t._name in p._shapes), None)
            if p is None:
                self._error(f"Network has dynamic or shape inputs, but no optimization profile has been defined "
                            f"for {t._name}")
                return None
            lo, opt, hi = p._shapes[t._name]
            if len(lo) != len(t._shape) or any(d != -1 and d != x for d, x in zip(t._shape, lo, strict=False)):
                self._error(f"Optimization profile shapes {lo} do not match input {t._name} {t._shape}")
                return None
            profiles[t._name] = (lo, opt, hi)
        reduced = sorted(f for f in config._flags if f in REDUCED_FLAGS)
        graph = _graph_types(network._model)
        if network._strongly_typed and reduced:
            self._error(f"BuilderFlag(s) {', '.join(reduced)} are not allowed for a strongly typed network: "
                        "precision comes from the network's types")
            return None
        calibrated = 0
        cache_text = ""
        if network._strongly_typed:
            heavy = "INT8" if graph["qdq"] else ("FP16" if graph["fp16"] else "FP32")
            light = "FP16" if graph["fp16"] else "FP32"
        else:
            light = "FP16" if "FP16" in reduced else "FP32"
            heavy = light
            if "INT8" in reduced:
                if graph["qdq"]:
                    heavy = "INT8"
                elif config._calibrator is not None:
                    result = self._calibrate(network, config)
                    if result is None:
                        return None
                    calibrated, cache_text = result
                    heavy = "INT8"
                else:
                    self._error("Calibration failure: INT8 is enabled but there is neither a calibrator nor "
                                "Q/DQ nodes; dynamic ranges are missing for all tensors")
                    return None
        max_batch = max((p[2][0] for p in profiles.values()), default=1)
        layers = _layers(network._model, heavy, light)
        header = {
            "trt": rt.version, "gpu": rt.gpu_key(), "strongly_typed": network._strongly_typed,
            "flags": sorted(config._flags), "profiling_verbosity": config._verbosity.name,
            "inputs": [[t._name, list(t._shape), t._dtype.name] for t in network._inputs],
            "outputs": [[t._name, list(t._shape), t._dtype.name] for t in network._outputs],
            "profiles": {k: [list(s) for s in v] for k, v in profiles.items()},
            "layers": layers, "device_memory": 1024 * max_batch + 64 * len(layers),
            "calibration_batches": calibrated, "calibration_cache": cache_text,
        }
        if config._timing_cache is not None:
            config._timing_cache._entries |= {f"{n['type']}:{n['name']}:{heavy}" for n in layers}
        raw = json.dumps(header).encode()
        return rt.cls("IHostMemory")(MAGIC + struct.pack("<I", len(raw)) + raw + network._onnx)

    def _calibrate(self, network: INetworkDefinition, config: IBuilderConfig) -> tuple[int, str] | None:
        """TensorRT 10's calibrator protocol: a valid cache ends it; else batches until
        ``get_batch`` returns nothing, then the cache is written."""
        rt, cal = self._rt, config._calibrator
        assert cal is not None
        header = f"TRT-{rt.version_code}-EntropyCalibration2"
        try:
            cached = cal.read_calibration_cache()
        except Exception as exc:  # noqa: BLE001 - pybind trampolines log and carry on
            self._error(f"read_calibration_cache raised {exc!r}")
            cached = None
        if cached:
            text = bytes(cached).decode(errors="replace")
            if text.startswith(header + "\n"):
                return 0, text
            rt.log(self._logger, "WARNING", "Calibration cache of another TensorRT version; calibrating again")
        dynamic = any(-1 in t._shape for t in network._inputs)
        prof = config._calibration_profile
        if dynamic and prof is None:
            self._error("Calibration profile must be set for a network with dynamic shapes")
            return None
        (inp,) = network._inputs
        shape = prof._shapes[inp._name][1] if prof is not None else inp._shape
        if prof is not None and len(set(prof._shapes[inp._name])) != 1:
            self._error("The calibration profile must have min == opt == max")
            return None
        if cal.get_batch_size() != shape[0]:
            self._error(f"Calibrator batch size {cal.get_batch_size()} differs from the calibration profile {shape}")
            return None
        count = int(np.prod(shape))
        absmax = 0.0
        batches = 0
        seen: list[np.ndarray] = []
        rt.calibrations.append((inp._name, seen))
        while True:
            try:
                ptrs = cal.get_batch([inp._name])
            except Exception as exc:  # noqa: BLE001 - as TensorRT: logged, then "no more batches"
                self._error(f"get_batch raised {exc!r}")
                ptrs = None
            if not ptrs:
                break
            if len(ptrs) != 1 or not isinstance(ptrs[0], int):
                raise FakeFault(f"get_batch must return one device pointer per input name, got {ptrs!r}")
            data = rt.gpu.floats(ptrs[0], count).copy()  # what the device holds now, copies in flight or not
            seen.append(data.reshape(shape))
            absmax = max(absmax, float(np.abs(data).max()) if data.size else 0.0)
            batches += 1
        if batches == 0:
            self._error("Calibration failure occurred with no scaling factors detected")
            return None
        text = f"{header}\n{inp._name}: {absmax:.6g}\n"
        cal.write_calibration_cache(memoryview(text.encode()))
        return batches, text


def _graph_types(model: Any) -> dict[str, bool]:
    ops = {n.op_type for n in model.graph.node}
    fp16 = any(t.data_type == 10 for t in model.graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == 10 for a in n.attribute) for n in model.graph.node)
    return {"qdq": bool(ops & {"QuantizeLinear", "DequantizeLinear"}), "fp16": fp16}


def _layers(model: Any, heavy: str, light: str) -> list[dict[str, Any]]:
    out = []
    if heavy != "FP32":
        out.append({"name": "Reformatting CopyNode for Input Tensor 0", "type": "Reformat", "precision": light,
                    "inputs": ["FP32"]})
    for i, n in enumerate(model.graph.node):
        if n.op_type in ("Constant",):
            continue
        kind = LAYER_TYPES.get(n.op_type, "PointWiseV2")
        prec = heavy if n.op_type in HEAVY else light
        out.append({"name": n.name or f"node_{i}", "type": kind, "precision": prec, "inputs": [prec]})
    if heavy != "FP32":
        out.append({"name": "Reformatting CopyNode for Output Tensor 0", "type": "Reformat", "precision": "FP32",
                    "inputs": [light]})
    return out


class Runtime(_TrtObject):
    def __init__(self, logger: Any) -> None:
        if not isinstance(logger, ILogger):
            raise TypeError("Runtime(): incompatible function arguments: an ILogger expected")
        self._logger = logger

    def deserialize_cuda_engine(self, serialized: bytes) -> ICudaEngine | None:
        rt = self._rt
        blob = bytes(serialized)
        if not blob.startswith(MAGIC):
            rt.log(self._logger, "ERROR", "IRuntime::deserializeCudaEngine: the magic tag does not match")
            return None
        header, onnx_bytes = _plan_parts(blob)
        if header["trt"] != rt.version:
            rt.log(self._logger, "ERROR", "The engine plan file is not compatible with this version of TensorRT, "
                   f"expecting library version {rt.version} got {header['trt']}, please rebuild.")
            return None
        here = rt.gpu_key()
        if header["gpu"]["cc"] != here["cc"]:
            rt.log(self._logger, "ERROR", "The engine plan file is generated on an incompatible device, expecting "
                   f"compute {here['cc']} got compute {header['gpu']['cc']}, please rebuild.")
            return None
        if header["gpu"] != here:
            rt.log(self._logger, "WARNING", "Using an engine plan file across different models of devices is not "
                   "recommended and is likely to affect performance or even cause errors.")
        return rt.cls("ICudaEngine")(header, onnx_bytes)


class ICudaEngine(_TrtObject):
    def __init__(self, header: dict[str, Any], onnx_bytes: bytes) -> None:
        import onnxruntime as ort

        self._header = header
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        self._session = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        self._io = [(n, tuple(s), d, "INPUT") for n, s, d in header["inputs"]] + \
                   [(n, tuple(s), d, "OUTPUT") for n, s, d in header["outputs"]]

    def _tensor(self, name: str) -> tuple[str, tuple[int, ...], str, str]:
        for t in self._io:
            if t[0] == name:
                return t
        raise FakeFault(f"no tensor named {name!r} in this engine")

    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    def get_tensor_name(self, i: int) -> str:
        return self._io[i][0]

    def get_tensor_mode(self, name: str) -> Any:
        return getattr(self._rt.enum("TensorIOMode"), self._tensor(name)[3])

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(self._rt.enum("DataType"), self._tensor(name)[2])

    def get_tensor_shape(self, name: str) -> Dims:
        return self._rt.cls("Dims")(self._tensor(name)[1])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        if profile_index != 0 or name not in self._header["profiles"]:
            raise FakeFault(f"no profile {profile_index} for {name!r}")
        return [self._rt.cls("Dims")(s) for s in self._header["profiles"][name]]

    @property
    def device_memory_size(self) -> int:
        return int(self._header["device_memory"])

    @property
    def device_memory_size_v2(self) -> int:
        return int(self._header["device_memory"])

    @property
    def profiling_verbosity(self) -> Any:
        return getattr(self._rt.enum("ProfilingVerbosity"), self._header["profiling_verbosity"])

    @property
    def num_layers(self) -> int:
        return len(self._header["layers"])

    def create_execution_context(self, strategy: Any = None) -> IExecutionContext:
        strategies = self._rt.enum("ExecutionContextAllocationStrategy")
        strategy = _enum_arg(strategies.STATIC if strategy is None else strategy,
                             "ExecutionContextAllocationStrategy", "create_execution_context")
        ctx = self._rt.cls("IExecutionContext")(self, strategy.name)
        if strategy.name == "STATIC":
            ptr = self._rt.gpu.alloc(self.device_memory_size_v2)
            ctx._activation = (ptr, self.device_memory_size_v2)
        return ctx

    def create_engine_inspector(self) -> EngineInspector:
        return self._rt.cls("EngineInspector")(self)


class IExecutionContext(_TrtObject):
    def __init__(self, engine: ICudaEngine, strategy: str) -> None:
        self._engine, self._strategy = engine, strategy
        self._addresses: dict[str, int] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._activation: tuple[int, int] | None = None
        self._nvtx = engine.profiling_verbosity
        self._warm: set[tuple[int, ...]] = set()

    def _rebinding(self, what: str) -> None:
        if self._rt.gpu.in_live_graph(id(self)):
            raise FakeFault(f"{what} on an execution context captured in a live CUDA graph: the graph replays the "
                            "addresses and shapes it captured, not the new ones")

    def _error(self, msg: str) -> bool:
        self._rt.log(None, "ERROR", f"IExecutionContext: {msg}")
        return False

    def set_device_memory(self, memory: int, size: int) -> None:
        self._rebinding("set_device_memory")
        need = self._engine.device_memory_size_v2
        if int(size) < need:
            raise FakeFault(f"set_device_memory: {size} bytes given, the engine needs {need}")
        self._rt.gpu.view(int(memory), need)
        self._activation = (int(memory), int(size))

    @property
    def device_memory(self) -> int:
        return self._activation[0] if self._activation else 0

    @device_memory.setter
    def device_memory(self, ptr: int) -> None:
        self.set_device_memory(ptr, self._engine.device_memory_size_v2)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self._rebinding("set_tensor_address")
        if name not in {t[0] for t in self._engine._io}:
            return self._error(f"setTensorAddress: no tensor named {name!r}")
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self._rebinding("set_input_shape")
        s = _shape(shape)
        _, declared, _, mode = self._engine._tensor(name)
        if mode != "INPUT":
            return self._error(f"setInputShape: {name!r} is not an input")
        lo, _, hi = self._engine._header["profiles"].get(name, (declared, declared, declared))
        if len(s) != len(declared) or any(d != -1 and d != x for d, x in zip(declared, s, strict=True)) or \
                any(not a <= x <= b for a, x, b in zip(lo, s, hi, strict=True)):
            return self._error(f"setInputShape: {s} is outside the profile {tuple(lo)}..{tuple(hi)} of {name!r}")
        self._shapes[name] = s
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        _, declared, _, mode = self._engine._tensor(name)
        if mode == "INPUT":
            return self._rt.cls("Dims")(self._shapes.get(name, declared))
        batch = next(iter(self._shapes.values()), (-1,))[0]
        return self._rt.cls("Dims")((batch, *declared[1:]))

    @property
    def nvtx_verbosity(self) -> Any:
        return self._nvtx

    @nvtx_verbosity.setter
    def nvtx_verbosity(self, v: Any) -> None:
        _enum_arg(v, "ProfilingVerbosity", "nvtx_verbosity")
        built = self._engine.profiling_verbosity
        if VERBOSITY_ORDER.index(v.name) > VERBOSITY_ORDER.index(built.name):
            self._error(f"NVTX verbosity {v.name} is higher than the engine's {built.name}; unchanged")
            return
        self._nvtx = v

    def execute_async_v3(self, stream_handle: int) -> bool:
        gpu, engine = self._rt.gpu, self._engine
        names = [t[0] for t in engine._io]
        if set(names) - set(self._addresses):
            return self._error(f"enqueueV3: addresses not set for {sorted(set(names) - set(self._addresses))}")
        inputs = [t for t in engine._io if t[3] == "INPUT"]
        if any(-1 in t[1] and t[0] not in self._shapes for t in inputs):
            return self._error("enqueueV3: input shapes not specified")
        if self._activation is None:
            return self._error("enqueueV3: USER_MANAGED context without device memory")
        try:
            capturing = gpu.capturing(int(stream_handle))
        except Exception:  # noqa: BLE001
            return self._error(f"enqueueV3: invalid stream {stream_handle!r}")
        shape_key = tuple(s for t in inputs for s in self._shapes.get(t[0], t[1]))
        if capturing and shape_key not in self._warm:
            gpu.invalidate_capture(int(stream_handle))  # TensorRT's first enqueue allocates and synchronises
            return self._error("enqueueV3: the first enqueue with these shapes ran under stream capture; run once "
                               "before capturing")
        ((in_name, _, _, _),) = inputs
        out_name = next(t[0] for t in engine._io if t[3] == "OUTPUT")
        src, dst = self._addresses[in_name], self._addresses[out_name]
        in_shape = self._shapes.get(in_name, inputs[0][1])
        act_ptr, act_size = self._activation
        detailed = self._nvtx.name == "DETAILED"
        need = engine.device_memory_size_v2
        if src == dst:
            raise FakeFault(f"{in_name} and {out_name} share the buffer {src:#x}")

        def run() -> None:
            # TensorRT scribbles over its activation memory: sharing it is safe only
            # when runs never overlap and it overlaps no I/O buffer.
            gpu.view(act_ptr, need)[...] = 0xAB
            x = gpu.floats(src, int(np.prod(in_shape))).reshape(in_shape).copy()
            y = np.ascontiguousarray(engine._session.run(None, {in_name: x})[0], dtype=np.float32)
            gpu.floats(dst, y.size)[...] = y.reshape(-1)
            gpu.stats["executions"] += 1
            if detailed:
                gpu.stats["detailed_nvtx_enqueues"] += 1

        gpu.enqueue(int(stream_handle), f"enqueue {in_name}->{out_name}", run, owner=id(self))
        if not capturing:
            self._warm.add(shape_key)
        return True


class EngineInspector(_TrtObject):
    def __init__(self, engine: ICudaEngine) -> None:
        self._engine = engine
        self._context: IExecutionContext | None = None

    @property
    def execution_context(self) -> IExecutionContext | None:
        return self._context

    @execution_context.setter
    def execution_context(self, context: IExecutionContext | None) -> None:
        self._context = context

    def get_engine_information(self, fmt: Any) -> str:
        h = self._engine._header
        io_names = [t[0] for t in self._engine._io]
        if fmt.name != "JSON":
            return "\n".join(layer["name"] for layer in h["layers"])
        if h["profiling_verbosity"] != "DETAILED":
            key = "I/O Tensors" if self._rt.major >= 11 else "Bindings"
            return json.dumps({"Layers": [layer["name"] for layer in h["layers"]], key: io_names})
        shapes_known = self._context is not None and all(
            n in self._context._shapes for n, s, _, m in self._engine._io if m == "INPUT" and -1 in s)

        def tensor(name: str, prec: str) -> dict[str, Any]:
            if not shapes_known:
                return {"Name": name, "Location": "Device", "Format/Datatype": "N/A due to dynamic shapes"}
            if self._rt.major >= 11:
                word = {"FP32": "Float", "FP16": "Half", "INT8": "Int8"}[prec]
                return {"Name": name, "Location": "Device", "DataType": word, "Format": "Row major linear"}
            fmt10 = {"FP32": "Row major linear FP32", "FP16": "Channel major FP16 format where channel % 8 == 0",
                     "INT8": "Channel major INT8 format where channel % 32 == 0"}[prec]
            return {"Name": name, "Location": "Device", "Format/Datatype": fmt10}

        layers = [{"Name": layer["name"], "LayerType": layer["type"],
                   "Inputs": [tensor(f"{layer['name']} in", p) for p in layer["inputs"]],
                   "Outputs": [tensor(f"{layer['name']} out", layer["precision"])]} for layer in h["layers"]]
        key = "I/O Tensors" if self._rt.major >= 11 else "Bindings"
        return json.dumps({"Layers": layers, key: io_names})


IMPLEMENTATIONS: dict[str, type] = {
    c.__name__: c for c in (Dims, ILogger, Logger, ITensor, INetworkDefinition, ParserError, OnnxParser,
                            IOptimizationProfile, IHostMemory, ITimingCache, IInt8Calibrator, IInt8EntropyCalibrator2,
                            IBuilderConfig, Builder, Runtime, ICudaEngine, IExecutionContext, EngineInspector)
}


def _restrict(impl: type, name: str, allowed: set[str], rt: _Runtime) -> type:
    """``impl`` as this version's class: members it lacks become :class:`_Absent`."""
    ns: dict[str, Any] = {"__module__": "tensorrt.tensorrt", "_rt": rt, "_restricted": True}
    for klass in impl.__mro__:
        if klass in (object, _TrtObject):
            continue
        for member in vars(klass):
            if not member.startswith("_") and member not in allowed and member not in ns:
                ns[member] = _Absent(name, member)
    return type(name, (impl,), ns)


def make_tensorrt(tag: str, gpu: FakeGpu) -> types.ModuleType:
    """The ``tensorrt`` module of listing ``tag`` (``10.3``, ``10.16``, ``11.1``) on ``gpu``."""
    rt = _Runtime(tag, gpu)
    api = rt.api
    mod = types.ModuleType("tensorrt")
    mod.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch looks for it with find_spec
    mod.__version__ = rt.version  # type: ignore[attr-defined]
    names = set(api["module"])
    for name in names:
        if name in ENUMS:
            rt.classes[name] = _make_enum(name, api["classes"].get(name, []))
        elif name in IMPLEMENTATIONS:
            rt.classes[name] = _restrict(IMPLEMENTATIONS[name], name, set(api["classes"].get(name, [])), rt)
    severity = rt.classes["Severity"]
    for logger in ("ILogger", "Logger"):
        cls = rt.classes[logger]
        for member in api["classes"][logger]:
            if member == "Severity":
                cls.Severity = severity  # type: ignore[attr-defined]
            elif hasattr(severity, member):
                setattr(cls, member, getattr(severity, member))
    for name, obj in rt.classes.items():
        setattr(mod, name, obj)

    def __getattr__(attr: str) -> Any:  # noqa: N807 - the module protocol
        if attr in names:
            raise NotImplementedError(f"the TensorRT double does not implement trt.{attr} (TensorRT {rt.version} has it)")
        raise AttributeError(f"module 'tensorrt' has no attribute '{attr}'")

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    mod._double = rt  # type: ignore[attr-defined]
    rt.module = mod
    return mod


# =========================================================================== installation


@dataclass
class Installed:
    """What :func:`install` put in place: the module, its state, the GPU."""

    trt: types.ModuleType
    gpu: FakeGpu
    tag: str

    @property
    def version(self) -> str:
        return VERSIONS[self.tag][0]

    @property
    def log(self) -> list[tuple[str, str]]:
        return self.trt._double.log_lines  # type: ignore[attr-defined, no-any-return]


def install(monkeypatch: Any, tag: str = "10.3", binding: str = "cuda-python", gpu: FakeGpu | None = None,
            spec: GpuSpec = ORIN_NANO_8GB) -> Installed:
    """Put the doubles where the code looks: ``import tensorrt`` gives the ``tag``
    release, the CUDA binding is the fake ``cuda.bindings.runtime`` (``cuda-python``),
    ``pycuda.driver`` (``pycuda``) or both (``both``), on one fake GPU. The builder module
    is dropped from ``sys.modules`` so that it imports against this version."""
    gpu = gpu if gpu is not None else FakeGpu(spec)
    trt = make_tensorrt(tag, gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.delitem(sys.modules, "adn_edge.backends.tensorrt.builder", raising=False)
    if binding == "cuda-python":
        install_cuda_python(monkeypatch, gpu)
    elif binding in ("pycuda", "both"):
        install_pycuda(monkeypatch, gpu, cuda_python_too=binding == "both")
    else:
        raise ValueError(binding)
    return Installed(trt, gpu, tag)
