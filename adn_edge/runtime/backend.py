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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


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
        cls.name = name
        return cls

    return deco


def backend_specs() -> dict[str, BackendSpec]:
    return dict(_BACKENDS)


class Backend(abc.ABC):
    """Runs the sub-networks of one model directory.

    Constructed with the model directory, its loaded manifest and the codes to hold.
    ``run`` may be called from several threads at once; a backend that cannot run
    two inferences concurrently (TensorRT with one shared activation buffer)
    serialises them itself with a lock that ``EngineSwitcher.switch`` never takes.
    """

    name: ClassVar[str] = "?"

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
