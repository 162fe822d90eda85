"""Camera frames -> model input without torch: ``Preprocess.from_manifest(...).batch(frame)``.

What is compared, and how closely:

* :func:`resize_crop` (numpy) against Pillow doing the same two passes (``resize`` to
  the new width, then to the new height, then ``crop``): **bit-exact**, every filter,
  random sizes and crops;
* ``Preprocess.batch`` on a frame against what training and evaluation feed the network
  for the same picture stored as a file (``adn_edge.train.data.ImageFolder``, Pillow's
  one-call resize): **at most 1 grey level** (``1 / 255 / std`` in normalised units) and
  on average well under half a level. A Pillow build may run the two passes of one
  resize in the other order, which rounds the intermediate differently (bilinear: 1
  level at most; bicubic: also 1 level on natural images, more on white noise, whose
  overshoots are clipped differently, so bicubic is compared on smooth images);
* against the torchvision-style tensor pipeline (``F.interpolate(..., antialias=True)``
  = ``torchvision.transforms.Resize`` on tensors, centre crop, ``Normalize``): **at most
  1 grey level**;
* a frame already at the input size against ``adn_edge.train.data.normalise`` (the
  built-in data's path): 1e-6;
* and the whole call in a subprocess where importing torch or Pillow fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from adn_edge.errors import AdnError
from adn_edge.modeldir import ModelDir, manifest
from adn_edge.modeldir.preprocess import Preprocess, center_crop_box, resize_crop, resized_size
from tests._util import REPO

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FILTERS = ("bilinear", "bicubic", "lanczos", "box", "hamming", "nearest")


def level(prep: Preprocess) -> np.ndarray:
    """One grey level in normalised units, per channel, shaped to broadcast over NCHW."""
    return (1.0 / 255.0 / np.asarray(prep.std)).reshape(1, 3, 1, 1)


def smooth_frame(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A natural-looking frame: coarse random colours, bilinearly enlarged (numpy only)."""
    coarse = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3)).astype(np.float64)
    ys = np.linspace(0, coarse.shape[0] - 1, h)
    xs = np.linspace(0, coarse.shape[1] - 1, w)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, coarse.shape[0] - 1), np.minimum(x0 + 1, coarse.shape[1] - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x1] * fx
    bottom = coarse[y1][:, x0] * (1 - fx) + coarse[y1][:, x1] * fx
    return np.round(top * (1 - fy) + bottom * fy).astype(np.uint8)


# --------------------------------------------------------------------------- the resampler


@pytest.mark.parametrize("interpolation", FILTERS)
def test_resize_crop_is_pillows_two_passes(interpolation):
    Image = pytest.importorskip("PIL.Image")
    resample = getattr(Image.Resampling, interpolation.upper())
    rng = np.random.default_rng(FILTERS.index(interpolation))
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        ow, oh = (int(v) for v in rng.integers(1, 100, 2))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = Image.fromarray(img)
        if ow != w:
            ref = ref.resize((ow, h), resample)
        if oh != h:
            ref = ref.resize((ow, oh), resample)
        left, top = int(rng.integers(0, ow)), int(rng.integers(0, oh))
        right, bottom = left + int(rng.integers(1, ow - left + 1)), top + int(rng.integers(1, oh - top + 1))
        got = resize_crop(img, (ow, oh), (left, top, right, bottom), interpolation)
        assert np.array_equal(got, np.asarray(ref.crop((left, top, right, bottom)))), (h, w, oh, ow)


def test_resize_crop_refuses_a_crop_outside_the_image():
    with pytest.raises(AdnError, match="crop"):
        resize_crop(np.zeros((10, 10, 3), np.uint8), (8, 8), (0, 0, 9, 8))


# --------------------------------------------------------------------------- against training


@pytest.mark.parametrize(("arch", "smooth_only"), [("resnet50", False), ("swin_t", True)])
def test_frames_match_training_imagefolder(tmp_path, arch, smooth_only):
    """The same pictures as files through training's ImageFolder (Pillow) and as arrays
    through ``batch`` (numpy): within one grey level."""
    pytest.importorskip("torch")
    Image = pytest.importorskip("PIL.Image")
    from adn_edge.train.data import ImageFolder, preprocess_for_arch

    prep = preprocess_for_arch(arch)
    assert prep.interpolation == ("bicubic" if arch == "swin_t" else "bilinear")
    rng = np.random.default_rng(3)
    (tmp_path / "class0").mkdir()
    frames = []
    for i in range(6):
        h, w = (int(v) for v in rng.integers(90, 420, 2))
        noise = not smooth_only and i % 2 == 0
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if noise else smooth_frame(rng, h, w)
        Image.fromarray(frame).save(tmp_path / "class0" / f"{i}.png")
        frames.append(frame)
    ds = ImageFolder(tmp_path, prep)
    ours = prep.batch(frames)
    assert ours.shape == (6, 3, 224, 224) and ours.dtype == np.float32 and ours.flags.c_contiguous
    theirs = np.stack([ds[i][0].numpy() for i in range(len(ds))])
    diff = np.abs(ours - theirs)
    assert (diff <= level(prep) + 1e-5).all(), diff.max()
    assert (diff / level(prep)).mean() < 0.35


