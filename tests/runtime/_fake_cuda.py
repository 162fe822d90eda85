"""A test double of one CUDA GPU and of the modules that reach it: cuda-python's
``cuda.bindings.runtime``, ``pycuda.driver`` and the driver library ``libcuda``.

It is a double, not a GPU: device memory is host memory addressed by integer pointers,
kernels are Python callables, nothing it times is a measurement (event times are 0).
What it reproduces is the *contract* the real modules keep, as strictly as the
hardware or stricter, so that ``adn_edge.backends.cuda`` (``CudaPython``, ``PyCuda``)
runs for real on top of it:

- the call shapes: cuda-python returns ``(cudaError_t, *values)`` tuples and names its
  errors (``cudaGetErrorName``); pycuda raises; ``libcuda`` returns ``CUresult`` ints and
  writes through ``ctypes.byref``;
- asynchrony: copies and kernels are queued on their stream and happen at
  ``synchronize`` (or an event wait), in stream order. A host-to-device copy reads its
  source when it runs, a device-to-host copy writes its destination when it runs: a
  missing synchronisation reads stale data, an early overwrite of pinned input is seen;
- CUDA graphs: work enqueued during stream capture is recorded, not run, with the
  arguments it had then (addresses, shapes); a launch replays exactly that. A
  synchronisation inside a capture invalidates it, as on a GPU;
- contexts: pycuda's per-thread context stack and the driver's, with pycuda's own
  ``detach()`` semantics for primary contexts (push, release, no pop); driver calls
  without a current context fail;
- faults: reading or writing memory that was never allocated, or past a buffer's end,
  raises :class:`FakeFault`; ``sticky_error`` makes every later call fail like an
  illegal address does; ``start_error`` makes CUDA fail to start (e.g. 35,
  cudaErrorInsufficientDriver: a cuda-python wheel newer than the JetPack driver).
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class FakeFault(AssertionError):
    """What a real GPU would turn into a crash or silent garbage."""


@dataclass(frozen=True)
class GpuSpec:
    name: str
    major: int
    minor: int
    sm_count: int
    memory_bytes: int


ORIN_NANO_8GB = GpuSpec("Orin (nvgpu)", 8, 7, 8, 7619 << 20)
"""As a real Orin Nano 8 GB devkit reports itself (torch.cuda.get_device_properties on
JetPack 6.2.1: ``name='Orin', major=8, minor=7, total_memory=7619MB,
multi_processor_count=8``; nvidia-smi and TensorRT say ``Orin (nvgpu)``)."""
AGX_ORIN_64GB = GpuSpec("Orin (nvgpu)", 8, 7, 16, 62841 << 20)
"""Same name and compute capability as the Orin Nano, twice the SMs (2048 CUDA cores)."""

ERRORS: dict[int, tuple[str, str]] = {
    0: ("cudaSuccess", "no error"),
    1: ("cudaErrorInvalidValue", "invalid argument"),
    2: ("cudaErrorMemoryAllocation", "out of memory"),
    35: ("cudaErrorInsufficientDriver", "CUDA driver version is insufficient for CUDA runtime version"),
    100: ("cudaErrorNoDevice", "no CUDA-capable device is detected"),
    400: ("cudaErrorInvalidResourceHandle", "invalid resource handle"),
    401: ("cudaErrorIllegalState", "the operation cannot be performed in the present state"),
    600: ("cudaErrorNotReady", "device not ready"),
    700: ("cudaErrorIllegalAddress", "an illegal memory access was encountered"),
    900: ("cudaErrorStreamCaptureUnsupported", "operation not permitted when stream is capturing"),
    901: ("cudaErrorStreamCaptureInvalidated", "operation failed due to a previous error during capture"),
}

cudaError_t = enum.IntEnum("cudaError_t", {name: code for code, (name, _) in ERRORS.items()})  # noqa: N816


class CudaFailed(Exception):
    """Internal: a call fails with this CUDA error code."""

    def __init__(self, code: int) -> None:
        super().__init__(ERRORS.get(code, ("cudaErrorUnknown", "unknown error"))[1])
        self.code = code


@dataclass
class _Stream:
    handle: int
    flags: int
    queue: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    capture: list[tuple[str, Callable[[], None]]] | None = None
    capture_invalid: bool = False
    destroyed: bool = False


@dataclass
class _Graph:
    ops: list[tuple[str, Callable[[], None]]]
    owners: set[int]
    destroyed: bool = False


@dataclass
class _Event:
    handle: int
    recorded: bool = False
    done: bool = False
    stream: int | None = None


class FakeGpu:
    """One GPU's state, shared by every fake module bound to it."""

    def __init__(self, spec: GpuSpec = ORIN_NANO_8GB, start_error: int | None = None) -> None:
        self.spec = spec
        self.start_error = start_error
        self.sticky_error: int | None = None
        self.invalidate_captures = False
        """Make every capture fail as an invalidated one does on a GPU."""
        self.memory: dict[int, np.ndarray] = {}
        self.host: dict[int, ctypes.Array[ctypes.c_char]] = {}
        self._next = 0x7F0000010000
        self.streams: dict[int, _Stream] = {}
        self.events: dict[int, _Event] = {}
        self.graphs: dict[int, _Graph] = {}
        self.execs: dict[int, int] = {}
        self.lock = threading.RLock()
        self.stats = {"executions": 0, "launches": 0, "synchronizations": 0, "free_attempts": 0, "frees": 0,
                      "detailed_nvtx_enqueues": 0, "enqueues": 0}
        self.freed: list[int] = []
        # contexts (pycuda / driver API): per-thread stacks of context handles
        self.driver_stacks: dict[int, list[int]] = {}
        self.primary_refcount = 0
        self.primary_handle = 0xC0C0
        self._capture_owners: dict[int, set[int]] = {}

    # ------------------------------------------------------------------ handles

    def _handle(self, size: int = 256) -> int:
        h = self._next
        self._next += max(size, 1) + 4096
        return h

    def check(self) -> None:
        if self.sticky_error is not None:
            raise CudaFailed(self.sticky_error)

    # ------------------------------------------------------------------ memory

    def alloc(self, nbytes: int) -> int:
        self.check()
        if nbytes > self.spec.memory_bytes:
            raise CudaFailed(2)
        ptr = self._handle(nbytes)
        self.memory[ptr] = np.zeros(max(int(nbytes), 1), dtype=np.uint8)
        return ptr

    def free(self, ptr: int) -> None:
        self.stats["free_attempts"] += 1
        self.check()
        if self.memory.pop(int(ptr), None) is None:
            raise FakeFault(f"free of {int(ptr):#x}, which is not an allocation (double free?)")
        self.freed.append(int(ptr))
        self.stats["frees"] += 1

    def view(self, ptr: int, nbytes: int) -> np.ndarray:
        """The bytes [ptr, ptr + nbytes) of one allocation; FakeFault outside any."""
        ptr = int(ptr)
        for base, buf in self.memory.items():
            if base <= ptr < base + buf.nbytes:
                off = ptr - base
                if off + nbytes > buf.nbytes:
                    raise FakeFault(f"{nbytes} bytes at {ptr:#x} overrun the {buf.nbytes}-byte buffer at {base:#x}")
                return buf[off:off + nbytes]
        raise FakeFault(f"address {ptr:#x} was never allocated (or was freed)")

    def floats(self, ptr: int, count: int) -> np.ndarray:
        return self.view(ptr, count * 4).view(np.float32)

    def alloc_host(self, nbytes: int) -> int:
        self.check()
        buf = ctypes.create_string_buffer(max(int(nbytes), 1))
        addr = ctypes.addressof(buf)
        self.host[addr] = buf
        return addr

    def free_host(self, addr: int) -> None:
        self.check()
        if self.host.pop(int(addr), None) is None:
            raise FakeFault(f"cudaFreeHost of {int(addr):#x}, which is not pinned memory")

    # ------------------------------------------------------------------ streams

    def create_stream(self, flags: int) -> int:
        self.check()
        h = self._handle()
        self.streams[h] = _Stream(h, flags)
        return h

    def stream(self, handle: int) -> _Stream:
        s = self.streams.get(int(handle))
        if s is None or s.destroyed:
            raise CudaFailed(400)
        return s

    def destroy_stream(self, handle: int) -> None:
        self.check()
        s = self.stream(handle)
        s.destroyed = True

    def enqueue(self, handle: int, what: str, op: Callable[[], None], owner: int | None = None) -> None:
        """Queue ``op`` on the stream, or record it into the capture in progress."""
        with self.lock:
            self.check()
            s = self.stream(handle)
            self.stats["enqueues"] += 1
            if s.capture is not None:
                s.capture.append((what, op))
                if owner is not None:
                    self._capture_owners.setdefault(s.handle, set()).add(owner)
            else:
                s.queue.append((what, op))

    def synchronize(self, handle: int) -> None:
        with self.lock:
            self.check()
            s = self.stream(handle)
            if s.capture is not None:  # as on a GPU: not allowed, and the capture is lost
                s.capture_invalid = True
                raise CudaFailed(900)
            self.stats["synchronizations"] += 1
            self._drain(s)

    def _drain(self, s: _Stream, until: Callable[[], bool] | None = None) -> None:
        while s.queue:
            _, op = s.queue.pop(0)
            op()
            if until is not None and until():
                return

    def pending(self, handle: int) -> list[str]:
        return [what for what, _ in self.stream(handle).queue]

    # ------------------------------------------------------------------ events

    def create_event(self) -> int:
        self.check()
        h = self._handle()
        self.events[h] = _Event(h)
        return h

    def record_event(self, event: int, stream: int) -> None:
        ev = self.events[int(event)]
        ev.recorded, ev.done, ev.stream = True, False, int(stream)

        def mark() -> None:
            ev.done = True

        self.enqueue(stream, "event", mark)

    def wait_event(self, event: int) -> None:
        with self.lock:
            self.check()
            ev = self.events[int(event)]
            if not ev.recorded or ev.stream is None:
                raise CudaFailed(400)
            if not ev.done:
                self._drain(self.stream(ev.stream), until=lambda: ev.done)

    def elapsed(self, start: int, end: int) -> float:
        self.check()
        a, b = self.events[int(start)], self.events[int(end)]
        if not (a.done and b.done):
            raise CudaFailed(600)
        return 0.0  # a double: never a measurement

    def destroy_event(self, event: int) -> None:
        self.check()
        self.events.pop(int(event))

    # ------------------------------------------------------------------ graphs

    def begin_capture(self, handle: int) -> None:
        with self.lock:
            self.check()
            s = self.stream(handle)
            if s.capture is not None:
                raise CudaFailed(401)
            s.capture, s.capture_invalid = [], False
            self._capture_owners[s.handle] = set()

    def invalidate_capture(self, handle: int) -> None:
        s = self.stream(handle)
        if s.capture is not None:
            s.capture_invalid = True

    def capturing(self, handle: int) -> bool:
        return self.stream(handle).capture is not None

    def end_capture(self, handle: int) -> int:
        with self.lock:
            self.check()
            s = self.stream(handle)
            if s.capture is None:
                raise CudaFailed(401)
            ops, s.capture = s.capture, None
            owners = self._capture_owners.pop(s.handle, set())
            if s.capture_invalid or self.invalidate_captures:
                raise CudaFailed(901)
            h = self._handle()
            self.graphs[h] = _Graph(ops, owners)
            return h

    def instantiate(self, graph: int) -> int:
        self.check()
        if int(graph) not in self.graphs:
            raise CudaFailed(400)
        h = self._handle()
        self.execs[h] = int(graph)
        return h

    def launch(self, exec_: int, stream: int) -> None:
        self.check()
        g = self.graphs.get(self.execs.get(int(exec_), -1))
        if g is None or g.destroyed:
            raise CudaFailed(400)
        self.stats["launches"] += 1
        for what, op in g.ops:
            self.enqueue(stream, f"graph:{what}", op)

    def destroy_exec(self, exec_: int) -> None:
        self.check()
        if self.execs.pop(int(exec_), None) is None:
            raise CudaFailed(400)

    def destroy_graph(self, graph: int) -> None:
        self.check()
        g = self.graphs.get(int(graph))
        if g is None or g.destroyed:
            raise CudaFailed(400)
        g.destroyed = True

    def in_live_graph(self, owner: int) -> bool:
        """Is ``owner``'s work (a TensorRT context) recorded in a graph still alive?"""
        return any(owner in g.owners for g in self.graphs.values() if not g.destroyed)

    # ------------------------------------------------------------------ driver contexts

    def driver_stack(self) -> list[int]:
        return self.driver_stacks.setdefault(threading.get_ident(), [])

    def require_context(self, what: str) -> None:
        if not self.driver_stack():
            raise FakeFault(f"{what} without a current CUDA context on this thread")


