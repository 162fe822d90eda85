"""How an image becomes model input: the one preprocessing spec, read from the manifest.

Export records the recipe in ``manifest["input"]`` (the model was trained and
officially evaluated with it); every consumer applies it through :class:`Preprocess`:
evaluation of exported directories, ImageFolder data, ONNX Runtime INT8 calibration,
TensorRT INT8 calibration, and a robot's own camera frames. One implementation means
calibration sees exactly the pixels evaluation sees (a different resize rounding or a
missing normalisation gives scales for a distribution the network never meets).

The recipe (torchvision's evaluation transform):

* resize so the shorter side is ``resize`` (default ``floor(max(H, W) / crop_pct)``
  with ``crop_pct`` 0.875: 256 for 224), with ``interpolation`` (bilinear, or
  bicubic for Swin-T as officially evaluated); the long side is truncated;
* centre crop to ``H x W`` (offsets rounded as torchvision does);
* scale to [0, 1] (``scale``; 1.0 when the mean is given in 0..255 units);
* subtract ``mean``, divide by ``std`` per channel; HWC -> CHW, float32.

Pillow and numpy only, no torch: it runs on the device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.errors import AdnError

DEFAULT_CROP_PCT = 0.875
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".webp", ".tif", ".tiff"})
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")


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


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


@dataclass(frozen=True)
class Preprocess:
    """The evaluation preprocessing of one model (see the module docstring)."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int | None = None
    """Shorter side before the centre crop; None: ``floor(max(H, W) / 0.875)``."""
    interpolation: str = "bilinear"
    scale: float | None = None
    """Pixel scale before normalising; None: 1/255 when the mean is in [0, 1] units."""

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise AdnError(f"The input interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}.")
        if self.resize is None:
            object.__setattr__(self, "resize", int(math.floor(max(self.height, self.width) / DEFAULT_CROP_PCT)))
        if self.scale is None:
            object.__setattr__(self, "scale", 1.0 / 255.0 if max(abs(m) for m in self.mean) <= 1.0 else 1.0)

    @classmethod
    def square(cls, size: int, mean: Sequence[float], std: Sequence[float], resize: int | None = None,
               interpolation: str = "bilinear") -> Preprocess:
        return cls(int(size), int(size), _triple(mean), _triple(std), resize, interpolation)

    @classmethod
    def from_manifest(cls, input_spec: Mapping[str, Any]) -> Preprocess:
        """The recipe of ``manifest["input"]``; a record that cannot be applied is an
        :class:`AdnError` naming the field."""
        shape = input_spec.get("shape")
        if not isinstance(shape, Sequence) or len(shape) != 4 or shape[1] != 3:
            raise AdnError(f"Preprocessing needs a 3-channel NCHW input, but the manifest says {shape!r}.")
        h, w = shape[2], shape[3]
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            raise AdnError(f"Preprocessing needs a fixed image size, but the manifest's input is {shape!r}.")
        mean, std = input_spec.get("mean"), input_spec.get("std")
        if not (isinstance(mean, Sequence) and isinstance(std, Sequence) and len(mean) == 3 and len(std) == 3):
            raise AdnError("The manifest's input record lacks a 3-value mean and std, so images "
                           "cannot be normalised as in training.", "Re-export the model directory.")
        if any(float(s) <= 0 for s in std):
            raise AdnError(f"The manifest's input std {list(std)} has a non-positive value.")
        resize = input_spec.get("resize")
        if resize is None:
            crop_pct = float(input_spec.get("crop_pct") or DEFAULT_CROP_PCT)
            resize = int(math.floor(max(h, w) / crop_pct))
        if not isinstance(resize, int) or isinstance(resize, bool) or resize < 1:
            raise AdnError(f"The manifest's input resize {resize!r} is not a positive size.")
        scale = input_spec.get("scale")
        interp = str(input_spec.get("interpolation") or "bilinear").lower()
        if interp not in INTERPOLATIONS:
            raise AdnError(f"The manifest's input interpolation {interp!r} is not one of {', '.join(INTERPOLATIONS)}.")
        return cls(h, w, _triple(mean), _triple(std), resize, interp, None if scale is None else float(scale))

    @property
    def input_size(self) -> int:
        """The side of a square input (training and the built-in data use square images)."""
        if self.height != self.width:
            raise AdnError(f"This model's input is {self.height}x{self.width}, not square.")
        return self.height

    def as_record(self) -> dict[str, Any]:
        return {"resize": self.resize, "crop": [self.height, self.width], "mean": list(self.mean),
                "std": list(self.std), "scale": self.scale, "interpolation": self.interpolation}

    def normalise_array(self, images: np.ndarray) -> np.ndarray:
        """``[..., 3, H, W]`` pixels already at the crop size, in the scale's units ->
        normalised float32 (the step shared with tensors that never were images)."""
        x = np.asarray(images, dtype=np.float32) * np.float32(self.scale)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    def __call__(self, image: Any) -> np.ndarray:
        """A PIL image -> float32 CHW array (resize, centre crop, scale, normalise)."""
        from PIL import Image

        resample = {
            "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
        }[self.interpolation]
        img = image.convert("RGB")
        assert self.resize is not None  # set in __post_init__
        new_w, new_h = resized_size(img.width, img.height, max(self.resize, self.height, self.width))
        if (new_w, new_h) != (img.width, img.height):
            img = img.resize((new_w, new_h), resample)
        img = img.crop(center_crop_box(new_w, new_h, self.width, self.height))
        return self.normalise_array(np.asarray(img, dtype=np.float32).transpose(2, 0, 1))


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
