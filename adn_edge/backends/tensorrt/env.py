"""Is TensorRT here, which version, on which GPU? Lazily, with a useful answer when not.

TensorRT is an optional, platform-specific dependency (JetPack's apt packages on a
Jetson, NVIDIA's wheels on x86), so nothing imports it at module level except the
one thin module that needs it. When it is missing, the user gets what to install on
each platform instead of an ``ImportError`` (exit 2, like every input problem: the
fix is on their side).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from adn_edge.errors import AdnError

if TYPE_CHECKING:
    from adn_edge.backends.cuda import DeviceInfo


@dataclass(frozen=True)
class Environment:
    """The TensorRT version and GPU that engines are built for (or loaded on).

    The GPU is its name and compute capability plus its SM count and memory: every
    Orin module reports ``Orin (nvgpu)``, sm 8.7, so without them an engine built (and
    tuned) on a 16-SM AGX Orin would pass for one built on an 8-SM Orin Nano. None
    means unknown (records written before these were kept)."""

    tensorrt_version: str
    gpu: str
    compute_capability: str
    sm_count: int | None = None
    memory_mib: int | None = None

    @property
    def trt_major(self) -> int:
        return tensorrt_major(self.tensorrt_version)

    @classmethod
    def of(cls, tensorrt_version: str, device: DeviceInfo) -> Environment:
        return cls(tensorrt_version, device.name, device.compute_capability, device.sm_count, device.memory_mib)

    def as_record(self) -> dict[str, str | int | None]:
        return {"tensorrt_version": self.tensorrt_version, "gpu": self.gpu,
                "compute_capability": self.compute_capability, "sm_count": self.sm_count,
                "gpu_memory_mib": self.memory_mib}

    def describe_gpu(self) -> str:
        extra = ", ".join(x for x in (f"{self.sm_count} SMs" if self.sm_count else "",
                                      f"{self.memory_mib} MiB" if self.memory_mib else "") if x)
        return f"{self.gpu} (compute capability {self.compute_capability}{', ' + extra if extra else ''})"


def tensorrt_major(version: str) -> int:
    head = str(version).split(".", 1)[0]
    try:
        return int(head)
    except ValueError:
        raise AdnError(f"Cannot read the TensorRT version {version!r}.") from None


MIN_MAJOR = 10

INSTALL_HINT = (
    "On a Jetson, TensorRT comes with JetPack (6.1/6.2: TensorRT 10.3, CUDA 12.6; 7.2: TensorRT 10.16, CUDA 13.2): "
    "`sudo apt-get install python3-libnvinfer python3-libnvinfer-dev` for the system Python (in a virtual environment "
    "use --system-site-packages), plus a CUDA binding matching the JetPack CUDA: `pip install 'cuda-python==12.6.*'` "
    "on JetPack 6.1/6.2, `pip install 'cuda-python==13.2.*'` on JetPack 7.2, or `pip install pycuda`. On an x86 "
    "machine with an NVIDIA GPU: `pip install tensorrt-cu12 'cuda-python>=12,<13'` for a CUDA 12 driver "
    "(`pip install 'adn-edge[tensorrt]'`), or `pip install tensorrt-cu13 'cuda-python>=13,<14'` for a CUDA 13 driver "
    "(`pip install 'adn-edge[tensorrt-cu13]'`). `adn-edge doctor` says which of these this machine needs. Build "
    "engines on the device that runs them: they are specific to its GPU and TensorRT version."
)

API_GENERATIONS = {10: "10.x (builder flags, INT8 calibrator)", 11: "11.x (strongly typed networks only)"}


def api_generation(version: str) -> str:
    """Which of the two TensorRT APIs adn-edge speaks this version is (docs/tensorrt.md)."""
    major = tensorrt_major(version)
    if major < MIN_MAJOR:
        return f"{major}.x (too old: adn-edge needs {MIN_MAJOR}+)"
    return API_GENERATIONS.get(major, f"{major}.x (newer than adn-edge knows; treated as 11.x)")


def missing_tensorrt(exc: BaseException | None = None) -> AdnError:
    why = f" (import tensorrt: {exc})" if exc is not None else ""
    return AdnError(f"TensorRT is not installed in this Python environment{why}, so engines cannot be built or run.",
                    INSTALL_HINT)


def import_tensorrt() -> ModuleType:
    """``import tensorrt`` or an :class:`AdnError` saying what to install."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise missing_tensorrt(exc) from None
    version = str(getattr(trt, "__version__", "0"))
    if tensorrt_major(version) < MIN_MAJOR:
        raise AdnError(
            f"TensorRT {version} is installed, but adn-edge needs TensorRT {MIN_MAJOR} or newer (named-tensor API, "
            "user-managed execution-context memory).",
            "On a Jetson, move to JetPack 6.1 or newer (TensorRT 10.3); on x86, pip install -U tensorrt-cu12.",
        )
    return trt


def tensorrt_version() -> str:
    return str(import_tensorrt().__version__)


def gpu_info(device: int = 0, cuda: str = "auto") -> DeviceInfo:
    """The GPU through the CUDA layer the runtime uses, so that build and runtime name
    it identically. Needs no CUDA context and leaves none behind."""
    from adn_edge.backends.cuda import open_cuda

    api = open_cuda(cuda, device)
    try:
        return api.device_info()
    finally:
        api.close()


def environment(device: int = 0, cuda: str = "auto") -> Environment:
    """The (TensorRT, GPU) pair engines are built for here; AdnError when either is missing."""
    return Environment.of(tensorrt_version(), gpu_info(device, cuda))


def unavailable_reason() -> str | None:
    """None when the TensorRT backend can run here, else why not (for ``backend="auto"``)."""
    try:
        import_tensorrt()
    except AdnError as exc:
        return exc.message
    from adn_edge.backends.cuda import available_bindings

    if not available_bindings():
        return "no CUDA binding for Python (cuda-python or pycuda) is installed"
    try:
        gpu_info()
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"no usable CUDA GPU ({exc})"
    return None
