"""The small interface every inference backend implements, and their registry.

A backend holds *every* requested sub-network ready to run (sessions created,
engines deserialised, buffers allocated) after construction, and runs any of them
by code. It knows nothing about switching: :class:`~adn_edge.runtime.EngineSwitcher`
decides which code runs. Backends register themselves by name (like timm models),
so ``backend="auto"`` and the CLI's ``--backend`` read one table.

Module-level imports here are numpy and the standard library only: the runtime must
import on a robot without torch.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adn_edge.errors import AdnError


BUILTIN_BACKENDS: dict[str, str] = {
    "tensorrt": "adn_edge.backends.tensorrt.runner",
    "tensorrt-segmented": "adn_edge.backends.tensorrt.runner",
    "onnxruntime": "adn_edge.backends.onnxruntime.runner",
    "onnxruntime-segmented": "adn_edge.backends.onnxruntime.segmented",
    "torch": "adn_edge.backends.torch.runner",
}
"""Where each backend shipped with adn-edge lives. The runtime names them as strings
and imports them on first use of the registry (as timm and Polygraphy load optional
parts lazily), so that the runtime depends on the interface only and a backend whose
module fails to import is reported, never a reason for the runtime import to fail."""


@dataclass(frozen=True)
class BackendSpec:
    name: str
    factory: Callable[..., Backend]
    available: Callable[[], str | None]
    """Returns None when usable here, else the reason it is not (shown to the user)."""
    priority: int
    """Higher wins in ``auto`` (TensorRT above ONNX Runtime above torch)."""

    @property
    def segmented(self) -> bool:
        return bool(getattr(self.factory, "segmented", False))


_BACKENDS: dict[str, BackendSpec] = {}
_IMPORT_PROBLEMS: dict[str, str] = {}
_loaded = False


def register_backend(name: str, available: Callable[[], str | None], priority: int) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        _BACKENDS[name] = BackendSpec(name, cls, available, priority)
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def _load_builtins() -> None:
    """Import every built-in backend module once; record (not raise) why one cannot."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name, module in BUILTIN_BACKENDS.items():
        base = name.removesuffix("-segmented")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # the module exists but a dependency of it is missing
            _IMPORT_PROBLEMS[base] = f"{module} needs {exc.name!r}, which is not installed"
        except ImportError as exc:
            _IMPORT_PROBLEMS[base] = f"{module} failed to import: {exc}"


def backend_specs() -> dict[str, BackendSpec]:
    _load_builtins()
    return dict(_BACKENDS)


def available_backends() -> list[str]:
    """Names of the backends usable on this machine, best (``auto``'s choice) first.

    Asking each backend is cheap and imports nothing heavy: ``available`` callables
    look for packages without importing them, so listing never pulls in torch.
    """
    specs = sorted(backend_specs().values(), key=lambda s: -s.priority)
    return [s.name for s in specs if s.available() is None]


def unavailable_reasons() -> dict[str, str]:
    """Why each registered backend cannot run here (for error messages and ``describe``)."""
    out = {}
    for spec in backend_specs().values():
        reason = spec.available()
        if reason is not None:
            out[spec.name] = reason
    return out


def backend_problems() -> dict[str, str]:
    """Why each backend cannot run here: missing packages, and modules that failed to import."""
    return {**unavailable_reasons(), **_IMPORT_PROBLEMS}


