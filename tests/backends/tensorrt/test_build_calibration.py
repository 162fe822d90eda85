"""INT8 calibration data: preprocessing against a numpy reference, batching, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _buildkit import MEAN, STD, write_pngs
from PIL import Image

from adn_edge.backends.tensorrt.calibration import RECOMMENDED_IMAGES, CalibrationSet
from adn_edge.modeldir.preprocess import Preprocess, center_crop_box, list_images, load_image, resized_size
from adn_edge.errors import AdnError

SPEC = {"name": "input", "shape": [None, 3, 8, 8], "mean": MEAN, "std": STD}


def reference(rgb: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """Independent numpy version of centre crop + scale + normalise + HWC->CHW for an
    image whose shorter side already has the resize length."""
    h, w = rgb.shape[:2]
    top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
    x = rgb[top:top + crop_h, left:left + crop_w].astype(np.float64) / 255.0
    x = (x - np.array(MEAN)) / np.array(STD)
    return x.transpose(2, 0, 1).astype(np.float32)


def test_resize_rule_matches_torchvision() -> None:
    # shorter side to the target, the long side truncated (torchvision's int())
    assert resized_size(500, 375, 256) == (341, 256)
    assert resized_size(375, 500, 256) == (256, 341)
    assert resized_size(300, 300, 256) == (256, 256)
    assert center_crop_box(256, 341, 224, 224) == (16, 58, 240, 282)
    assert center_crop_box(9, 9, 8, 8) == (0, 0, 8, 8)  # round(0.5) == 0 (banker's rounding, as torchvision)


def test_defaults_from_manifest() -> None:
    p = Preprocess.from_manifest({"shape": [None, 3, 224, 224], "mean": MEAN, "std": STD})
    assert (p.resize, p.height, p.width, p.interpolation) == (256, 224, 224, "bilinear")
    assert p.scale == pytest.approx(1 / 255)
    assert Preprocess.from_manifest({"shape": [None, 3, 224, 224], "mean": [123.7, 116.3, 103.5],
                                     "std": [58.4, 57.1, 57.4]}).scale == 1.0
    custom = Preprocess.from_manifest({"shape": [None, 3, 8, 8], "mean": MEAN, "std": STD, "resize": 10,
                                       "interpolation": "bicubic"})
    assert (custom.resize, custom.interpolation) == (10, "bicubic")


@pytest.mark.parametrize("bad,match", [
    ({"shape": [None, 1, 8, 8], "mean": MEAN, "std": STD}, "3-channel"),
    ({"shape": [None, 3, None, 8], "mean": MEAN, "std": STD}, "fixed image size"),
    ({"shape": [None, 3, 8, 8]}, "mean and std"),
    ({"shape": [None, 3, 8, 8], "mean": MEAN, "std": [0.2, 0.0, 0.2]}, "non-positive"),
    ({"shape": [None, 3, 8, 8], "mean": MEAN, "std": STD, "interpolation": "magic"}, "interpolation"),
])
def test_bad_preprocessing_records(bad: dict, match: str) -> None:
    with pytest.raises(AdnError, match=match):
        Preprocess.from_manifest(bad)


def test_crop_and_normalise_against_numpy(tmp_path: Path) -> None:
    p = Preprocess.from_manifest(SPEC)
    assert p.resize == 9  # floor(8 / 0.875)
    rng = np.random.default_rng(1)
    for w, h in [(9, 9), (9, 13), (14, 9)]:  # shorter side 9: no resampling, only crop + normalise
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = tmp_path / f"{w}x{h}.png"
        Image.fromarray(rgb).save(path)
        got = load_image(path, p)
        assert got.shape == (3, 8, 8) and got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
        np.testing.assert_allclose(got, reference(rgb, 8, 8), rtol=0, atol=1e-5)


def test_resize_keeps_constant_colour_and_aspect(tmp_path: Path) -> None:
    p = Preprocess.from_manifest(SPEC)
    colour = np.array([200, 100, 50], dtype=np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(np.broadcast_to(colour, (30, 60, 3)).copy()).save(path)
    got = load_image(path, p)
    want = ((colour / 255.0 - np.array(MEAN)) / np.array(STD)).astype(np.float32)
    np.testing.assert_allclose(got, np.broadcast_to(want[:, None, None], (3, 8, 8)), atol=1e-5)


def test_greyscale_and_rgba_become_rgb(tmp_path: Path) -> None:
    p = Preprocess.from_manifest(SPEC)
    Image.new("L", (9, 9), 128).save(tmp_path / "g.png")
    Image.new("RGBA", (9, 9), (10, 20, 30, 40)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "g.png", p).shape == (3, 8, 8)
    a = load_image(tmp_path / "a.png", p)
    np.testing.assert_allclose(a[:, 0, 0], (np.array([10, 20, 30]) / 255 - MEAN) / STD, atol=1e-5)


def test_batches_in_order_and_full_only(tmp_path: Path) -> None:
    paths = write_pngs(tmp_path / "imgs", 7, size=(9, 9))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    p = Preprocess.from_manifest(SPEC)
    cs = CalibrationSet.open(tmp_path / "imgs", p, batch_size=3)
    assert cs.images == paths and len(cs) == 2 and cs.shape == (3, 3, 8, 8)
    batches = list(cs.batches())
    assert [b.shape for b in batches] == [(3, 3, 8, 8)] * 2
    assert all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(batches[1][0], load_image(paths[3], p))
    assert any(f"fewer than {RECOMMENDED_IMAGES}" in w for w in cs.warnings)
    assert any("last 1 calibration image" in w for w in cs.warnings)
    rec = cs.as_record()
    assert rec["images"] == 7 and rec["batches"] == 2 and len(rec["images_sha256"]) == 64


def test_small_folder_shrinks_the_batch(tmp_path: Path) -> None:
    write_pngs(tmp_path / "imgs", 2)
    cs = CalibrationSet.open(tmp_path / "imgs", Preprocess.from_manifest(SPEC), batch_size=8)
    assert cs.batch_size == 2 and len(cs) == 1


def test_nested_class_folders_are_searched(tmp_path: Path) -> None:
    write_pngs(tmp_path / "imgs" / "n01440764", 2, seed=1)
    write_pngs(tmp_path / "imgs" / "n01443537", 2, seed=2)
    assert len(list_images(tmp_path / "imgs")) == 4


def test_no_warning_with_enough_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import adn_edge.backends.tensorrt.calibration as cal

    monkeypatch.setattr(cal, "RECOMMENDED_IMAGES", 4)
    write_pngs(tmp_path / "imgs", 4)
    assert CalibrationSet.open(tmp_path / "imgs", Preprocess.from_manifest(SPEC), 2).warnings == []


def test_digest_follows_content(tmp_path: Path) -> None:
    paths = write_pngs(tmp_path / "imgs", 3)
    p = Preprocess.from_manifest(SPEC)
    d1 = CalibrationSet.open(tmp_path / "imgs", p).digest()
    assert CalibrationSet.open(tmp_path / "imgs", p).digest() == d1
    Image.new("RGB", (12, 10), (1, 2, 3)).save(paths[1])
    assert CalibrationSet.open(tmp_path / "imgs", p).digest() != d1


def test_folder_errors(tmp_path: Path) -> None:
    p = Preprocess.from_manifest(SPEC)
    with pytest.raises(AdnError, match="does not exist"):
        CalibrationSet.open(tmp_path / "missing", p)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(AdnError, match="is a file"):
        CalibrationSet.open(tmp_path / "file.png", p)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(AdnError, match="holds no images"):
        CalibrationSet.open(tmp_path / "empty", p)
    with pytest.raises(AdnError, match="at least 1"):
        CalibrationSet.open(tmp_path, p, batch_size=0)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    write_pngs(tmp_path / "imgs", 2)
    bad = tmp_path / "imgs" / "img_999.png"
    bad.write_bytes(b"\x89PNG truncated garbage")
    cs = CalibrationSet.open(tmp_path / "imgs", Preprocess.from_manifest(SPEC), batch_size=3)
    with pytest.raises(AdnError, match="img_999.png") as e:
        list(cs.batches())
    assert "cannot be read" in e.value.message and e.value.hint
