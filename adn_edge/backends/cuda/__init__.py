"""The one small CUDA layer under the TensorRT backend: pycuda or cuda-python.

TensorRT's Python API takes raw device pointers and stream handles; allocating them
needs a CUDA binding. Two are in use on Jetsons: pycuda (what most TensorRT 8 era
code and the design name, built on the device) and NVIDIA's cuda-python (wheels,
what TensorRT's own samples use now; pin ``cuda-python>=12,<13`` for JetPack 6's
CUDA 12). :class:`CudaApi` is the subset the runtime needs; both implementations
keep their quirks (tuple returns, per-thread contexts) behind it.

Neither binding ships type information, so each is typed here by a Protocol of
exactly the calls made, checked by mypy, and imported lazily: importing this module
needs numpy only.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from adn_edge.errors import AdnError

CUDA_INSTALL_HINT = (
    "Install a CUDA binding for Python: on a Jetson (JetPack 6, CUDA 12) `pip install 'cuda-python>=12,<13'` "
    "or build pycuda on the device (`pip install pycuda`); on x86 `pip install 'cuda-python>=12,<13'`."
)


class CudaError(RuntimeError):
    """A CUDA call failed (out of memory, invalid handle): a fault, not user input."""


class CaptureFailed(CudaError):
    """Stream capture was invalidated (something in the captured work cannot be put in
    a graph, or another stream touched the legacy default stream meanwhile). Not
    fatal: the work runs without a CUDA graph, as trtexec does."""


STREAM_NON_BLOCKING = 1
"""``cudaStreamNonBlocking`` / ``CU_STREAM_NON_BLOCKING``."""
CAPTURE_INVALIDATED = 901
"""``cudaErrorStreamCaptureInvalidated`` (runtime API) and
``CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`` (driver API) share this code."""


# --------------------------------------------------------------------------- handles


@dataclass
class DeviceBuffer:
    ptr: int
    nbytes: int


@dataclass
class HostBuffer:
    """Page-locked host memory seen as a numpy array (async copies need pinned memory)."""

    array: np.ndarray
    native: Any


@dataclass
class Stream:
    handle: int
    native: Any


@dataclass
class Event:
    native: Any


@dataclass
class Graph:
    """An instantiated CUDA graph (``exec_native``) and the graph it came from."""

    exec_native: Any
    graph_native: Any


class CudaApi(Protocol):
    """What the TensorRT backend and calibrator need from CUDA."""

    name: str
    device: int

    def activate(self) -> contextlib.AbstractContextManager[None]:
        """Make this device/context current on the calling thread for the block."""
        ...

    def device_name(self) -> str: ...
    def compute_capability(self) -> tuple[int, int]: ...
    def alloc(self, nbytes: int) -> DeviceBuffer: ...
    def free(self, buf: DeviceBuffer) -> None: ...
    def alloc_pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> HostBuffer: ...
    def free_pinned(self, buf: HostBuffer) -> None: ...
    def copy_htod_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None: ...
    def copy_dtoh_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None: ...
    def create_stream(self) -> Stream: ...
    def synchronize(self, stream: Stream) -> None: ...
    def destroy_stream(self, stream: Stream) -> None: ...
    def create_event(self) -> Event: ...
    def record(self, event: Event, stream: Stream) -> None: ...
    def elapsed_ms(self, start: Event, end: Event) -> float: ...
    def destroy_event(self, event: Event) -> None: ...
    def begin_capture(self, stream: Stream) -> None: ...
    def end_capture(self, stream: Stream) -> Graph:
        """The captured graph, instantiated; :class:`CaptureFailed` when the capture was
        invalidated (the stream is usable again afterwards)."""
        ...

    def launch(self, graph: Graph, stream: Stream) -> None: ...
    def destroy_graph(self, graph: Graph) -> None: ...
    def close(self) -> None: ...


def _check_contiguous(arr: np.ndarray) -> None:
    if not arr.flags["C_CONTIGUOUS"]:
        raise ValueError("async copies need a C-contiguous array")


# --------------------------------------------------------------------------- cuda-python


class _CudartModule(Protocol):
    """The calls of ``cuda.bindings.runtime`` (or ``cuda.cudart``) used here; each
    returns ``(cudaError_t, *results)``."""

    cudaError_t: Any
    cudaMemcpyKind: Any
    cudaStreamCaptureMode: Any

    def cudaGetErrorString(self, err: Any) -> tuple[Any, bytes]: ...
    def cudaGetDeviceCount(self) -> tuple[Any, int]: ...
    def cudaSetDevice(self, device: int) -> tuple[Any]: ...
    def cudaGetDeviceProperties(self, device: int) -> tuple[Any, Any]: ...
    def cudaMalloc(self, size: int) -> tuple[Any, int]: ...
    def cudaFree(self, ptr: int) -> tuple[Any]: ...
    def cudaMallocHost(self, size: int) -> tuple[Any, int]: ...
    def cudaFreeHost(self, ptr: int) -> tuple[Any]: ...
    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple[Any]: ...
    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[Any, Any]: ...
    def cudaGetLastError(self) -> tuple[Any]: ...
    def cudaStreamSynchronize(self, stream: Any) -> tuple[Any]: ...
    def cudaStreamDestroy(self, stream: Any) -> tuple[Any]: ...
    def cudaEventCreate(self) -> tuple[Any, Any]: ...
    def cudaEventRecord(self, event: Any, stream: Any) -> tuple[Any]: ...
    def cudaEventSynchronize(self, event: Any) -> tuple[Any]: ...
    def cudaEventElapsedTime(self, start: Any, end: Any) -> tuple[Any, float]: ...
    def cudaEventDestroy(self, event: Any) -> tuple[Any]: ...
    def cudaStreamBeginCapture(self, stream: Any, mode: Any) -> tuple[Any]: ...
    def cudaStreamEndCapture(self, stream: Any) -> tuple[Any, Any]: ...
    def cudaGraphInstantiate(self, graph: Any, flags: int) -> tuple[Any, Any]: ...
    def cudaGraphLaunch(self, graph_exec: Any, stream: Any) -> tuple[Any]: ...
    def cudaGraphExecDestroy(self, graph_exec: Any) -> tuple[Any]: ...
    def cudaGraphDestroy(self, graph: Any) -> tuple[Any]: ...


def import_cudart() -> _CudartModule:
    """``cuda.bindings.runtime`` (cuda-python >= 12.6), else the older ``cuda.cudart``."""
    try:
        mod = importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        mod = importlib.import_module("cuda.cudart")
    return cast(_CudartModule, mod)


class CudaPython:
    """cuda-python's runtime API: the same primary context TensorRT uses."""

    name = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        self.rt = import_cudart()
        self.device = device
        self._success = self.rt.cudaError_t.cudaSuccess
        (err, count) = self.rt.cudaGetDeviceCount()
        if err != self._success or count < 1:
            raise AdnError("No CUDA GPU is visible to this process (cudaGetDeviceCount: "
                           f"{self._errstr(err) if err != self._success else 'no device'}).",
                           "Check the NVIDIA driver (nvidia-smi, or tegrastats on a Jetson) and CUDA_VISIBLE_DEVICES.")
        if device >= count:
            raise AdnError(f"CUDA device {device} does not exist (this machine has {count}).")
        self._check(self.rt.cudaSetDevice(device), "cudaSetDevice")
        self._props: Any = None

    def _errstr(self, err: Any) -> str:
        try:
            _, s = self.rt.cudaGetErrorString(err)
            return s.decode() if isinstance(s, bytes) else str(s)
        except Exception:  # noqa: BLE001 - only for the message
            return str(err)

    def _check(self, result: tuple[Any, ...], what: str) -> tuple[Any, ...]:
        err = result[0]
        if err != self._success:
            raise CudaError(f"{what} failed: {self._errstr(err)}")
        return result[1:]

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        # The runtime API binds the primary context per thread on first use; a thread
        # that never called cudaSetDevice would silently use device 0.
        self._check(self.rt.cudaSetDevice(self.device), "cudaSetDevice")
        yield

    def _properties(self) -> Any:
        if self._props is None:
            (self._props,) = self._check(self.rt.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        return self._props

    def device_name(self) -> str:
        name = self._properties().name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return str(name).strip()

    def compute_capability(self) -> tuple[int, int]:
        p = self._properties()
        return int(p.major), int(p.minor)

    def alloc(self, nbytes: int) -> DeviceBuffer:
        (ptr,) = self._check(self.rt.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})")
        return DeviceBuffer(int(ptr), int(nbytes))

    def free(self, buf: DeviceBuffer) -> None:
        if buf.ptr:
            self._check(self.rt.cudaFree(buf.ptr), "cudaFree")
            buf.ptr = 0

    def alloc_pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> HostBuffer:
        dt = np.dtype(dtype)
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * dt.itemsize, 1)
        (ptr,) = self._check(self.rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})")
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(int(ptr)))
        used = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        return HostBuffer(raw[:used].view(dt).reshape(shape), int(ptr))

    def free_pinned(self, buf: HostBuffer) -> None:
        if buf.native:
            self._check(self.rt.cudaFreeHost(int(buf.native)), "cudaFreeHost")
            buf.native = 0

    def copy_htod_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        _check_contiguous(src)
        if src.nbytes > dst.nbytes:
            raise ValueError(f"copy of {src.nbytes} bytes into a {dst.nbytes}-byte device buffer")
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(dst.ptr, src.ctypes.data, src.nbytes, kind, stream.native),
                    "cudaMemcpyAsync(H2D)")

    def copy_dtoh_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        _check_contiguous(dst)
        if dst.nbytes > src.nbytes:
            raise ValueError(f"copy of {dst.nbytes} bytes out of a {src.nbytes}-byte device buffer")
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src.ptr, dst.nbytes, kind, stream.native),
                    "cudaMemcpyAsync(D2H)")

    def create_stream(self) -> Stream:
        # Non-blocking: work another library puts on the legacy default stream (ONNX
        # Runtime, a synchronous copy) neither serialises with it nor invalidates a capture.
        (s,) = self._check(self.rt.cudaStreamCreateWithFlags(STREAM_NON_BLOCKING), "cudaStreamCreateWithFlags")
        return Stream(int(s), s)

    def synchronize(self, stream: Stream) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream.native), "cudaStreamSynchronize")

    def destroy_stream(self, stream: Stream) -> None:
        if stream.native is not None:
            self._check(self.rt.cudaStreamDestroy(stream.native), "cudaStreamDestroy")
            stream.native = None

    def create_event(self) -> Event:
        (e,) = self._check(self.rt.cudaEventCreate(), "cudaEventCreate")
        return Event(e)

    def record(self, event: Event, stream: Stream) -> None:
        self._check(self.rt.cudaEventRecord(event.native, stream.native), "cudaEventRecord")

    def elapsed_ms(self, start: Event, end: Event) -> float:
        self._check(self.rt.cudaEventSynchronize(end.native), "cudaEventSynchronize")
        (ms,) = self._check(self.rt.cudaEventElapsedTime(start.native, end.native), "cudaEventElapsedTime")
        return float(ms)

    def destroy_event(self, event: Event) -> None:
        if event.native is not None:
            self._check(self.rt.cudaEventDestroy(event.native), "cudaEventDestroy")
            event.native = None

    def begin_capture(self, stream: Stream) -> None:
        # Thread-local: another thread's cudaMalloc during capture must not invalidate it.
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check(self.rt.cudaStreamBeginCapture(stream.native, mode), "cudaStreamBeginCapture")

    def end_capture(self, stream: Stream) -> Graph:
        result = self.rt.cudaStreamEndCapture(stream.native)
        if int(result[0]) == CAPTURE_INVALIDATED:
            self.rt.cudaGetLastError()  # clear it, so the next call does not report it
            raise CaptureFailed(f"stream capture was invalidated: {self._errstr(result[0])}")
        (graph,) = self._check(result, "cudaStreamEndCapture")
        try:
            (exec_,) = self._check(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except CudaError:
            self.rt.cudaGraphDestroy(graph)
            raise
        return Graph(exec_, graph)

    def launch(self, graph: Graph, stream: Stream) -> None:
        self._check(self.rt.cudaGraphLaunch(graph.exec_native, stream.native), "cudaGraphLaunch")

    def destroy_graph(self, graph: Graph) -> None:
        if graph.exec_native is not None:
            self._check(self.rt.cudaGraphExecDestroy(graph.exec_native), "cudaGraphExecDestroy")
            graph.exec_native = None
        if graph.graph_native is not None:
            self._check(self.rt.cudaGraphDestroy(graph.graph_native), "cudaGraphDestroy")
            graph.graph_native = None

    def close(self) -> None:
        """Nothing to release: the primary context outlives us (TensorRT uses it too)."""


# --------------------------------------------------------------------------- pycuda


class _PycudaDeviceAllocation(Protocol):
    def __int__(self) -> int: ...
    def free(self) -> None: ...


class _PycudaHostAllocation(Protocol):
    def free(self) -> None: ...


class _PycudaStream(Protocol):
    handle: int

    def synchronize(self) -> None: ...


class _PycudaEvent(Protocol):
    def record(self, stream: _PycudaStream | None = None) -> _PycudaEvent: ...
    def synchronize(self) -> _PycudaEvent: ...
    def time_since(self, event: _PycudaEvent) -> float: ...


class _PycudaContext(Protocol):
    def push(self) -> None: ...
    def detach(self) -> None: ...


class _PycudaDevice(Protocol):
    def name(self) -> str: ...
    def compute_capability(self) -> tuple[int, int]: ...
    def retain_primary_context(self) -> _PycudaContext: ...


class _PycudaContextClass(Protocol):
    @staticmethod
    def pop() -> None: ...


class _PycudaDriver(Protocol):
    """The calls of ``pycuda.driver`` used here (pycuda has no stubs)."""

    Context: _PycudaContextClass

    def init(self, flags: int = 0) -> None: ...
    def Device(self, ordinal: int) -> _PycudaDevice: ...  # noqa: N802 - pycuda's name
    def Stream(self, flags: int = 0) -> _PycudaStream: ...  # noqa: N802
    def Event(self, flags: int = 0) -> _PycudaEvent: ...  # noqa: N802
    def mem_alloc(self, nbytes: int) -> _PycudaDeviceAllocation: ...
    def pagelocked_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray: ...
    def memcpy_htod_async(self, dest: int, src: np.ndarray, stream: _PycudaStream | None = None) -> None: ...
    def memcpy_dtoh_async(self, dest: np.ndarray, src: int, stream: _PycudaStream | None = None) -> None: ...


class _LibCuda:
    """Stream capture through the driver API (``libcuda``): pycuda has no binding for
    it, and pycuda's streams are driver streams, so the handle is the CUstream."""

    _MODE_THREAD_LOCAL = 1  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL

    def __init__(self) -> None:
        lib = None
        for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is None:
            raise CudaError("libcuda (the NVIDIA driver library) cannot be loaded for CUDA graph capture.")
        self.lib = lib

    def _call(self, fn: str, *args: Any) -> None:
        rc = int(getattr(self.lib, fn)(*args))
        if rc == CAPTURE_INVALIDATED:
            raise CaptureFailed(f"{fn}: stream capture was invalidated (CUresult {rc})")
        if rc != 0:
            raise CudaError(f"{fn} failed with CUresult {rc}")

    def begin(self, stream: int) -> None:
        self._call("cuStreamBeginCapture_v2", ctypes.c_void_p(stream), ctypes.c_int(self._MODE_THREAD_LOCAL))

    def end(self, stream: int) -> Graph:
        graph = ctypes.c_void_p()
        self._call("cuStreamEndCapture", ctypes.c_void_p(stream), ctypes.byref(graph))
        exec_ = ctypes.c_void_p()
        try:
            self._call("cuGraphInstantiateWithFlags", ctypes.byref(exec_), graph, ctypes.c_ulonglong(0))
        except CudaError:
            self.lib.cuGraphDestroy(graph)
            raise
        return Graph(exec_, graph)

    def launch(self, graph: Graph, stream: int) -> None:
        self._call("cuGraphLaunch", graph.exec_native, ctypes.c_void_p(stream))

    def destroy(self, graph: Graph) -> None:
        if graph.exec_native is not None:
            self._call("cuGraphExecDestroy", graph.exec_native)
            graph.exec_native = None
        if graph.graph_native is not None:
            self._call("cuGraphDestroy", graph.graph_native)
            graph.graph_native = None


class PyCuda:
    """pycuda on the device's *primary* context (the one TensorRT's runtime API uses;
    ``pycuda.autoinit`` would create a second context whose pointers TensorRT cannot
    use). pycuda contexts are per thread, hence :meth:`activate` around every call
    sequence."""

    name = "pycuda"

    def __init__(self, device: int = 0) -> None:
        self.drv = cast(_PycudaDriver, importlib.import_module("pycuda.driver"))
        self.device = device
        try:
            self.drv.init()
            self._dev = self.drv.Device(device)
            self._ctx: _PycudaContext | None = self._dev.retain_primary_context()
        except Exception as exc:  # pycuda raises its own LogicError/RuntimeError types
            raise AdnError(f"CUDA device {device} cannot be opened through pycuda ({exc}).",
                           "Check the NVIDIA driver (nvidia-smi, or tegrastats on a Jetson).") from None
        self._allocs: dict[int, _PycudaDeviceAllocation] = {}  # pycuda frees on collection: hold them
        self._graphs: _LibCuda | None = None

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        if self._ctx is None:
            raise CudaError("the pycuda context was closed")
        self._ctx.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def device_name(self) -> str:
        return str(self._dev.name()).strip()

    def compute_capability(self) -> tuple[int, int]:
        major, minor = self._dev.compute_capability()
        return int(major), int(minor)

    def alloc(self, nbytes: int) -> DeviceBuffer:
        with self.activate():
            a = self.drv.mem_alloc(max(int(nbytes), 1))
        buf = DeviceBuffer(int(a), int(nbytes))
        self._allocs[buf.ptr] = a
        return buf

    def free(self, buf: DeviceBuffer) -> None:
        alloc = self._allocs.pop(buf.ptr, None)
        if alloc is not None:
            with self.activate():
                alloc.free()
        buf.ptr = 0

    def alloc_pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> HostBuffer:
        with self.activate():
            arr = self.drv.pagelocked_empty(tuple(int(d) for d in shape), np.dtype(dtype))
        return HostBuffer(arr, arr.base)

    def free_pinned(self, buf: HostBuffer) -> None:
        host = cast("_PycudaHostAllocation | None", buf.native)
        if host is not None:
            with self.activate():
                host.free()
            buf.native = None

    def copy_htod_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        _check_contiguous(src)
        if src.nbytes > dst.nbytes:
            raise ValueError(f"copy of {src.nbytes} bytes into a {dst.nbytes}-byte device buffer")
        self.drv.memcpy_htod_async(dst.ptr, src, cast(_PycudaStream, stream.native))

    def copy_dtoh_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        _check_contiguous(dst)
        if dst.nbytes > src.nbytes:
            raise ValueError(f"copy of {dst.nbytes} bytes out of a {src.nbytes}-byte device buffer")
        self.drv.memcpy_dtoh_async(dst, src.ptr, cast(_PycudaStream, stream.native))

    def create_stream(self) -> Stream:
        with self.activate():
            s = self.drv.Stream(flags=STREAM_NON_BLOCKING)  # see CudaPython.create_stream
        return Stream(int(s.handle), s)

    def synchronize(self, stream: Stream) -> None:
        cast(_PycudaStream, stream.native).synchronize()

    def destroy_stream(self, stream: Stream) -> None:
        stream.native = None  # pycuda destroys the stream when the object is collected

    def create_event(self) -> Event:
        with self.activate():
            return Event(self.drv.Event())

    def record(self, event: Event, stream: Stream) -> None:
        cast(_PycudaEvent, event.native).record(cast(_PycudaStream, stream.native))

    def elapsed_ms(self, start: Event, end: Event) -> float:
        e = cast(_PycudaEvent, end.native)
        e.synchronize()
        return float(e.time_since(cast(_PycudaEvent, start.native)))

    def destroy_event(self, event: Event) -> None:
        event.native = None

    def _libcuda(self) -> _LibCuda:
        if self._graphs is None:
            self._graphs = _LibCuda()
        return self._graphs

    def begin_capture(self, stream: Stream) -> None:
        self._libcuda().begin(stream.handle)

    def end_capture(self, stream: Stream) -> Graph:
        return self._libcuda().end(stream.handle)

    def launch(self, graph: Graph, stream: Stream) -> None:
        self._libcuda().launch(graph, stream.handle)

    def destroy_graph(self, graph: Graph) -> None:
        with self.activate():
            self._libcuda().destroy(graph)

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.detach()
            self._ctx = None


# --------------------------------------------------------------------------- selection

IMPLEMENTATIONS = ("cuda-python", "pycuda")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
    return True


def available_bindings() -> list[str]:
    """Which CUDA bindings import here (without touching the GPU)."""
    found = []
    if _importable("cuda.bindings.runtime") or _importable("cuda.cudart"):
        found.append("cuda-python")
    if _importable("pycuda.driver"):
        found.append("pycuda")
    return found


def open_cuda(kind: str = "auto", device: int = 0) -> CudaApi:
    """Open the CUDA layer: ``cuda-python``, ``pycuda`` or ``auto`` (cuda-python first:
    it ships wheels and needs no per-thread context juggling)."""
    kind = kind.lower().replace("_", "-")
    if kind not in ("auto", *IMPLEMENTATIONS):
        raise AdnError(f"Unknown CUDA binding {kind!r}; choose auto, cuda-python or pycuda.")
    order = list(IMPLEMENTATIONS) if kind == "auto" else [kind]
    have = available_bindings()
    for k in order:
        if k in have:
            return CudaPython(device) if k == "cuda-python" else PyCuda(device)
    wanted = "cuda-python or pycuda" if kind == "auto" else kind
    raise AdnError(f"The TensorRT path needs {wanted} to manage GPU memory and streams, and it is not installed.",
                   CUDA_INSTALL_HINT)
