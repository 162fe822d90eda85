"""INT8 calibration data: a folder of images -> batches preprocessed as in training.

Calibration measures activation ranges; feeding it images preprocessed differently
from training (another resize, no normalisation) yields scales for a distribution the
network never sees and silently costs accuracy. The recipe is the manifest's, applied
by :class:`adn_edge.modeldir.preprocess.Preprocess`, the same code evaluation uses.

Pillow and numpy only: calibration runs on the device, which has no torch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.modeldir.preprocess import Preprocess, list_images, load_image

RECOMMENDED_IMAGES = 300
"""NVIDIA's guidance for entropy calibration of ImageNet classifiers: about 500
images; fewer than a few hundred give noisy ranges."""
@dataclass
class CalibrationSet:
    """Fixed-size batches for TensorRT's calibrator, read lazily (a few hundred
    224x224 float32 images would otherwise hold ~60 MB for the whole build)."""

    folder: Path
    preprocess: Preprocess
    batch_size: int
    images: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _digest: str | None = None

    @classmethod
    def open(cls, folder: str | os.PathLike[str], preprocess: Preprocess, batch_size: int = 8) -> CalibrationSet:
        if batch_size < 1:
            raise AdnError(f"The calibration batch size must be at least 1 (got {batch_size}).")
        images = list_images(folder)
        warnings: list[str] = []
        if len(images) < RECOMMENDED_IMAGES:
            warnings.append(
                f"Only {len(images)} calibration images in {str(folder)!r}; INT8 ranges from fewer than "
                f"{RECOMMENDED_IMAGES} images are noisy and may cost accuracy (about 500 are recommended).")
        bs = min(batch_size, len(images))
        dropped = len(images) % bs
        if dropped:
            warnings.append(f"The last {dropped} calibration image(s) do not fill a batch of {bs} and are not used.")
        return cls(Path(folder), preprocess, bs, images, warnings)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch_size, 3, self.preprocess.height, self.preprocess.width)

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def batches(self) -> Iterator[np.ndarray]:
        """Full batches only: TensorRT's calibrator has one fixed batch size."""
        for b in range(len(self)):
            chunk = self.images[b * self.batch_size:(b + 1) * self.batch_size]
            yield np.stack([load_image(p, self.preprocess) for p in chunk]).astype(np.float32, copy=False)

    def digest(self) -> str:
        """sha256 over the images' relative names and bytes, plus the preprocessing:
        decides whether a calibration cache still describes these images."""
        if self._digest is None:
            h = hashlib.sha256()
            h.update(repr(sorted(self.preprocess.as_record().items())).encode())
            for p in self.images:
                h.update(str(p.relative_to(self.folder)).encode() + b"\0")
                with open(p, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
            self._digest = h.hexdigest()
        return self._digest

    def as_record(self) -> dict[str, Any]:
        return {"images": len(self.images), "batch_size": self.batch_size, "batches": len(self),
                "images_sha256": self.digest(), "preprocess": self.preprocess.as_record()}


class CalibrationData(Protocol):
    """What the INT8 calibrator reads: fixed-size float32 batches of the graph's input.
    :class:`CalibrationSet` (images) and
    :class:`~adn_edge.backends.tensorrt.segment_calibration.SegmentCalibration` (feature maps)."""

    batch_size: int
    images: list[Path]
    warnings: list[str]

    @property
    def shape(self) -> tuple[int, ...]: ...
    def __len__(self) -> int: ...
    def batches(self) -> Iterator[np.ndarray]: ...
    def digest(self) -> str: ...
    def as_record(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CalibrationPlan:
    """How one INT8 build gets its scales: from ``data`` through the entropy
    calibrator, or from ``cache_path`` when ``reuse_cache`` says the cache is valid.
    TensorRT writes the cache back after calibrating."""

    cache_path: Path
    reuse_cache: bool
    data: CalibrationData | None = None
