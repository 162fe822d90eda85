"""One opened model directory: its path and its manifest, read and validated once.

A command that touches a directory several times (the demo: evaluate, look up the
preprocessing, bench, open a switcher) hands one :class:`ModelDir` along instead of
a path that every step re-reads and re-validates. Every function that takes a model
directory accepts a path or a ``ModelDir`` (:func:`open_dir` turns either into the
latter). It is a snapshot: a process that writes the directory reloads it
(:meth:`ModelDir.reload`) rather than trusting an old copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adn_edge.modeldir import manifest as manifest_mod
from adn_edge.modeldir.preprocess import Preprocess


@dataclass(frozen=True)
class ModelDir:
    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> ModelDir:
        path = Path(directory)
        return cls(path, manifest_mod.load(path))

    def reload(self) -> ModelDir:
        return ModelDir.open(self.path)

    @property
    def arch(self) -> str:
        return str(self.manifest["arch"])

    @property
    def num_stages(self) -> int:
        return int(self.manifest["num_stages"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    def preprocess(self) -> Preprocess:
        """How images become this model's input (the manifest's recipe)."""
        return Preprocess.from_manifest(self.manifest["input"])

    def resolve_codes(self, subnets: str | Iterable[str] | None,
                      present: dict[str, Any] | None = None) -> list[str]:
        return manifest_mod.resolve_codes(self.manifest, subnets, present)

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def open_dir(directory: str | os.PathLike[str] | ModelDir) -> ModelDir:
    """``directory`` as an opened :class:`ModelDir` (read and validated now, unless it already is one)."""
    return directory if isinstance(directory, ModelDir) else ModelDir.open(directory)
