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

Numpy only, no torch: it runs on the device. A robot's camera frame (an HWC uint8
numpy array, RGB or BGR) goes through :meth:`Preprocess.batch`, which resizes with a
numpy restatement of Pillow's resampling (:func:`resize_crop`: the same filters and
fixed-point arithmetic, a horizontal then a vertical pass, bit-exact against Pillow
doing those two passes), so a frame becomes the pixels that training and evaluation
get from Pillow (``ImageFolder``, ``adn-edge eval``). A Pillow build that runs the
two passes of a resize in the other order rounds its intermediate differently: at
most 1 grey level apart with bilinear filters (tests/modeldir/test_preprocess.py).
Pillow is needed only to pass PIL images::

    from adn_edge.modeldir.preprocess import Preprocess

    prep = Preprocess.from_manifest("engines/resnet50")   # a model directory (or its manifest)
    x = prep.batch(frame, bgr=True)                        # HWC uint8 (OpenCV: BGR) -> [1, 3, H, W] float32
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


# --------------------------------------------------------------------------- resampling
#
# Pillow's resize (libImaging/Resample.c, and Geometry.c for "nearest") restated with
# numpy, for frames that arrive as arrays on a robot without Pillow. The arithmetic is
# the same (double-precision filter weights normalised per output pixel, rounded to
# 22-bit fixed point; a horizontal then a vertical pass, each rounded and clipped to
# uint8), so the pixels equal Pillow's; tests/modeldir/test_preprocess.py compares them.

_PRECISION_BITS = 32 - 8 - 2


def _box_filter(x: np.ndarray) -> np.ndarray:
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


def _bilinear_filter(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic_filter(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _sinc(x: np.ndarray) -> np.ndarray:
    y = x * math.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0.0, 1.0, np.sin(y) / y)


def _lanczos_filter(x: np.ndarray) -> np.ndarray:
    return np.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3), 0.0)


