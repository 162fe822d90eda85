"""INT8 calibration data: a folder of images -> batches preprocessed as in training.

Calibration measures activation ranges; feeding it images preprocessed differently
from training (another resize, no normalisation) yields scales for a distribution the
network never sees and silently costs accuracy. The recipe is read from the manifest's
``input`` record, the one place export wrote it:

* resize so the shorter side is ``input.resize`` (default ``floor(max(H, W) / crop_pct)``
  with ``crop_pct`` 0.875: 256 for 224, the torchvision/timm evaluation recipe),
  bilinear unless ``input.interpolation`` says otherwise;
* centre crop to the manifest's ``H x W`` (torchvision's rounding);
* scale to [0, 1] (``input.scale``; 1.0 when the mean is given in 0..255 units);
* subtract ``mean``, divide by ``std`` per channel; HWC -> CHW, float32.

Pillow and numpy only: calibration runs on the device, which has no torch.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from adn_edge.errors import AdnError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff"})
RECOMMENDED_IMAGES = 300
"""NVIDIA's guidance for entropy calibration of ImageNet classifiers: about 500
images; fewer than a few hundred give noisy ranges."""
DEFAULT_CROP_PCT = 0.875
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(w, h) after resizing the shorter side to ``shorter`` (torchvision's rule:
    the long side is truncated, not rounded)."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def center_crop_box(width: int, height: int, crop_w: int, crop_h: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a centred crop (torchvision rounds the offsets)."""
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return left, top, left + crop_w, top + crop_h


@dataclass(frozen=True)
class Preprocess:
    """The model's evaluation preprocessing, from ``manifest["input"]``."""

    height: int
    width: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float
    interpolation: str = "bilinear"

    @classmethod
    def from_manifest(cls, input_spec: Mapping[str, Any]) -> Preprocess:
        shape = input_spec.get("shape")
        if not isinstance(shape, Sequence) or len(shape) != 4 or shape[1] != 3:
            raise AdnError(f"Calibration needs a 3-channel NCHW input, but the manifest says {shape!r}.")
        h, w = shape[2], shape[3]
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            raise AdnError(f"Calibration needs a fixed image size, but the manifest's input is {shape!r}.")
        mean, std = input_spec.get("mean"), input_spec.get("std")
        if not (isinstance(mean, Sequence) and isinstance(std, Sequence) and len(mean) == 3 and len(std) == 3):
            raise AdnError("The manifest's input record lacks a 3-value mean and std, so calibration images "
                           "cannot be normalised as in training.", "Re-export the model directory.")
        if any(float(s) <= 0 for s in std):
            raise AdnError(f"The manifest's input std {list(std)} has a non-positive value.")
        crop_pct = float(input_spec.get("crop_pct") or DEFAULT_CROP_PCT)
        resize = input_spec.get("resize")
        if resize is None:
            resize = int(math.floor(max(h, w) / crop_pct))
        if not isinstance(resize, int) or resize < 1:
            raise AdnError(f"The manifest's input resize {resize!r} is not a positive size.")
        scale = input_spec.get("scale")
        if scale is None:
            scale = 1.0 / 255.0 if max(abs(float(m)) for m in mean) <= 1.0 else 1.0
        interp = str(input_spec.get("interpolation") or "bilinear").lower()
        if interp not in _INTERPOLATIONS:
            raise AdnError(f"The manifest's input interpolation {interp!r} is not one of {', '.join(_INTERPOLATIONS)}.")
        return cls(h, w, resize, (float(mean[0]), float(mean[1]), float(mean[2])),
                   (float(std[0]), float(std[1]), float(std[2])), float(scale), interp)

    def as_record(self) -> dict[str, Any]:
        return {"resize": self.resize, "crop": [self.height, self.width], "mean": list(self.mean),
                "std": list(self.std), "scale": self.scale, "interpolation": self.interpolation}

    def __call__(self, image: Any) -> np.ndarray:
        """A PIL image -> float32 CHW array."""
        from PIL import Image

        resample = {
            "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
        }[self.interpolation]
        img = image.convert("RGB")
        new_w, new_h = resized_size(img.width, img.height, self.resize)
        if (new_w, new_h) != (img.width, img.height):
            img = img.resize((new_w, new_h), resample)
        img = img.crop(center_crop_box(new_w, new_h, self.width, self.height))
        arr = np.asarray(img, dtype=np.float32) * np.float32(self.scale)
        arr = (arr - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Every image below ``folder`` (recursively: ImageNet-style class folders), sorted."""
    folder = Path(folder)
    if not folder.exists():
        raise AdnError(f"The calibration folder {str(folder)!r} does not exist.",
                       "Pass --calib a folder of training images (a few hundred JPEG/PNG files).")
    if not folder.is_dir():
        raise AdnError(f"--calib {str(folder)!r} is a file; it must be a folder of images.")
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and not p.name.startswith("."))
    if not images:
        raise AdnError(
            f"The calibration folder {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).",
            "Copy a few hundred training images into it (sub-folders are searched too).",
        )
    return images


def load_image(path: Path, preprocess: Preprocess) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return preprocess(img)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise AdnError(f"The calibration image {str(path)!r} cannot be read ({exc}).",
                       "Remove or replace it; every file in the --calib folder must be a readable image.") from None


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