@pytest.mark.parametrize(("interpolation", "noise"), [("bilinear", True), ("bilinear", False), ("bicubic", False)])
def test_frames_match_torchvision_style_tensor_pipeline(interpolation, noise):
    """torchvision's tensor ``Resize(antialias=True)`` is ``F.interpolate(..., antialias=True)``
    (rounded back to uint8 for uint8 input), then ``CenterCrop`` and ``Normalize``."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    prep = Preprocess.square(224, IMAGENET_MEAN, IMAGENET_STD, 256, interpolation)
    rng = np.random.default_rng(7)
    for _ in range(4):
        h, w = (int(v) for v in rng.integers(120, 500, 2))
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if noise else smooth_frame(rng, h, w)
        new_w, new_h = resized_size(w, h, 256)
        x = torch.from_numpy(frame.copy()).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(new_h, new_w), mode=interpolation, antialias=True, align_corners=False)
        x = x.round().clamp(0, 255)
        left, top, right, bottom = center_crop_box(new_w, new_h, 224, 224)
        x = x[:, :, top:bottom, left:right] / 255.0
        ref = ((x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        diff = np.abs(prep.batch(frame) - ref.numpy())
        assert (diff <= level(prep) + 1e-5).all(), diff.max()


def test_a_frame_at_input_size_matches_trainings_normalise():
    """Built-in data are normalised by ``adn_edge.train.data.normalise``; a frame that needs
    no resize and no crop must come out the same."""
    torch = pytest.importorskip("torch")
    from adn_edge.train.data import normalise, preprocess_for_arch

    prep = preprocess_for_arch("resnet_tiny")  # 32 x 32, no crop margin, mean/std 0.5
    frames = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    ref = normalise(prep, torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0).numpy()
    np.testing.assert_allclose(prep.batch(frames), ref, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- frame formats


def test_channel_orders_grey_alpha_and_batches():
    prep = Preprocess.square(24, IMAGENET_MEAN, IMAGENET_STD, 28)
    rng = np.random.default_rng(2)
    rgb = smooth_frame(rng, 50, 70)
    one = prep.batch(rgb)
    assert one.shape == (1, 3, 24, 24) and one.dtype == np.float32 and one.flags.c_contiguous
    np.testing.assert_array_equal(prep.batch(np.ascontiguousarray(rgb[:, :, ::-1]), bgr=True), one)
    np.testing.assert_array_equal(prep.batch(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])), one)
    np.testing.assert_array_equal(prep(rgb), one[0])  # __call__ on an array: one CHW image
    grey = rgb[:, :, 0]
    np.testing.assert_array_equal(prep.batch(grey), prep.batch(np.dstack([grey] * 3)))
    np.testing.assert_array_equal(prep.batch(grey[:, :, None]), prep.batch(grey))
    stacked = np.stack([rgb, rgb[::-1]])
    np.testing.assert_array_equal(prep.batch(stacked), prep.batch([rgb, rgb[::-1]]))
    mixed = prep.batch([rgb, smooth_frame(rng, 90, 31)])
    assert mixed.shape == (2, 3, 24, 24)
    np.testing.assert_array_equal(mixed[0], one[0])


@pytest.mark.parametrize(("frame", "match"), [
    (np.zeros((20, 20, 3), np.float32), "uint8"),
    (np.zeros((3, 20, 20), np.uint8), "HWC"),
    (np.zeros((20,), np.uint8), r"\[H, W, 3\]"),
    (np.zeros((0, 20, 3), np.uint8), "no pixels"),
    (np.zeros((20, 0), np.uint8), "no pixels"),
    ([], "empty"),
    ("frame.png", "str"),
])
def test_bad_frames_are_explained(frame, match):
    prep = Preprocess.square(16, IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(AdnError, match=match):
        prep.batch(frame)


# --------------------------------------------------------------------------- from the manifest


def test_from_manifest_takes_a_directory_its_manifest_or_the_input_record(base_dir: Path):
    m = manifest.load(base_dir)
    want = Preprocess.from_manifest(m["input"])
    assert want == Preprocess(32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), m["input"]["resize"],
                              m["input"]["interpolation"])
    for source in (base_dir, str(base_dir), base_dir / "manifest.json", m, ModelDir.open(base_dir)):
        assert Preprocess.from_manifest(source) == want, source
    assert ModelDir.open(base_dir).preprocess() == want


def test_from_manifest_explains_what_it_cannot_use(tmp_path: Path):
    with pytest.raises(AdnError, match="manifest"):
        Preprocess.from_manifest(tmp_path)  # a directory without manifest.json
    with pytest.raises(AdnError, match="takes a model directory"):
        Preprocess.from_manifest(42)
    with pytest.raises(AdnError, match="3-channel NCHW"):
        Preprocess.from_manifest({"shape": [None, 1, 28, 28], "mean": [0.5], "std": [0.5]})


SCRIPT = textwrap.dedent("""
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "PIL", "torchvision", "cv2"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocked())
    import numpy as np
    from adn_edge.modeldir.preprocess import Preprocess

    model_dir, frames, out = sys.argv[1:4]
    prep = Preprocess.from_manifest(model_dir)
    np.save(out, prep.batch(list(np.load(frames, allow_pickle=True)), bgr=True))
    print(sorted(m for m in ("torch", "PIL") if m in sys.modules))
""")


def test_runs_without_torch_and_without_pillow(base_dir: Path, tmp_path: Path):
    rng = np.random.default_rng(4)
    frames = np.empty(2, dtype=object)
    frames[0], frames[1] = smooth_frame(rng, 48, 64), rng.integers(0, 256, (40, 33, 3), dtype=np.uint8)
    np.save(tmp_path / "frames.npy", frames, allow_pickle=True)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(base_dir), str(tmp_path / "frames.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1].replace("'", '"')) == []
    want = Preprocess.from_manifest(base_dir).batch(list(frames), bgr=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), want)
