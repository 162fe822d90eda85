"""Calibration images for INT8: which images, preprocessed how, and their fingerprint.

The scales a Q/DQ graph carries are only as good as the pixels they were measured on,
so the images must reach the graph exactly as they do in deployment:

* a folder (``--calib DIR``): every image below it (sub-folders too, so an ImageFolder
  works as well as a flat folder), decoded and preprocessed by
  :mod:`adn_edge.backends.tensorrt.calibration` from the manifest's ``input`` record. That is the
  code ``adn-edge build --calib`` feeds TensorRT's calibrator with, so a Q/DQ graph
  and an implicitly calibrated engine are calibrated on the same pixels; it needs
  Pillow and numpy only, no torch;
* ``builtin`` / ``builtin:NAME``: the *training* split of a built-in dataset
  (:func:`adn_edge.train.data.load_builtin`, which needs torch), preprocessed with the
  manifest's input size and mean/std. The accuracy check evaluates on the *test*
  split, so calibration never sees an image it is judged on.

When there are more images than ``samples``, a fixed random subset (seed 0) is used,
so a run is reproducible and its fingerprint stable. The fingerprint (sha256 over the
preprocessing and the chosen images' bytes, or the chosen built-in indices and
pixels) is part of the calibration cache key: the cache is reused only for the same
images, preprocessed the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adn_edge.errors import AdnError
from adn_edge.quantize.defaults import DEFAULT_SAMPLES, MIN_SAMPLES, RECOMMENDED_SAMPLES

SELECTION_SEED = 0
_BARE_BUILTINS = ("digits", "mnist", "fashion", "fashion-full")
"""Names ``adn_edge.train.data.builtin_name`` accepts without the ``builtin:`` prefix."""


def _choose(count: int, samples: int) -> np.ndarray:
    """Sorted indices of a fixed random subset of ``samples`` out of ``count``."""
    if samples >= count:
        return np.arange(count)
    rng = np.random.default_rng(SELECTION_SEED)
    return np.sort(rng.choice(count, size=samples, replace=False))


@dataclass
class CalibrationData:
    """The calibration images of one ``quantize`` run, shared by every sub-network.

    Images are decoded lazily (:meth:`array`), once, and only if some sub-network
    actually has to be calibrated: with every range cached, nothing is decoded.
    """

    source: str
    """``builtin:digits`` or the folder path, as recorded in the manifest."""
    kind: str
    """``builtin`` or ``folder``."""
    requested: int
    count: int
    available: int
    preprocess: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    _paths: list[Path] = field(default_factory=list, repr=False)
    _folder: Path | None = field(default=None, repr=False)
    _builtin: tuple[str, Any] | None = field(default=None, repr=False)
    _folder_prep: Any = field(default=None, repr=False)
    _array: np.ndarray | None = field(default=None, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @classmethod
    def open(cls, spec: str | os.PathLike[str], manifest: Mapping[str, Any], samples: int) -> CalibrationData:
        """Resolve ``--calib`` for a model directory's manifest; checks, does not decode."""
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < MIN_SAMPLES:
            raise AdnError(f"--samples {samples} is too few: INT8 calibration needs at least {MIN_SAMPLES} images "
                           f"(ranges from fewer are set by a handful of activations), and {RECOMMENDED_SAMPLES} or "
                           "more are recommended.", f"Pass --samples {DEFAULT_SAMPLES} (the default).")
        text = str(spec).strip().lower()
        if text == "builtin" or text.startswith("builtin:") or (text in _BARE_BUILTINS and not Path(spec).exists()):
            # only now: the built-in datasets need torch, a folder of images does not
            from adn_edge.train.data import builtin_name

            name = builtin_name(str(spec))
            if name is not None:
                return cls._open_builtin(name, manifest, samples)
        return cls._open_folder(Path(spec), manifest, samples)

    @classmethod
    def _open_builtin(cls, name: str, manifest: Mapping[str, Any], samples: int) -> CalibrationData:
        from adn_edge.modeldir.preprocess import Preprocess
        from adn_edge.train.data import _raw_builtin, builtin_split_indices

        inp = manifest["input"]
        size = inp["shape"][-1]
        if not isinstance(size, int):
            raise AdnError(f"The manifest's input shape {inp['shape']!r} has no fixed image size to calibrate at.",
                           "Re-export the model directory.")
        prep = Preprocess.square(int(size), inp["mean"], inp["std"])
        _raw_builtin(name)  # fails early (and clearly) when the dataset's package is missing
        train_idx, _ = builtin_split_indices(name)
        chosen = train_idx[_choose(len(train_idx), samples)]
        data = cls(source=f"builtin:{name}", kind="builtin", requested=samples, count=len(chosen),
                   available=len(train_idx),
                   preprocess={"input_size": prep.input_size, "mean": list(prep.mean), "std": list(prep.std),
                               "split": "train"})
        data._builtin = (name, (prep, chosen))
        data._check_count()
        return data

    @classmethod
    def _open_folder(cls, folder: Path, manifest: Mapping[str, Any], samples: int) -> CalibrationData:
        from adn_edge.modeldir.preprocess import Preprocess, list_images

        if folder.is_dir() and not os.access(folder, os.R_OK | os.X_OK):
            raise AdnError(f"The calibration folder {str(folder)!r} cannot be read (permission denied).",
                           "Fix its permissions, or copy the images somewhere readable.")
        try:
            images = list_images(folder)
        except PermissionError as exc:
            raise AdnError(f"The calibration folder {str(folder)!r} cannot be read: {exc.strerror}.",
                           "Fix its permissions, or copy the images somewhere readable.") from None
        prep = Preprocess.from_manifest(manifest["input"])
        chosen = [images[i] for i in _choose(len(images), samples)]
        data = cls(source=str(folder), kind="folder", requested=samples, count=len(chosen), available=len(images),
                   preprocess=prep.as_record())
        data._paths = chosen
        data._folder = folder
        data._folder_prep = prep
        data._check_count()
        return data

    def _check_count(self) -> None:
        if self.count < MIN_SAMPLES:
            raise AdnError(f"Only {self.count} calibration image(s) in {self.source!r}: INT8 calibration needs at "
                           f"least {MIN_SAMPLES}, and {RECOMMENDED_SAMPLES} or more are recommended.",
                           "Add representative training images to the folder (sub-folders are searched too).")
        short = self.count < self.requested
        if self.count < RECOMMENDED_SAMPLES:
            why = f" (all that {self.source!r} holds; --samples asked for {self.requested})" if short else ""
            self.warnings.append(
                f"Calibrating on {self.count} images{why}, fewer than the recommended {RECOMMENDED_SAMPLES}: "
                "activation ranges may be noisy and cost accuracy (check the INT8 vs FP32 figures).")
        elif short:
            self.warnings.append(f"{self.source!r} holds {self.count} images; all of them are used (--samples "
                                 f"asked for {self.requested}).")

    # ------------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        """sha256 of what calibration will see; decodes nothing for a folder."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps({"kind": self.kind, "preprocess": self.preprocess}, sort_keys=True).encode())
            if self.kind == "folder":
                assert self._folder is not None
                for p in self._paths:
                    h.update(str(p.relative_to(self._folder)).encode() + b"\0")
                    try:
                        with open(p, "rb") as f:
                            while block := f.read(1 << 20):
                                h.update(block)
                    except OSError as exc:
                        raise AdnError(f"The calibration image {str(p)!r} cannot be read: {exc.strerror}.",
                                       "Fix its permissions or remove it from the folder.") from None
            else:
                h.update(self.source.encode() + b"\0")
                h.update(np.ascontiguousarray(self.array()).tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "samples": self.count, "requested": self.requested,
                "fingerprint": self.fingerprint(), "preprocess": self.preprocess,
                "available": self.available,
                "selection": "all" if self.count == self.available else f"random subset, seed {SELECTION_SEED}"}

    # ------------------------------------------------------------------ pixels

    def array(self) -> np.ndarray:
        """All chosen images as one float32 NCHW array (decoded on first use)."""
        if self._array is None:
            if self.kind == "builtin":
                import torch

                from adn_edge.train.data import _raw_builtin, normalise

                assert self._builtin is not None
                name, (prep, chosen) = self._builtin
                images, _ = _raw_builtin(name)
                x = normalise(prep, torch.from_numpy(images[chosen]).unsqueeze(1))
                self._array = np.ascontiguousarray(x.numpy(), dtype=np.float32)
            else:
                from adn_edge.modeldir.preprocess import load_image

                self._array = np.stack([load_image(p, self._folder_prep) for p in self._paths]).astype(
                    np.float32, copy=False)
        return self._array

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        x = self.array()
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size]


class ArrayReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name = input_name
        self._batches = batches
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return {self.input_name: self._batches[self._i - 1]}

    def __len__(self) -> int:
        return len(self._batches)

    def rewind(self) -> None:
        self._i = 0
