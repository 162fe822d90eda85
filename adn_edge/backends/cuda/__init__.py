"""The one small CUDA layer under the TensorRT backend: pycuda or cuda-python.

TensorRT's Python API takes raw device pointers and stream handles; allocating them
needs a CUDA binding. Two are in use on Jetsons: pycuda (what most TensorRT 8 era
code and the design name, built on the device) and NVIDIA's cuda-python (wheels,
what TensorRT's own samples use now; pin ``cuda-python>=12,<13`` for JetPack 6's
CUDA 12). :class:`CudaApi` is the subset the runtime needs; both implementations
keep their quirks (tuple returns, per-thread contexts) behind it.

This module is the interface the runtime codes against: the handles, the errors, the
:class:`CudaApi` Protocol and :func:`open_cuda`, which picks a binding. Each binding's
implementation lives in its own module (:mod:`.cuda_python`, :mod:`.pycuda_driver`),
imported by :func:`open_cuda` only once chosen; they import this module, never the
reverse. Neither binding ships type information, so each is typed in its module by a
Protocol of exactly the calls made, checked by mypy, and imported lazily: importing
this package needs numpy only.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from adn_edge.errors import AdnError

__all__ = [
    "CAPTURE_INVALIDATED",
    "CUDA_INSTALL_HINT",
    "IMPLEMENTATIONS",
    "STREAM_NON_BLOCKING",
    "CaptureFailed",
    "CudaApi",
    "CudaError",
    "DeviceBuffer",
    "Event",
    "Graph",
    "HostBuffer",
    "Stream",
    "available_bindings",
    "open_cuda",
]

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
            if k == "cuda-python":
                from adn_edge.backends.cuda.cuda_python import CudaPython

                return CudaPython(device)
            from adn_edge.backends.cuda.pycuda_driver import PyCuda

            return PyCuda(device)
    wanted = "cuda-python or pycuda" if kind == "auto" else kind
    raise AdnError(f"The TensorRT path needs {wanted} to manage GPU memory and streams, and it is not installed.",
                   CUDA_INSTALL_HINT)