# =========================================================================== cuda-python


class _Props:
    def __init__(self, spec: GpuSpec) -> None:
        self.name = spec.name.encode() + b"\0" * (256 - len(spec.name))
        self.major, self.minor = spec.major, spec.minor
        self.multiProcessorCount = spec.sm_count  # noqa: N815 - the binding's name
        self.totalGlobalMem = spec.memory_bytes  # noqa: N815


class _Handle:
    """cuda-python's handle objects (``cudaStream_t``...): ``int()`` gives the address."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __int__(self) -> int:
        return self.value


def cudart_module(gpu: FakeGpu) -> types.ModuleType:
    """``cuda.bindings.runtime`` over ``gpu``: every call returns ``(cudaError_t, ...)``."""
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = cudaError_t  # type: ignore[attr-defined]
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)  # type: ignore[attr-defined]
    rt.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)  # type: ignore[attr-defined]
    ok = cudaError_t.cudaSuccess

    def call(fn: Callable[..., Any]) -> Callable[..., tuple[Any, ...]]:
        def wrapped(*args: Any) -> tuple[Any, ...]:
            try:
                out = fn(*args)
            except CudaFailed as exc:
                return (cudaError_t(exc.code), None)
            return (ok,) if out is None else (ok, out)
        return wrapped

    def started() -> None:
        if gpu.start_error is not None:
            raise CudaFailed(gpu.start_error)
        gpu.check()

    def count() -> int:
        started()
        return 1

    def set_device(d: int) -> None:
        started()
        if d != 0:
            raise CudaFailed(101 if 101 in ERRORS else 1)

    def props(d: int) -> _Props:
        started()
        return _Props(gpu.spec)

    def memcpy(dst: int, src: int, count: int, kind: int, stream: Any) -> None:
        gpu.check()
        dst, src, count = int(dst), int(src), int(count)
        if kind == 1:
            gpu.view(dst, count)  # fail now on a bad address, as the driver does

            def h2d() -> None:  # reads the pinned source when it runs
                gpu.view(dst, count)[...] = np.frombuffer(ctypes.string_at(src, count), np.uint8)
            gpu.enqueue(int(stream), "memcpy H2D", h2d)
        elif kind == 2:
            gpu.view(src, count)

            def d2h() -> None:  # writes the host destination when it runs
                data = gpu.view(src, count)
                ctypes.memmove(dst, data.ctypes.data, count)
            gpu.enqueue(int(stream), "memcpy D2H", d2h)
        else:
            raise CudaFailed(1)

    def capture_end(stream: Any) -> Any:
        try:
            return _Handle(gpu.end_capture(int(stream)))
        except CudaFailed as exc:
            if exc.code == 901:
                return None
            raise

    def end_capture(stream: Any) -> tuple[Any, Any]:
        try:
            graph = capture_end(stream)
        except CudaFailed as exc:
            return (cudaError_t(exc.code), None)
        if graph is None:
            return (cudaError_t(901), None)
        return (ok, graph)

    def name_of(err: Any) -> tuple[Any, bytes]:
        return (ok, ERRORS.get(int(err), ("cudaErrorUnknown", ""))[0].encode())

    def string_of(err: Any) -> tuple[Any, bytes]:
        return (ok, ERRORS.get(int(err), ("", "unknown error"))[1].encode())

    fns: dict[str, Callable[..., Any]] = {
        "cudaGetDeviceCount": count,
        "cudaSetDevice": set_device,
        "cudaGetDeviceProperties": props,
        "cudaMalloc": gpu.alloc,
        "cudaFree": gpu.free,
        "cudaMallocHost": gpu.alloc_host,
        "cudaFreeHost": gpu.free_host,
        "cudaMemcpyAsync": memcpy,
        "cudaStreamCreateWithFlags": lambda flags: _Handle(gpu.create_stream(flags)),
        "cudaGetLastError": lambda: None,
        "cudaStreamSynchronize": lambda s: gpu.synchronize(int(s)),
        "cudaStreamDestroy": lambda s: gpu.destroy_stream(int(s)),
        "cudaEventCreate": lambda: _Handle(gpu.create_event()),
        "cudaEventRecord": lambda e, s: gpu.record_event(int(e), int(s)),
        "cudaEventSynchronize": lambda e: gpu.wait_event(int(e)),
        "cudaEventElapsedTime": lambda a, b: gpu.elapsed(int(a), int(b)),
        "cudaEventDestroy": lambda e: gpu.destroy_event(int(e)),
        "cudaStreamBeginCapture": lambda s, mode: gpu.begin_capture(int(s)),
        "cudaGraphInstantiate": lambda g, flags: _Handle(gpu.instantiate(int(g))),
        "cudaGraphLaunch": lambda x, s: gpu.launch(int(x), int(s)),
        "cudaGraphExecDestroy": lambda x: gpu.destroy_exec(int(x)),
        "cudaGraphDestroy": lambda g: gpu.destroy_graph(int(g)),
    }
    for name, fn in fns.items():
        setattr(rt, name, call(fn))
    rt.cudaStreamEndCapture = end_capture  # type: ignore[attr-defined]
    rt.cudaGetErrorName = name_of  # type: ignore[attr-defined]
    rt.cudaGetErrorString = string_of  # type: ignore[attr-defined]
    return rt


# =========================================================================== pycuda


class PycudaError(Exception):
    pass


class LogicError(PycudaError):
    pass


def pycuda_modules(gpu: FakeGpu) -> tuple[types.ModuleType, types.ModuleType]:
    """``pycuda`` and ``pycuda.driver`` over ``gpu``, with pycuda's context semantics
    (src/cpp/cuda.hpp): a retained primary context is not current until pushed;
    ``Context.pop()`` pops both stacks; ``detach()`` of a non-current primary context
    pushes it on the driver stack and releases it, and nothing pops it."""
    drv = types.ModuleType("pycuda.driver")
    pycuda_stacks: dict[int, list[_Context]] = {}

    def own_stack() -> list[_Context]:
        return pycuda_stacks.setdefault(threading.get_ident(), [])

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except CudaFailed as exc:
                raise LogicError(f"{fn.__name__} failed: {exc}") from None
        return wrapped

    state = {"initialised": False}

    def init(flags: int = 0) -> None:
        if gpu.start_error is not None:
            raise LogicError(f"cuInit failed: {ERRORS[gpu.start_error][1]}")
        state["initialised"] = True

    def need_init() -> None:
        if not state["initialised"]:
            raise LogicError("cuInit has not been called")

    class _Context:
        def __init__(self) -> None:
            self.handle = gpu.primary_handle
            self.valid = True

        def push(self) -> None:  # context_push: pycuda keeps one context on the driver stack
            if not self.valid:
                raise LogicError("cannot activate dead context")
            stack, driver = own_stack(), gpu.driver_stack()
            if stack and driver:
                driver.pop()
            driver.append(self.handle)
            stack.append(self)

        @staticmethod
        def pop() -> None:
            stack, driver = own_stack(), gpu.driver_stack()
            if stack and driver:
                driver.pop()
            if not stack:
                raise LogicError("context::pop: cannot pop non-current context")
            stack.pop()
            if stack:
                driver.append(stack[-1].handle)

        def detach(self) -> None:
            if not self.valid:
                raise LogicError("context::detach: cannot detach from invalid context")
            stack, driver = own_stack(), gpu.driver_stack()
            active = bool(stack) and stack[-1] is self
            if not active:  # cuCtxPushCurrent, then cuDevicePrimaryCtxRelease: which never pops
                driver.append(self.handle)
            gpu.primary_refcount -= 1
            self.valid = False
            if active:
                while stack and (stack[-1] is self or not stack[-1].valid):
                    stack.pop()
                if stack:
                    driver.append(stack[-1].handle)

    class _Device:
        def __init__(self, ordinal: int) -> None:
            need_init()
            if ordinal != 0:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")

        @staticmethod
        def count() -> int:
            need_init()
            return 1

        def name(self) -> str:
            return gpu.spec.name

        def compute_capability(self) -> tuple[int, int]:
            return gpu.spec.major, gpu.spec.minor

        def total_memory(self) -> int:
            return gpu.spec.memory_bytes

        def get_attribute(self, attr: Any) -> int:
            if attr != "MULTIPROCESSOR_COUNT":
                raise LogicError(f"attribute {attr!r} is not faked")
            return gpu.spec.sm_count

        def retain_primary_context(self) -> _Context:
            gpu.primary_refcount += 1
            return _Context()

    class _Alloc:
        def __init__(self, ptr: int) -> None:
            self.ptr = ptr

        def __int__(self) -> int:
            return self.ptr

        def free(self) -> None:
            gpu.require_context("DeviceAllocation.free")
            guarded(gpu.free)(self.ptr)

    class _HostAlloc(np.ndarray):
        def free(self) -> None:
            gpu.require_context("HostAllocation.free")

    class _PyStream:
        def __init__(self, flags: int = 0) -> None:
            gpu.require_context("Stream()")
            self.handle = guarded(gpu.create_stream)(flags)

        def synchronize(self) -> None:
            guarded(gpu.synchronize)(self.handle)

    class _PyEvent:
        def __init__(self, flags: int = 0) -> None:
            gpu.require_context("Event()")
            self.handle = gpu.create_event()

        def record(self, stream: _PyStream | None = None) -> _PyEvent:
            if stream is None:
                raise FakeFault("the double has no legacy default stream: record on a stream")
            guarded(gpu.record_event)(self.handle, stream.handle)
            return self

        def synchronize(self) -> _PyEvent:
            guarded(gpu.wait_event)(self.handle)
            return self

        def time_since(self, other: _PyEvent) -> float:
            return float(guarded(gpu.elapsed)(other.handle, self.handle))

    def mem_alloc(nbytes: int) -> _Alloc:
        gpu.require_context("mem_alloc")
        return _Alloc(guarded(gpu.alloc)(nbytes))

    def pagelocked_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        gpu.require_context("pagelocked_empty")
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        owner = _HostAlloc((max(n, 1),), np.uint8)  # owns its memory, so numpy keeps it as .base
        owner[...] = 0
        return np.ndarray(shape, dt, buffer=owner)  # pycuda's contract: .base is the HostAllocation

    def memcpy_htod_async(dest: int, src: np.ndarray, stream: _PyStream | None = None) -> None:
        gpu.require_context("memcpy_htod_async")
        if stream is None:
            raise FakeFault("async copy without a stream")
        gpu.view(int(dest), src.nbytes)

        def h2d() -> None:
            gpu.view(int(dest), src.nbytes)[...] = np.frombuffer(src.tobytes(), np.uint8)
        guarded(gpu.enqueue)(stream.handle, "memcpy H2D", h2d)

    def memcpy_dtoh_async(dest: np.ndarray, src: int, stream: _PyStream | None = None) -> None:
        gpu.require_context("memcpy_dtoh_async")
        if stream is None:
            raise FakeFault("async copy without a stream")
        gpu.view(int(src), dest.nbytes)

        def d2h() -> None:
            dest.reshape(-1).view(np.uint8)[...] = gpu.view(int(src), dest.nbytes)
        guarded(gpu.enqueue)(stream.handle, "memcpy D2H", d2h)

    _Device.__name__ = "Device"
    drv.init = init  # type: ignore[attr-defined]
    drv.Device = _Device  # type: ignore[attr-defined]
    drv.Context = _Context  # type: ignore[attr-defined]
    drv.Stream = _PyStream  # type: ignore[attr-defined]
    drv.Event = _PyEvent  # type: ignore[attr-defined]
    drv.mem_alloc = mem_alloc  # type: ignore[attr-defined]
    drv.pagelocked_empty = pagelocked_empty  # type: ignore[attr-defined]
    drv.memcpy_htod_async = memcpy_htod_async  # type: ignore[attr-defined]
    drv.memcpy_dtoh_async = memcpy_dtoh_async  # type: ignore[attr-defined]
    drv.device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT="MULTIPROCESSOR_COUNT")  # type: ignore[attr-defined]
    drv.LogicError = LogicError  # type: ignore[attr-defined]
    drv.Error = PycudaError  # type: ignore[attr-defined]
    pkg = types.ModuleType("pycuda")
    pkg.__path__ = []  # type: ignore[attr-defined]
    pkg.driver = drv  # type: ignore[attr-defined]
    return pkg, drv


class FakeLibCuda:
    """The driver calls :class:`adn_edge.backends.cuda.pycuda_driver._LibCuda` makes
    through ctypes: ``CUresult`` ints, results written through ``byref``."""

    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu = gpu

    @staticmethod
    def _value(arg: Any) -> int:
        return int(arg.value) if isinstance(arg, (ctypes.c_void_p, ctypes.c_int, ctypes.c_ulonglong)) else int(arg)

    def _run(self, fn: Callable[[], Any]) -> int:
        try:
            self.gpu.require_context("a driver API call")
            fn()
        except CudaFailed as exc:
            return exc.code
        return 0

    def cuStreamBeginCapture_v2(self, stream: Any, mode: Any) -> int:  # noqa: N802
        return self._run(lambda: self.gpu.begin_capture(self._value(stream)))

    def cuStreamEndCapture(self, stream: Any, graph_out: Any) -> int:  # noqa: N802
        def end() -> None:
            graph_out._obj.value = self.gpu.end_capture(self._value(stream))
        return self._run(end)

    def cuGraphInstantiateWithFlags(self, exec_out: Any, graph: Any, flags: Any) -> int:  # noqa: N802
        def inst() -> None:
            exec_out._obj.value = self.gpu.instantiate(self._value(graph))
        return self._run(inst)

    def cuGraphLaunch(self, exec_: Any, stream: Any) -> int:  # noqa: N802
        return self._run(lambda: self.gpu.launch(self._value(exec_), self._value(stream)))

    def cuGraphExecDestroy(self, exec_: Any) -> int:  # noqa: N802
        return self._run(lambda: self.gpu.destroy_exec(self._value(exec_)))

    def cuGraphDestroy(self, graph: Any) -> int:  # noqa: N802
        return self._run(lambda: self.gpu.destroy_graph(self._value(graph)))

    def cuCtxGetCurrent(self, out: Any) -> int:  # noqa: N802
        stack = self.gpu.driver_stack()
        out._obj.value = stack[-1] if stack else None
        return 0

    def cuCtxPopCurrent_v2(self, out: Any) -> int:  # noqa: N802
        stack = self.gpu.driver_stack()
        if not stack:
            return 201  # CUDA_ERROR_INVALID_CONTEXT
        out._obj.value = stack.pop()
        return 0


# =========================================================================== installation


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    mod.__path__ = []  # type: ignore[attr-defined]
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


def install_cuda_python(monkeypatch: Any, gpu: FakeGpu) -> None:
    """Make ``cuda.bindings.runtime`` the double (and pycuda absent)."""
    rt = cudart_module(gpu)
    bindings = _module("cuda.bindings", runtime=rt)
    monkeypatch.setitem(sys.modules, "cuda", _module("cuda", bindings=bindings))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)


def install_pycuda(monkeypatch: Any, gpu: FakeGpu, cuda_python_too: bool = False) -> None:
    """Make ``pycuda.driver`` and ``libcuda`` the double (cuda-python absent unless
    ``cuda_python_too``: then both are there, as on a Jetson with both installed)."""
    import adn_edge.backends.cuda.pycuda_driver as pd

    pkg, drv = pycuda_modules(gpu)
    if cuda_python_too:
        install_cuda_python(monkeypatch, gpu)
    else:
        for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    monkeypatch.setattr(pd, "load_libcuda", lambda: FakeLibCuda(gpu))
