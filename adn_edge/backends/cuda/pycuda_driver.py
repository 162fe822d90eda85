"""The pycuda implementation of :class:`~adn_edge.backends.cuda.CudaApi`.

pycuda is the binding most TensorRT 8 era code uses (and the one the design names);
it is built on the device. Its contexts are per thread and it has no stream-capture
binding, so :class:`PyCuda` pushes the device's primary context around every call
sequence and captures CUDA graphs through the driver library directly
(:class:`_LibCuda`).

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
    CAPTURE_INVALIDATED, STREAM_NON_BLOCKING, CaptureFailed, CudaError, DeviceBuffer, Event, Graph, HostBuffer, Stream,
    _check_contiguous,
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
        if self._ctx is not None:
            self._ctx.detach()
            self._ctx = None
