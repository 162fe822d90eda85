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

from adn_edge.errors import AdnError

@dataclass(frozen=True)
class Environment:
    """The TensorRT version and GPU that engines are built for (or loaded on)."""

    tensorrt_version: str
    gpu: str
    compute_capability: str

    @property
    def trt_major(self) -> int:
        return tensorrt_major(self.tensorrt_version)

    def as_record(self) -> dict[str, str]:
        return {"tensorrt_version": self.tensorrt_version, "gpu": self.gpu,
                "compute_capability": self.compute_capability}


def tensorrt_major(version: str) -> int:
    head = str(version).split(".", 1)[0]
    try:
        return int(head)
    except ValueError:
        raise AdnError(f"Cannot read the TensorRT version {version!r}.") from None


MIN_MAJOR = 10

INSTALL_HINT = (
    "On a Jetson (JetPack 6.1+, TensorRT 10.3): `sudo apt-get install python3-libnvinfer python3-libnvinfer-dev` "
    "(JetPack's TensorRT for the system Python; in a virtual environment use --system-site-packages), plus a CUDA "
    "binding for CUDA 12: `pip install 'cuda-python>=12,<13'` or `pip install pycuda`. On an x86 machine with an "
    "NVIDIA GPU: `pip install tensorrt-cu12 'cuda-python>=12,<13'` (or `pip install 'adn-edge[tensorrt]'`). "
    "Build engines on the device that runs them: they are specific to its GPU and TensorRT version."
)


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


def gpu_info(device: int = 0, cuda: str = "auto") -> tuple[str, str]:
    """(GPU name, compute capability "8.7") through the CUDA layer the runtime uses,
    so that build and runtime name the GPU identically."""
    from adn_edge.backends.cuda import open_cuda

    api = open_cuda(cuda, device)
    try:
        major, minor = api.compute_capability()
        return api.device_name(), f"{major}.{minor}"
    finally:
        api.close()


def environment(device: int = 0, cuda: str = "auto") -> Environment:
    """The (TensorRT, GPU) pair engines are built for here; AdnError when either is missing."""
    version = tensorrt_version()
    name, cc = gpu_info(device, cuda)
    return Environment(version, name, cc)


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
