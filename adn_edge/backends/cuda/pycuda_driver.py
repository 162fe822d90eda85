"""The pycuda implementation of :class:`~adn_edge.backends.cuda.CudaApi`.

pycuda is the binding most TensorRT 8 era code uses; it is built on the device
against the installed CUDA, so it cannot be newer than the driver (the fallback when
a cuda-python wheel is). Its contexts are per thread and it has no stream-capture
binding, so :class:`PyCuda` pushes the device's primary context around every call
sequence and captures CUDA graphs through the driver library directly
(:class:`_LibCuda`).

Context hygiene. Asking what the GPU is (:meth:`PyCuda.device_info`) needs no context,
so the primary context is retained only on the first :meth:`PyCuda.activate`. And
pycuda's ``detach()`` of a primary context pushes it and releases it
(``cuDevicePrimaryCtxRelease``), which unlike ``cuCtxDetach`` never pops it: the
thread would be left with the context current. :meth:`PyCuda.close` pops it.

Kept apart from the interface so that reading (or typing) one binding's quirks does
not mean reading the other's. pycuda ships no type information: the ``_Pycuda*``
Protocols type exactly the calls made. ``pycuda.driver`` is imported when a
:class:`PyCuda` is created, so importing this module needs numpy only;
:func:`~adn_edge.backends.cuda.open_cuda` imports it when pycuda is chosen.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
from collections.abc import Iterator
from typing import Any, Protocol, cast

import numpy as np

from adn_edge.backends.cuda import (
    CAPTURE_INVALIDATED, STREAM_NON_BLOCKING, CaptureFailed, CudaError, CudaStartError, DeviceBuffer, DeviceInfo, Event,
    Graph, HostBuffer, Stream, _check_contiguous,
)
from adn_edge.errors import AdnError


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
    handle: int

    def push(self) -> None: ...
    def detach(self) -> None: ...


class _PycudaDevice(Protocol):
    def name(self) -> str: ...
    def compute_capability(self) -> tuple[int, int]: ...
    def total_memory(self) -> int: ...
    def get_attribute(self, attr: Any) -> int: ...
    def retain_primary_context(self) -> _PycudaContext: ...


class _PycudaContextClass(Protocol):
    @staticmethod
    def pop() -> None: ...


class _PycudaDeviceClass(Protocol):
    def __call__(self, ordinal: int) -> _PycudaDevice: ...
    @staticmethod
    def count() -> int: ...


class _PycudaDeviceAttribute(Protocol):
    MULTIPROCESSOR_COUNT: Any


class _PycudaDriver(Protocol):
    """The calls of ``pycuda.driver`` used here (pycuda has no stubs)."""

    Context: _PycudaContextClass
    Device: _PycudaDeviceClass
    device_attribute: _PycudaDeviceAttribute

    def init(self, flags: int = 0) -> None: ...
    def Stream(self, flags: int = 0) -> _PycudaStream: ...  # noqa: N802
    def Event(self, flags: int = 0) -> _PycudaEvent: ...  # noqa: N802
    def mem_alloc(self, nbytes: int) -> _PycudaDeviceAllocation: ...
    def pagelocked_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray: ...
    def memcpy_htod_async(self, dest: int, src: np.ndarray, stream: _PycudaStream | None = None) -> None: ...
    def memcpy_dtoh_async(self, dest: np.ndarray, src: int, stream: _PycudaStream | None = None) -> None: ...


def load_libcuda() -> Any:
    """The NVIDIA driver library (``ctypes.CDLL``); :class:`CudaError` when absent."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise CudaError("libcuda (the NVIDIA driver library) cannot be loaded.")


class _LibCuda:
    """Stream capture through the driver API (``libcuda``): pycuda has no binding for
    it, and pycuda's streams are driver streams, so the handle is the CUstream."""

    _MODE_THREAD_LOCAL = 1  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL

    def __init__(self, lib: Any = None) -> None:
        self.lib = lib if lib is not None else load_libcuda()

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

    def pop_if_current(self, handle: int) -> bool:
        """Pop the calling thread's current context if it is ``handle``: what pycuda's
        ``detach()`` of a primary context leaves behind."""
        current = ctypes.c_void_p()
        self._call("cuCtxGetCurrent", ctypes.byref(current))
        if not current.value or int(current.value) != int(handle):
            return False
        popped = ctypes.c_void_p()
        self._call("cuCtxPopCurrent_v2", ctypes.byref(popped))
        return True


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
            count = int(self.drv.Device.count())
        except Exception as exc:  # pycuda raises its own LogicError/RuntimeError types
            raise CudaStartError("pycuda", f"pycuda cannot start CUDA ({type(exc).__name__}: {exc}).",
                                 _pycuda_error_name(exc)) from None
        if count < 1:
            raise CudaStartError("pycuda", "pycuda sees no CUDA GPU (cuDeviceGetCount returned 0).", "cudaErrorNoDevice")
        if device >= count:
            raise AdnError(f"CUDA device {device} does not exist (this machine has {count}).")
        self._dev = self.drv.Device(device)
        self._ctx: _PycudaContext | None = None
        self._closed = False
        self._allocs: dict[int, _PycudaDeviceAllocation] = {}  # pycuda frees on collection: hold them
        self._graphs: _LibCuda | None = None

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        if self._closed:
            raise CudaError("the pycuda context was closed")
        if self._ctx is None:  # first use: the primary context, retained (not created) once
            self._ctx = self._dev.retain_primary_context()
        self._ctx.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def device_info(self) -> DeviceInfo:
        major, minor = self._dev.compute_capability()
        sms = self._dev.get_attribute(self.drv.device_attribute.MULTIPROCESSOR_COUNT)
        return DeviceInfo(str(self._dev.name()).strip(), int(major), int(minor), int(sms),
                          int(self._dev.total_memory()))

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
            s = self.drv.Stream(flags=STREAM_NON_BLOCKING)  # see CudaPython.create_stream (cuda_python.py)
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
        """Release the primary context if it was retained, and leave it current nowhere:
        pycuda's detach pushes it and releases it without the pop (see the module)."""
        self._closed = True
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        handle = int(ctx.handle)
        ctx.detach()
        self._libcuda().pop_if_current(handle)


def _pycuda_error_name(exc: BaseException) -> str | None:
    """pycuda's errors carry CUDA's text, not its name: map the texts a user meets when
    CUDA does not start."""
    text = str(exc).lower()
    if "insufficient" in text or "driver version" in text:
        return "cudaErrorInsufficientDriver"
    if "no cuda-capable device" in text or "no device" in text:
        return "cudaErrorNoDevice"
    return None
