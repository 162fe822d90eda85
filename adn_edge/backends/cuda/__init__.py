"""The one small CUDA layer under the TensorRT backend: pycuda or cuda-python.

TensorRT's Python API takes raw device pointers and stream handles; allocating them
needs a CUDA binding. Two are in use on Jetsons: pycuda (what most TensorRT 8 era
code uses, built on the device) and NVIDIA's cuda-python (wheels, what TensorRT's
own samples use now). :class:`CudaApi` is the subset the runtime needs; both
implementations keep their quirks (tuple returns, per-thread contexts) behind it.

cuda-python must match the CUDA the driver supports. A Jetson's driver supports
exactly the CUDA of its JetPack, so a newer cuda-python wheel imports fine and then
fails to start with ``cudaErrorInsufficientDriver`` (35); :func:`open_cuda` then
falls back to the next binding and, if none starts, names the CUDA error and the pin
for this machine (:func:`cuda_python_pin`; the table is :data:`CUDA_PYTHON_PINS`).

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
import importlib.metadata
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from adn_edge.errors import AdnError

__all__ = [
    "CAPTURE_INVALIDATED",
    "CUDA_ERROR_NAMES",
    "CUDA_INSTALL_HINT",
    "CUDA_PYTHON_PINS",
    "IMPLEMENTATIONS",
    "JETSON_PINS",
    "STREAM_NON_BLOCKING",
    "X86_PINS",
    "BindingReport",
    "CaptureFailed",
    "CudaApi",
    "CudaError",
    "CudaStartError",
    "DeviceBuffer",
    "DeviceInfo",
    "Event",
    "Graph",
    "HostBuffer",
    "Stream",
    "available_bindings",
    "cuda_python_pin",
    "open_cuda",
    "probe_bindings",
]

log = logging.getLogger("adn_edge.backends.cuda")

JETSON_PINS: tuple[tuple[str, str], ...] = (
    ("JetPack 6.1 / 6.2 / 6.2.x (L4T R36.4-R36.5, CUDA 12.6)", "cuda-python==12.6.*"),
    ("JetPack 7.2 (L4T R39.2, CUDA 13.2)", "cuda-python==13.2.*"),
)
"""A Jetson's driver runs exactly its JetPack's CUDA: the pin is that CUDA minor (the
JetPacks with TensorRT 10; JetPack 6.0 and older ship TensorRT 8)."""
X86_PINS: tuple[tuple[str, str], ...] = (
    ("tensorrt-cu12 (any CUDA 12 driver)", "cuda-python>=12,<13"),
    ("tensorrt-cu13 (a CUDA 13 driver)", "cuda-python>=13,<14"),
)
"""A desktop driver runs every minor of its CUDA major up to the one it reports."""
CUDA_PYTHON_PINS = JETSON_PINS + X86_PINS

CUDA_INSTALL_HINT = (
    "Install a CUDA binding for Python that matches this machine's CUDA. On a Jetson, cuda-python matching the "
    "JetPack CUDA minor: " + "; ".join(f"{where}: `pip install '{pin}'`" for where, pin in JETSON_PINS)
    + "; or build pycuda on the device (`pip install pycuda`). On x86: "
    + "; ".join(f"`pip install '{pin}'` with {where}" for where, pin in X86_PINS)
    + ". `adn-edge doctor` says which one this machine needs."
)

CUDA_ERROR_NAMES: dict[int, str] = {
    1: "cudaErrorInvalidValue", 2: "cudaErrorMemoryAllocation", 3: "cudaErrorInitializationError",
    4: "cudaErrorCudartUnloading", 35: "cudaErrorInsufficientDriver", 46: "cudaErrorDevicesUnavailable",
    100: "cudaErrorNoDevice", 101: "cudaErrorInvalidDevice", 209: "cudaErrorNoKernelImageForDevice",
    700: "cudaErrorIllegalAddress", 719: "cudaErrorLaunchFailure", 803: "cudaErrorSystemDriverMismatch",
    804: "cudaErrorCompatNotSupportedOnDevice", 901: "cudaErrorStreamCaptureInvalidated", 999: "cudaErrorUnknown",
}
"""Runtime API error codes a user meets when CUDA does not start (deviceQuery and some
samples print only the number)."""

DRIVER_TOO_OLD = frozenset({"cudaErrorInsufficientDriver", "cudaErrorSystemDriverMismatch",
                            "cudaErrorCompatNotSupportedOnDevice"})
NO_DEVICE = frozenset({"cudaErrorNoDevice", "cudaErrorInvalidDevice", "cudaErrorDevicesUnavailable"})


class CudaError(RuntimeError):
    """A CUDA call failed (out of memory, invalid handle): a fault, not user input."""


class CaptureFailed(CudaError):
    """Stream capture was invalidated (something in the captured work cannot be put in
    a graph, or another stream touched the legacy default stream meanwhile). Not
    fatal: the work runs without a CUDA graph, as trtexec does."""


class CudaStartError(AdnError):
    """A binding that imports but cannot start CUDA here (exit 2: the fix is an install
    or a setting on the user's side). ``error_name`` is CUDA's own name for the failure
    (``cudaErrorInsufficientDriver``) when the binding reports one."""

    def __init__(self, binding: str, message: str, error_name: str | None = None, hint: str | None = None) -> None:
        self.binding = binding
        self.error_name = error_name
        super().__init__(message, hint if hint is not None else start_hint(binding, error_name))


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


@dataclass(frozen=True)
class DeviceInfo:
    """What identifies a GPU for TensorRT engines. Name and compute capability alone do
    not: every Orin module is ``Orin (nvgpu)``, sm 8.7, from the 4 GB Orin Nano (4 SMs)
    to the 64 GB AGX Orin (16 SMs); the SM count and the memory tell them apart."""

    name: str
    major: int
    minor: int
    sm_count: int
    memory_bytes: int

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def memory_mib(self) -> int:
        return int(self.memory_bytes) >> 20


class CudaApi(Protocol):
    """What the TensorRT backend and calibrator need from CUDA."""

    name: str
    device: int

    def activate(self) -> contextlib.AbstractContextManager[None]:
        """Make this device/context current on the calling thread for the block."""
        ...

    def device_info(self) -> DeviceInfo:
        """Needs no context: asking what the GPU is must not leave one behind."""
        ...

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


# --------------------------------------------------------------------------- pins and hints


def cuda_python_pin(cuda_version: str | None = None, jetson: bool | None = None, probe: bool = True) -> str:
    """The cuda-python requirement for a machine running ``cuda_version``: on a Jetson the
    CUDA of its JetPack (``12.6.68`` -> ``cuda-python==12.6.*``), elsewhere the CUDA its
    driver runs (only the major matters there). With ``probe``, what is not given is read
    from this machine (L4T release and CUDA toolkit; nvidia-smi's driver CUDA)."""
    if probe and (cuda_version is None or jetson is None):
        from adn_edge.platform import nvidia_smi, system

        release = system.jetson_release()
        if jetson is None:
            jetson = release is not None
        if cuda_version is None and jetson:
            cuda_version = system.cuda_toolkit_version()[0] or (
                release.release.cuda if release is not None and release.release is not None else None)
        elif cuda_version is None:
            smi = nvidia_smi.parse_table(system.run_command(["nvidia-smi"]))
            cuda_version = smi.cuda if smi is not None else None
    parts = (cuda_version or "").split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return "cuda-python matching this machine's CUDA (12.x: `cuda-python>=12,<13`, 13.x: `cuda-python>=13,<14`)"
    major, minor = int(parts[0]), int(parts[1])
    if jetson:
        return f"cuda-python=={major}.{minor}.*"
    return f"cuda-python>={major},<{major + 1}"


def start_hint(binding: str, error_name: str | None) -> str:
    """What to do when ``binding`` imports but cannot start, by CUDA's error name."""
    if error_name in DRIVER_TOO_OLD:
        if binding == "cuda-python":
            return (f"This cuda-python is built for a newer CUDA than the driver runs; install the one matching "
                    f"this machine's CUDA: `pip install '{cuda_python_pin()}'` (or use pycuda built on the device).")
        return "The driver is older than the CUDA this binding was built against; rebuild it against the installed CUDA."
    if error_name in NO_DEVICE:
        return ("No NVIDIA GPU is visible to this process: check `nvidia-smi` (or `tegrastats` on a Jetson), "
                "CUDA_VISIBLE_DEVICES, and in a container `--runtime nvidia` / `--gpus all`.")
    return "Run `adn-edge doctor` for a full report of this machine's CUDA, driver and bindings."


# --------------------------------------------------------------------------- selection

IMPLEMENTATIONS = ("cuda-python", "pycuda")
_MODULES = {"cuda-python": ("cuda.bindings.runtime", "cuda.cudart"), "pycuda": ("pycuda.driver",)}
_DISTRIBUTIONS = {"cuda-python": ("cuda-python", "cuda-bindings"), "pycuda": ("pycuda",)}


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
    return [k for k in IMPLEMENTATIONS if any(_importable(m) for m in _MODULES[k])]


def _open_binding(kind: str, device: int) -> CudaApi:
    if kind == "cuda-python":
        from adn_edge.backends.cuda.cuda_python import CudaPython

        return CudaPython(device)
    from adn_edge.backends.cuda.pycuda_driver import PyCuda

    return PyCuda(device)


def _start(kind: str, device: int) -> CudaApi:
    """One binding, any failure to start as :class:`CudaStartError` (a bad device index
    and other input problems stay what they are)."""
    try:
        return _open_binding(kind, device)
    except CudaStartError:
        raise
    except AdnError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a broken binding raises
        raise CudaStartError(kind, f"{kind} cannot start CUDA ({type(exc).__name__}: {exc}).") from None


def open_cuda(kind: str = "auto", device: int = 0) -> CudaApi:
    """Open the CUDA layer: ``cuda-python``, ``pycuda`` or ``auto`` (cuda-python first:
    it ships wheels and needs no per-thread context juggling; pycuda when cuda-python is
    absent or cannot start, e.g. a wheel newer than the JetPack CUDA)."""
    kind = kind.lower().replace("_", "-")
    if kind not in ("auto", *IMPLEMENTATIONS):
        raise AdnError(f"Unknown CUDA binding {kind!r}; choose auto, cuda-python or pycuda.")
    order = list(IMPLEMENTATIONS) if kind == "auto" else [kind]
    have = available_bindings()
    failures: list[CudaStartError] = []
    for k in order:
        if k not in have:
            continue
        try:
            return _start(k, device)
        except CudaStartError as exc:
            failures.append(exc)
            log.info("CUDA binding %s cannot start (%s); trying the next one.", k, exc.message)
    if failures:
        missing = [k for k in order if k not in have]
        tail = f" ({' and '.join(missing)} not installed)" if missing else ""
        if len(failures) == 1:
            only = failures[0]
            raise CudaStartError(only.binding, only.message + tail, only.error_name, only.hint)
        names = [f.error_name for f in failures if f.error_name]
        raise CudaStartError(
            "auto", "No CUDA binding could start: " + " ".join(f.message for f in failures) + tail,
            names[0] if names else None, " ".join(dict.fromkeys(f.hint or "" for f in failures)).strip() or None)
    wanted = "cuda-python or pycuda" if kind == "auto" else kind
    raise AdnError(f"The TensorRT path needs {wanted} to manage GPU memory and streams, and it is not installed.",
                   CUDA_INSTALL_HINT)


@dataclass(frozen=True)
class BindingReport:
    """What ``adn-edge doctor`` says about one binding."""

    name: str
    installed: bool
    version: str | None
    started: bool
    device: DeviceInfo | None = None
    error: str | None = None
    error_name: str | None = None
    hint: str | None = None

    def as_record(self) -> dict[str, Any]:
        dev = self.device
        return {"name": self.name, "installed": self.installed, "version": self.version, "starts": self.started,
                "device": None if dev is None else {
                    "name": dev.name, "compute_capability": dev.compute_capability, "sm_count": dev.sm_count,
                    "memory_mib": dev.memory_mib},
                "error": self.error, "error_name": self.error_name, "hint": self.hint}


def _dist_version(kind: str) -> str | None:
    for dist in _DISTRIBUTIONS[kind]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - broken metadata
            continue
    return None


def probe_bindings(device: int = 0) -> list[BindingReport]:
    """Every binding: installed? which version? does it start, and on which GPU? Each
    one is opened, asked for the device and closed; nothing else is touched."""
    have = available_bindings()
    out = []
    for k in IMPLEMENTATIONS:
        version = _dist_version(k)
        if k not in have:
            out.append(BindingReport(k, False, version, False, error="not installed"))
            continue
        try:
            api = _start(k, device)
        except AdnError as exc:
            out.append(BindingReport(k, True, version, False, error=exc.message,
                                     error_name=getattr(exc, "error_name", None), hint=exc.hint))
            continue
        try:
            out.append(BindingReport(k, True, version, True, api.device_info()))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out.append(BindingReport(k, True, version, False, error=f"{type(exc).__name__}: {exc}"))
        finally:
            with contextlib.suppress(Exception):
                api.close()
    return out