def _hamming_filter(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    y = x * math.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.sin(y) / y * (float(np.float32(0.54)) + float(np.float32(0.46)) * np.cos(y))
    return np.where(x == 0.0, 1.0, np.where(x >= 1.0, 0.0, v))


_FILTERS = {
    "box": (_box_filter, 0.5), "bilinear": (_bilinear_filter, 1.0), "hamming": (_hamming_filter, 1.0),
    "bicubic": (_bicubic_filter, 2.0), "lanczos": (_lanczos_filter, 3.0),
}


def _coefficients(in_size: int, out_size: int, interpolation: str, first: int,
                  count: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices ``[count, taps]`` and fixed-point weights (int32, same shape) of
    output pixels ``first .. first + count - 1`` along one axis (Pillow's
    ``precompute_coeffs`` and ``normalize_coeffs_8bpc``; unused taps weigh 0)."""
    filt, base_support = _FILTERS[interpolation]
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    taps = int(math.ceil(support)) * 2 + 1
    center = (np.arange(first, first + count, dtype=np.float64) + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    j = np.arange(taps)
    weights = filt(((j[None, :] + xmin[:, None]) - center[:, None] + 0.5) * ss)
    weights = np.where(j[None, :] < xmax[:, None], weights, 0.0)
    total = np.zeros(count)
    for t in range(taps):  # summed in order, as in C: the fixed-point rounding depends on it
        total = total + weights[:, t]
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(total[:, None] != 0.0, weights / total[:, None], weights)
    one = float(1 << _PRECISION_BITS)
    fixed = np.where(weights < 0, np.trunc(-0.5 + weights * one), np.trunc(0.5 + weights * one)).astype(np.int32)
    index = np.minimum(xmin[:, None] + j[None, :], in_size - 1)
    return index, fixed


def _resample_axis(image: np.ndarray, axis: int, in_size: int, out_size: int, interpolation: str, first: int,
                   count: int, offset: int = 0) -> np.ndarray:
    """One of Pillow's two passes over ``image`` (uint8 ``[H, W, C]``) along ``axis``
    (0: rows, 1: columns), computing output pixels ``first .. first + count - 1`` only.
    ``image`` may hold a slice of the axis starting at ``offset`` of ``in_size``: the
    rows the kept output pixels read."""
    index, fixed = _coefficients(in_size, out_size, interpolation, first, count)
    index = np.clip(index - offset, 0, image.shape[axis] - 1)  # taps outside the slice weigh 0
    acc: np.ndarray
    if axis == 0:  # image[index]: [count, taps, W, C]
        acc = np.einsum("otwc,ot->owc", image[index], fixed, dtype=np.int32)
    else:  # image[:, index]: [H, count, taps, C]
        acc = np.einsum("hotc,ot->hoc", image[:, index], fixed, dtype=np.int32)
    out: np.ndarray = np.clip((acc + (1 << (_PRECISION_BITS - 1))) >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return out


def _nearest_index(in_size: int, out_size: int, first: int, count: int) -> np.ndarray:
    """Pillow's nearest-neighbour positions (``ImagingScaleAffine``: a running sum of the scale)."""
    step = float(in_size) / out_size
    pos = np.cumsum(np.concatenate([[0.0 + step * 0.5], np.full(out_size - 1, step)]))[first:first + count]
    return np.clip(np.where(pos < 0.0, -1, np.trunc(pos)).astype(np.int64), 0, in_size - 1)


def resize_crop(image: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int],
                interpolation: str = "bilinear") -> np.ndarray:
    """``image`` (uint8 ``[H, W, C]``) resized to ``size`` = (w, h) with Pillow's filter
    ``interpolation``, then cropped to ``box`` = (left, top, right, bottom) inside it;
    only the kept pixels are computed. Equals Pillow's ``resize((w, H))`` then
    ``resize((w, h))`` (Pillow's own two passes, horizontal first), then ``crop(box)``."""
    in_h, in_w = image.shape[:2]
    out_w, out_h = size
    left, top, right, bottom = box
    if not (0 <= left < right <= out_w and 0 <= top < bottom <= out_h):
        raise AdnError(f"The crop {box} does not lie inside the resized {out_w}x{out_h} image.")
    if (out_w, out_h) == (in_w, in_h):
        return np.ascontiguousarray(image[top:bottom, left:right])
    if interpolation == "nearest":
        rows = _nearest_index(in_h, out_h, top, bottom - top)
        cols = _nearest_index(in_w, out_w, left, right - left)
        return np.ascontiguousarray(image[rows][:, cols])
    if out_w == in_w:  # Pillow skips a pass whose size does not change
        return _resample_axis(image, 0, in_h, out_h, interpolation, top, bottom - top)[:, left:right]
    if out_h == in_h:
        return _resample_axis(image, 1, in_w, out_w, interpolation, left, right - left)[top:bottom]
    # Horizontal pass first (its output rounded to uint8, as Pillow's), over the input rows
    # the vertical pass will read for the kept output rows.
    rows, weights = _coefficients(in_h, out_h, interpolation, top, bottom - top)
    used = rows[weights != 0]
    lo, hi = (int(used.min()), int(used.max()) + 1) if used.size else (0, in_h)
    part = _resample_axis(image[lo:hi], 1, in_w, out_w, interpolation, left, right - left)
    return _resample_axis(part, 0, in_h, out_h, interpolation, top, bottom - top, offset=lo)


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
    def from_manifest(cls, source: Mapping[str, Any] | str | os.PathLike[str] | Any) -> Preprocess:
        """The recipe a model directory records, from any of: ``manifest["input"]``, a
        whole manifest dict, an opened :class:`~adn_edge.modeldir.ModelDir`, or the path
        of a model directory or of its ``manifest.json`` (read and validated, as
        ``EngineSwitcher.open`` does). A record that cannot be applied is an
        :class:`AdnError` naming the field."""
        input_spec = _input_record(source)
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
        """One image -> float32 CHW array (resize, centre crop, scale, normalise).

        ``image``: a PIL image (resized by Pillow), or a uint8 numpy array ``[H, W, 3]``
        in RGB order (also ``[H, W]`` grey or ``[H, W, 4]`` RGBA), resized by
        :func:`resize_crop` (Pillow's filters restated in numpy; see the module docstring
        for how close the two are). For a robot's frames (BGR from OpenCV, several at
        once, a batch dimension) use :meth:`batch`.
        """
        if isinstance(image, np.ndarray):
            return self._from_array(image, bgr=False)
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

    def batch(self, images: np.ndarray | list[np.ndarray] | tuple[np.ndarray, ...], *,
              bgr: bool = False) -> np.ndarray:
        """Camera frames -> the model's input: a float32 ``[N, 3, H, W]`` batch, contiguous,
        ready for ``EngineSwitcher.infer``. Numpy only (no torch, no Pillow).

        ``images``: one uint8 frame ``[H, W, 3]`` (N = 1), a uint8 array ``[N, H, W, 3]``,
        or a list of frames (sizes may differ). ``bgr=True`` for BGR channel order
        (OpenCV, ROS ``bgr8``); RGB otherwise. Grey ``[H, W]`` / ``[H, W, 1]`` frames are
        replicated to three channels, the fourth channel of RGBA/BGRA is dropped. Each
        frame is resized (shorter side to ``resize``, with ``interpolation``), centre
        cropped to ``H x W``, scaled and normalised as recorded in the manifest.
        """
        if isinstance(images, np.ndarray) and images.ndim == 4:
            frames: Sequence[np.ndarray] = list(images)
        elif isinstance(images, np.ndarray):
            frames = [images]
        elif isinstance(images, (list, tuple)) and len(images) > 0:
            frames = list(images)
        else:
            empty = " (empty)" if isinstance(images, (list, tuple)) else ""
            raise AdnError(f"Preprocess.batch takes a uint8 image array [H, W, 3] or a list of them, "
                           f"not {type(images).__name__}{empty}.")
        out = np.empty((len(frames), 3, self.height, self.width), dtype=np.float32)
        for i, frame in enumerate(frames):
            out[i] = self._from_array(frame, bgr=bgr)
        return out

    def _from_array(self, image: Any, *, bgr: bool) -> np.ndarray:
        rgb = _as_rgb(image, bgr)
        in_h, in_w = rgb.shape[:2]
        assert self.resize is not None  # set in __post_init__
        new_w, new_h = resized_size(in_w, in_h, max(self.resize, self.height, self.width))
        crop = resize_crop(rgb, (new_w, new_h), center_crop_box(new_w, new_h, self.width, self.height),
                           self.interpolation)
        return self.normalise_array(crop.astype(np.float32).transpose(2, 0, 1))


def _as_rgb(image: Any, bgr: bool) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` RGB view of a frame (grey replicated, alpha dropped)."""
    if not isinstance(image, np.ndarray):
        raise AdnError(f"An image must be a numpy array [H, W, 3], not {type(image).__name__}.",
                       "Convert it first, e.g. np.asarray(pil_image) or cv_bridge's imgmsg_to_cv2.")
    if image.dtype != np.uint8:
        raise AdnError(f"An image must hold uint8 pixels (0-255), not {image.dtype}.",
                       "Convert it, e.g. (frame * 255).round().clip(0, 255).astype(np.uint8) for 0-1 floats.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise AdnError(f"An image must be [H, W, 3] (or [H, W] grey, [H, W, 4] with alpha), "
                       f"not an array of shape {tuple(image.shape)}.",
                       "Pass channels last (HWC); transpose a CHW array with image.transpose(1, 2, 0).")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise AdnError(f"An image of shape {tuple(image.shape)} has no pixels.")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    rgb: np.ndarray = image[:, :, 2::-1] if bgr else image[:, :, :3]
    return rgb


def _input_record(source: Any) -> Mapping[str, Any]:
    """``manifest["input"]`` from what ``Preprocess.from_manifest`` accepts."""
    if isinstance(source, Mapping):
        if "input" in source and isinstance(source.get("input"), Mapping) and "shape" not in source:
            record: Mapping[str, Any] = source["input"]  # a whole manifest
            return record
        return source
    manifest = getattr(source, "manifest", None)
    if isinstance(manifest, Mapping):  # an opened ModelDir (or anything carrying its manifest)
        return _input_record(manifest)
    if isinstance(source, (str, os.PathLike)):
        from adn_edge.modeldir import manifest as manifest_mod

        path = Path(source)
        directory = path.parent if path.name == manifest_mod.FILENAME and path.is_file() else path
        return _input_record(manifest_mod.load(directory))
    raise AdnError(f"Preprocess.from_manifest takes a model directory, its manifest or the manifest's "
                   f"input record, not {type(source).__name__}.")


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
