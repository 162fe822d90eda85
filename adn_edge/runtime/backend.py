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
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.manifest import FILENAME


@dataclass(frozen=True)
class BackendSpec:
    name: str
    factory: Callable[..., Backend]
    available: Callable[[], str | None]
    """Returns None when usable here, else the reason it is not (shown to the user)."""
    priority: int
    """Higher wins in ``auto`` (TensorRT above ONNX Runtime above torch)."""


_BACKENDS: dict[str, BackendSpec] = {}


def register_backend(name: str, available: Callable[[], str | None], priority: int) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        _BACKENDS[name] = BackendSpec(name, cls, available, priority)
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def backend_specs() -> dict[str, BackendSpec]:
    return dict(_BACKENDS)


def available_backends() -> list[str]:
    """Names of the backends usable on this machine, best (``auto``'s choice) first.

    Asking each backend is cheap and imports nothing heavy: ``available`` callables
    look for packages without importing them, so listing never pulls in torch.
    """
    specs = sorted(_BACKENDS.values(), key=lambda s: -s.priority)
    return [s.name for s in specs if s.available() is None]


def unavailable_reasons() -> dict[str, str]:
    """Why each registered backend cannot run here (for error messages and ``describe``)."""
    out = {}
    for spec in _BACKENDS.values():
        reason = spec.available()
        if reason is not None:
            out[spec.name] = reason
    return out


def read_verified(directory: str | Path, record: dict[str, Any]) -> bytes:
    """The bytes of a manifest-listed file, checked against its sha256 as they are read.

    Hashing the very bytes that are then handed to the inference library (rather than
    hashing the file and re-reading it) leaves no window in which the file could
    change between the check and the load, and reads each artifact once.
    """
    p = Path(directory) / str(record["path"])
    try:
        data: bytes = p.read_bytes()
    except FileNotFoundError:
        raise AdnError(f"{record['path']} is listed in {FILENAME} but missing from {str(directory)!r}.",
                       "Re-export (or re-build) the model directory.") from None
    except OSError as exc:
        raise AdnError(f"{record['path']} in {str(directory)!r} cannot be read: {exc.strerror}.") from None
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise AdnError(
            f"{record['path']} in {str(directory)!r} does not match the sha256 recorded in {FILENAME} "
            "(it was modified or truncated after export).",
            "Re-export (or re-build) it; adn-edge refuses to run a file it cannot verify.")
    return data


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
    (with :func:`read_verified`); otherwise the switcher hashes :meth:`artifacts`
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