def resolve_backend(backend: str, *, segmented: bool = False, manifest: Mapping[str, Any] | None = None,
                    device: str | None = None) -> BackendSpec:
    """The one rule that turns ``backend=...`` (``auto`` or a name) into a backend.

    ``auto`` takes the highest-priority backend of the mode (segmented or not) that
    (1) is installed here (``available``) and (2) can run *this* directory on
    ``device`` (:meth:`Backend.unready`: TensorRT only where engines are built and
    the device is a GPU, ONNX Runtime on ``cuda`` only with its CUDA provider, ...).
    Priorities: TensorRT 30 > ONNX Runtime 20 > torch 10. ``device`` is ``cpu``,
    ``cuda`` (``orin`` counts as ``cuda``) or None (any). ``EngineSwitcher.open``
    and ``adn-edge bench`` both ask here, so they never disagree.

    A named backend is taken as asked (an error says why it cannot run); in
    segmented mode ``onnxruntime`` means ``onnxruntime-segmented``.
    """
    specs = backend_specs()
    name = str(backend).strip().lower()
    device = None if device in (None, "auto") else ("cpu" if str(device).lower() == "cpu" else "cuda")
    if name == "auto":
        ordered = sorted((s for s in specs.values() if s.segmented == segmented), key=lambda s: -s.priority)
        reasons = {}
        for spec in ordered:
            why = spec.available()
            if why is None:
                why = spec.factory.unready(manifest, device)  # type: ignore[attr-defined]
            if why is None:
                return spec
            reasons[spec.name] = why
        reasons.update(_IMPORT_PROBLEMS)
        detail = "; ".join(f"{k}: {v}" for k, v in reasons.items()) or "none is registered"
        where = f" on {device}" if device else ""
        raise AdnError(f"No {'segmented ' if segmented else ''}inference backend can run this model directory"
                       f"{where} ({detail}).",
                       "pip install onnxruntime (the portable one), or TensorRT on an NVIDIA device.")
    if segmented and not name.endswith("-segmented"):
        name += "-segmented"
    found = specs.get(name)
    if found is None:
        base = name.removesuffix("-segmented")
        if segmented and base in specs:
            modes = ", ".join(sorted(n.removesuffix("-segmented") for n, s in specs.items() if s.segmented))
            raise AdnError(f"The {base} backend has no segmented mode (segmented mode runs on: {modes}).",
                           "Use backend='onnxruntime' with segmented=True, or segmented=False.")
        if base in _IMPORT_PROBLEMS:
            raise AdnError(f"The {base} backend cannot be loaded: {_IMPORT_PROBLEMS[base]}.")
        known = ", ".join(["auto", *sorted(n for n in specs if not n.endswith("-segmented"))])
        raise AdnError(f"Unknown backend {backend!r}.", f"Choose one of: {known}.")
    why = found.available()
    if why is not None:
        raise AdnError(f"The {found.name} backend cannot run here: {why}",
                       "Pick another with backend=... (backend='auto' chooses the best available).")
    return found


def resident_bytes() -> int | None:
    """This process's resident set size (Linux), to measure memory sharing, not assume it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Backend(abc.ABC):
    """Runs the sub-networks of one model directory.

    Constructed with the model directory, its loaded manifest and the codes to hold.
    ``run`` may be called from several threads at once; a backend that cannot run
    two inferences concurrently (TensorRT with one shared activation buffer)
    serialises them itself with a lock that ``EngineSwitcher.switch`` never takes.
    """

    name: ClassVar[str] = "?"
    last_device_ms: float | None = None
    """GPU time of the last ``run`` between CUDA events around the compute (inputs
    on the device, before the copy back), for backends that measure it; ``bench``
    reports it beside the host wall-clock. None on CPUs."""
    segmented: ClassVar[bool] = False
    """True for backends that run a sub-network as a chain of per-stage graphs
    (``EngineSwitcher.open(..., segmented=True)``); ``auto`` never picks them otherwise."""
    verifies_artifacts: ClassVar[bool] = False
    """True when the backend checks every file it reads against the manifest itself
    (with :func:`adn_edge.modeldir.manifest.read_verified`); otherwise the switcher hashes :meth:`artifacts`
    before constructing it, so no backend can run an unverified file."""

    @classmethod
    def artifacts(cls, manifest: dict[str, Any], codes: Sequence[str], **options: Any) -> list[dict[str, Any]]:
        """Manifest records (``path`` + ``sha256``) of the files this backend will read.

        The default is every file and engine listed for ``codes``: strict, and right
        for any backend that does not say more precisely what it needs.
        """
        out = []
        for code in codes:
            entry = manifest["subnets"].get(code, {})
            out += list(entry.get("files", {}).values()) + list(entry.get("engines", {}).values())
        return out

    @classmethod
    def unready(cls, manifest: Mapping[str, Any] | None, device: str | None) -> str | None:
        """Why ``auto`` should not pick this backend for ``manifest`` on ``device``
        (``cpu``/``cuda``/None), or None. Installed-ness is ``available``'s job; this
        asks about the directory and the device (e.g. TensorRT: no engines built)."""
        return None

    def __init__(self, directory: Path, manifest: dict[str, Any], codes: Sequence[str], **options: Any) -> None:
        self.directory = Path(directory)
        self.manifest = manifest
        self.codes = list(codes)

    @abc.abstractmethod
    def run(self, code: str, batch: np.ndarray) -> np.ndarray:
        """Logits of sub-network ``code`` for a float32 NCHW batch (already validated)."""

    def warmup(self, code: str, batch: np.ndarray) -> None:
        self.run(code, batch)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions/engines/buffers. Idempotent."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "subnets": list(self.codes)}
