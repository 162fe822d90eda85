"""The cuda-python implementation of :class:`~adn_edge.backends.cuda.CudaApi`.

NVIDIA's cuda-python is the binding TensorRT's own samples use now and ships wheels
for CUDA 12 and 13 (the pin per platform: :data:`~adn_edge.backends.cuda.CUDA_PYTHON_PINS`).
Its runtime API returns ``(cudaError_t, *results)`` tuples; :class:`CudaPython` checks
and unpacks them so the runtime sees plain values and
:class:`~adn_edge.backends.cuda.CudaError`, every message naming the CUDA error
(``cudaErrorInsufficientDriver (35): ...``). A wheel newer than the driver imports
fine and fails at its first call: that is :class:`~adn_edge.backends.cuda.CudaStartError`,
so that :func:`~adn_edge.backends.cuda.open_cuda` can try the next binding.

Kept apart from the interface so that reading (or typing) one binding's quirks does
not mean reading the other's. The binding ships no type information: ``_CudartModule``
types exactly the calls made. It is imported lazily (:func:`import_cudart`), so
importing this module needs numpy only; :func:`~adn_edge.backends.cuda.open_cuda`
imports it when cuda-python is chosen.
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


class _CudartModule(Protocol):
    """The calls of ``cuda.bindings.runtime`` (or ``cuda.cudart``) used here; each
    returns ``(cudaError_t, *results)``."""

    cudaError_t: Any
    cudaMemcpyKind: Any
    cudaStreamCaptureMode: Any

    def cudaGetErrorString(self, err: Any) -> tuple[Any, bytes]: ...
    def cudaGetErrorName(self, err: Any) -> tuple[Any, bytes]: ...
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
        self._props: Any = None
        (err, count) = self.rt.cudaGetDeviceCount()
        if err != self._success:
            raise CudaStartError("cuda-python", f"cuda-python cannot start CUDA: cudaGetDeviceCount returned "
                                 f"{self._describe(err)}.", self._errname(err))
        if count < 1:
            raise CudaStartError("cuda-python", "cuda-python sees no CUDA GPU (cudaGetDeviceCount returned 0).",
                                 "cudaErrorNoDevice")
        if device >= count:
            raise AdnError(f"CUDA device {device} does not exist (this machine has {count}).")
        err = self.rt.cudaSetDevice(device)[0]
        if err != self._success:
            raise CudaStartError("cuda-python", f"cuda-python cannot start CUDA on device {device}: cudaSetDevice "
                                 f"returned {self._describe(err)}.", self._errname(err))

    def _errname(self, err: Any) -> str | None:
        try:
            _, n = self.rt.cudaGetErrorName(err)
            return n.decode() if isinstance(n, bytes) else str(n)
        except Exception:  # noqa: BLE001 - only for the message
            return getattr(err, "name", None)

    def _errstr(self, err: Any) -> str:
        try:
            _, s = self.rt.cudaGetErrorString(err)
            return s.decode() if isinstance(s, bytes) else str(s)
        except Exception:  # noqa: BLE001 - only for the message
            return str(err)

    def _describe(self, err: Any) -> str:
        """``cudaErrorInsufficientDriver (35): CUDA driver version is insufficient ...``."""
        try:
            code: Any = int(err)
        except (TypeError, ValueError):
            code = err
        return f"{self._errname(err) or 'CUDA error'} ({code}): {self._errstr(err)}"

    def _check(self, result: tuple[Any, ...], what: str) -> tuple[Any, ...]:
        err = result[0]
        if err != self._success:
            raise CudaError(f"{what} failed: {self._describe(err)}")
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

    def device_info(self) -> DeviceInfo:
        p = self._properties()
        name = p.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return DeviceInfo(str(name).strip(), int(p.major), int(p.minor), int(p.multiProcessorCount),
                          int(p.totalGlobalMem))

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
            raise CaptureFailed(f"stream capture was invalidated: {self._describe(result[0])}")
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
