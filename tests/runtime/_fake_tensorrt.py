"""A test double of TensorRT and of the CUDA layer, for testing orchestration only.

No CI machine has a GPU or TensorRT. This double lets the real TensorRT backend code
(``adn_edge.backends.tensorrt.runner``) and the real ``build_directory`` run end to
end on a CPU: the fake "engine" is the ONNX graph itself, run by ONNX Runtime, and
the fake "device memory" is host memory addressed by integer pointers. What it
proves is the wiring: which engine runs for which code, which buffer each context
reads and writes, batch-shape handling, CUDA-graph capture and replay, and the
checks on open. It proves nothing about TensorRT's numerics or speed, and nothing
measured with it is a measurement (``elapsed_ms`` is always 0).

The double is strict where a real GPU would fail silently: reading or writing an
address that was never allocated, an engine reading and writing one buffer, a
context run without its activation memory or with a batch outside its profile,
and writing past a buffer's end all raise.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import struct
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.backends.tensorrt.options import BuildOptions, ProfileShapes
from adn_edge.backends.tensorrt.plan import BuiltEngine, Job
from adn_edge.backends.tensorrt.env import Environment
from adn_edge.backends.cuda import CaptureFailed, CudaError, DeviceBuffer, Event, Graph, HostBuffer, Stream

MAGIC = b"FAKETRT1"
VERSION = "10.3.0"
GPU, CC = "Orin (nvgpu)", (8, 7)
ENV = Environment(VERSION, GPU, f"{CC[0]}.{CC[1]}")
INSPECTOR = Path(__file__).resolve().parents[1] / "backends" / "tensorrt" / "data"
ACTIVATION_BYTES = 4096


class FakeFault(AssertionError):
    """What a real GPU would turn into a crash or silent garbage."""


class Device:
    """Fake device memory and the stream's capture state (one device, one process)."""

    def __init__(self) -> None:
        self.memory: dict[int, np.ndarray] = {}
        self.next_ptr = 0x10000
        self.capturing: list[Callable[[], None]] | None = None
        self.launches = 0
        self.executions = 0

    def alloc(self, nbytes: int) -> int:
        ptr = self.next_ptr
        self.next_ptr += max(nbytes, 1) + 256
        self.memory[ptr] = np.zeros(max(nbytes, 1), dtype=np.uint8)
        return ptr

    def floats(self, ptr: int, count: int) -> np.ndarray:
        buf = self.memory.get(ptr)
        if buf is None:
            raise FakeFault(f"address {ptr:#x} was never allocated (or was freed)")
        if count * 4 > buf.nbytes:
            raise FakeFault(f"{count * 4} bytes at {ptr:#x} overrun its {buf.nbytes}-byte buffer")
        return buf[: count * 4].view(np.float32)


DEVICE = Device()


# --------------------------------------------------------------------------- CUDA layer


class FakeCuda:
    """:class:`adn_edge.backends.cuda.CudaApi` over :data:`DEVICE`; copies are synchronous."""

    name = "fake-cuda"
    device = 0

    def __init__(self) -> None:
        self.closed = False
        self.freed: list[int] = []
        self.invalidate_captures = False
        """Make every capture fail as an invalidated one does on a GPU."""
        self.sticky_fault = False
        """Make synchronize fail as after an illegal address: every later call would too."""
        self.synchronized = 0

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        yield

    def device_name(self) -> str:
        return GPU

    def compute_capability(self) -> tuple[int, int]:
        return CC

    def alloc(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(DEVICE.alloc(nbytes), nbytes)

    def free(self, buf: DeviceBuffer) -> None:
        if DEVICE.memory.pop(buf.ptr, None) is None:
            raise FakeFault(f"double free of {buf.ptr:#x}")
        self.freed.append(buf.ptr)

    def alloc_pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> HostBuffer:
        return HostBuffer(np.zeros(shape, dtype), None)

    def free_pinned(self, buf: HostBuffer) -> None:
        pass

    def copy_htod_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        DEVICE.floats(dst.ptr, src.size)[...] = src.reshape(-1)

    def copy_dtoh_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        dst[...] = DEVICE.floats(src.ptr, dst.size).reshape(dst.shape)

    def create_stream(self) -> Stream:
        return Stream(1, None)

    def synchronize(self, stream: Stream) -> None:
        self.synchronized += 1
        if self.sticky_fault:
            raise CudaError("cudaStreamSynchronize failed: an illegal memory access was encountered")

    def destroy_stream(self, stream: Stream) -> None:
        pass

    def create_event(self) -> Event:
        return Event(None)

    def record(self, event: Event, stream: Stream) -> None:
        pass

    def elapsed_ms(self, start: Event, end: Event) -> float:
        return 0.0  # not a measurement

    def destroy_event(self, event: Event) -> None:
        pass

    def begin_capture(self, stream: Stream) -> None:
        DEVICE.capturing = []

    def end_capture(self, stream: Stream) -> Graph:
        work, DEVICE.capturing = DEVICE.capturing, None
        if self.invalidate_captures:
            raise CaptureFailed("stream capture was invalidated: operation not permitted when stream is capturing")
        return Graph(work, None)

    def launch(self, graph: Graph, stream: Stream) -> None:
        DEVICE.launches += 1
        for step in graph.exec_native:
            step()

    def destroy_graph(self, graph: Graph) -> None:
        pass

    def close(self) -> None:
        self.closed = True


# --------------------------------------------------------------------------- engines


def make_plan(onnx_bytes: bytes, profile: ProfileShapes) -> bytes:
    header = json.dumps({"input": profile.input_name, "min": profile.min[0], "max": profile.max[0]}).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + onnx_bytes


class _Enum:
    def __init__(self, **members: Any) -> None:
        self.__dict__.update(members)


class FakeEngine:
    def __init__(self, plan: bytes) -> None:
        import onnxruntime as ort

        (n,) = struct.unpack("<I", plan[8:12])
        self.header = json.loads(plan[12:12 + n])
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.session = ort.InferenceSession(plan[12 + n:], so, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, i.shape) for i in self.session.get_inputs()]
        self.outputs = [(o.name, o.shape) for o in self.session.get_outputs()]
        self.device_memory_size_v2 = ACTIVATION_BYTES
        self.contexts: list[FakeContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, i: int) -> str:
        return [n for n, _ in self.inputs + self.outputs][i]

    def get_tensor_mode(self, name: str) -> Any:
        return TRT.TensorIOMode.INPUT if name in dict(self.inputs) else TRT.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        return TRT.DataType.FLOAT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        shape = dict(self.inputs + self.outputs)[name]
        return tuple(d if isinstance(d, int) else -1 for d in shape)

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        rest = self.get_tensor_shape(name)[1:]
        lo, hi = self.header["min"], self.header["max"]
        return (lo, *rest), (lo, *rest), (hi, *rest)

    def create_execution_context(self, strategy: Any) -> FakeContext:
        assert strategy is TRT.ExecutionContextAllocationStrategy.USER_MANAGED
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.shape: tuple[int, ...] | None = None
        self.activation: tuple[int, int] | None = None

    def set_device_memory(self, ptr: int, nbytes: int) -> None:
        if nbytes < self.engine.device_memory_size_v2 or ptr not in DEVICE.memory:
            raise FakeFault("activation memory too small or not allocated")
        self.activation = (ptr, nbytes)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if not self.engine.header["min"] <= shape[0] <= self.engine.header["max"]:
            return False
        self.shape = tuple(shape)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        if DEVICE.capturing is not None:
            DEVICE.capturing.append(self._execute)
        else:
            self._execute()
        return True

    def _execute(self) -> None:
        if self.activation is None or self.shape is None:
            raise FakeFault("context run without activation memory or input shape")
        (in_name, _), (out_name, _) = self.engine.inputs[0], self.engine.outputs[0]
        src, dst = self.addresses[in_name], self.addresses[out_name]
        if src == dst:
            raise FakeFault(f"{in_name} and {out_name} share the buffer {src:#x}")
        x = DEVICE.floats(src, int(np.prod(self.shape))).reshape(self.shape).copy()
        y = self.engine.session.run(None, {in_name: x})[0]
        DEVICE.floats(dst, y.size)[...] = y.reshape(-1)
        DEVICE.executions += 1


class FakeRuntime:
    def __init__(self, logger: Any) -> None:
        pass

    def deserialize_cuda_engine(self, blob: bytes) -> FakeEngine | None:
        return FakeEngine(blob) if blob.startswith(MAGIC) else None


TRT = types.ModuleType("tensorrt")
TRT.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch looks for it with find_spec
TRT.__version__ = VERSION  # type: ignore[attr-defined]
TRT.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})  # type: ignore[attr-defined]
TRT.Runtime = FakeRuntime  # type: ignore[attr-defined]
TRT.ExecutionContextAllocationStrategy = _Enum(USER_MANAGED=object())  # type: ignore[attr-defined]
TRT.TensorIOMode = _Enum(INPUT="INPUT", OUTPUT="OUTPUT")  # type: ignore[attr-defined]
TRT.DataType = _Enum(FLOAT="FLOAT", HALF="HALF")  # type: ignore[attr-defined]


def install(monkeypatch: Any) -> FakeCuda:
    """Put the doubles where the backend looks: ``import tensorrt`` and ``open_cuda``."""
    import adn_edge.backends.cuda as cl

    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", TRT)
    monkeypatch.setattr(cl, "open_cuda", lambda kind="auto", device=0: cuda)
    monkeypatch.setattr(cl, "available_bindings", lambda: ["fake-cuda"])
    return cuda


# --------------------------------------------------------------------------- builder


class FakeBuilder:
    """Stands in for ``TrtToolchain``: the plan wraps the ONNX graph and the batch range."""

    def __init__(self, env: Environment = ENV) -> None:
        self.env = env
        self.builds: list[tuple[Job, ProfileShapes]] = []
        self.calibration_batches: dict[str, list[np.ndarray]] = {}
        """Every batch the calibrator would have fed TensorRT, by unit key."""

    def load_timing_cache(self, path: Path) -> str:
        return "timing cache: fake"

    def save_timing_cache(self, path: Path) -> None:
        pass

    def build(self, job: Job, onnx_path: Path, onnx_bytes: bytes, options: BuildOptions,
              profile: ProfileShapes, calibration: Any = None) -> BuiltEngine:
        self.builds.append((job, profile))
        fed = None
        if calibration is not None:
            fed = 0
            if not calibration.reuse_cache:
                batches = list(calibration.data.batches())
                assert all(b.shape == calibration.data.shape for b in batches)
                self.calibration_batches[job.code] = batches
                fed = len(batches)
                calibration.cache_path.write_bytes(b"TRT-100300-EntropyCalibration2\n")
        name = {"best": "int8"}.get(job.precision, job.precision)
        inspector = (INSPECTOR / f"inspector_{name}_trt10.json").read_text()
        return BuiltEngine(make_plan(onnx_bytes, profile), inspector, 0.01, fed)

    def close(self) -> None:
        pass
