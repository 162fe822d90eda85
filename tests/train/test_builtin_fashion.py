"""The Fashion-MNIST built-ins: the shipped subset and a local full copy, never downloaded."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adn_edge.errors import AdnError
from adn_edge.quantize import calibration
from adn_edge.train import data as data_mod


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as Zalando/LeCun write them: magic 0x08NN, big-endian sizes, uint8 data."""
    head = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + array.astype(np.uint8).tobytes())


@pytest.fixture()
def fake_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, np.ndarray, np.ndarray]:
    """A tiny stand-in for the Debian package's four files (30 train, 20 test images)."""
    rng = np.random.default_rng(0)
    tri, tei = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (20, 28, 28))
    trl, tel = np.arange(30) % 10, np.arange(20) % 10
    for name, arr in (("train-images-idx3-ubyte.gz", tri), ("train-labels-idx1-ubyte.gz", trl),
                      ("t10k-images-idx3-ubyte.gz", tei), ("t10k-labels-idx1-ubyte.gz", tel)):
        _write_idx(tmp_path / name, arr)
    monkeypatch.setenv(data_mod.FASHION_ENV, str(tmp_path))
    data_mod._raw_builtin.cache_clear()
    data_mod._fashion.cache_clear()
    data_mod.builtin_split_indices.cache_clear()
    yield tmp_path, tri, tei
    data_mod._raw_builtin.cache_clear()
    data_mod._fashion.cache_clear()
    data_mod.builtin_split_indices.cache_clear()


def test_shipped_subset_is_balanced_and_fixed():
    train = data_mod.load_builtin("fashion", "train")
    test = data_mod.load_builtin("fashion", "test")
    assert (len(train), len(test)) == (1000, 2000)
    assert np.bincount(train.targets).tolist() == [100] * 10 and np.bincount(test.targets).tolist() == [200] * 10
    assert train.classes == list(data_mod.FASHION_CLASSES) and train.classes[9] == "Ankle boot"
    assert train.images.shape == (1000, 3, 32, 32) and train.images.dtype == torch.float32
    # normalised with resnet_tiny's mean/std 0.5: [0, 1] -> [-1, 1]
    assert float(train.images.min()) >= -1.0 - 1e-6 and float(train.images.max()) <= 1.0 + 1e-6
    again = data_mod.load_builtin("fashion", "test")
    assert torch.equal(again.images, test.images)
    assert data_mod.builtin_name("builtin:fashion") == "fashion"
    assert data_mod.builtin_name("fashion-full") == "fashion-full"


def test_full_copy_read_from_the_idx_files_with_the_official_split(fake_full):
    root, tri, tei = fake_full
    train = data_mod.load_builtin("fashion-full", "train")
    test = data_mod.load_builtin("fashion-full", "test")
    assert (len(train), len(test)) == (30, 20)
    raw, labels = data_mod._raw_builtin("fashion-full")
    np.testing.assert_array_equal(raw[:30], (tri.astype(np.float32) / 255.0))
    np.testing.assert_array_equal(raw[30:], (tei.astype(np.float32) / 255.0))
    assert train.targets == [i % 10 for i in range(30)]
    half = data_mod.load_builtin("fashion-full", "train", fraction=0.5)  # class-balanced: 2 of each class's 3
    assert np.bincount(half.targets).tolist() == [2] * 10


def test_damaged_idx_file_is_a_clear_error(fake_full):
    root, _, _ = fake_full
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write((0x0803).to_bytes(4, "big") + (20).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(AdnError, match="not a readable IDX file"):
        data_mod.load_builtin("fashion-full", "test")


def test_missing_full_copy_names_the_package_and_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(data_mod.FASHION_ENV, str(tmp_path))
    data_mod._fashion.cache_clear()
    data_mod._raw_builtin.cache_clear()
    try:
        with pytest.raises(AdnError) as err:
            data_mod.load_builtin("fashion-full", "train")
    finally:
        data_mod._fashion.cache_clear()
        data_mod._raw_builtin.cache_clear()
    text = str(err.value)
    assert "apt install dataset-fashion-mnist" in text and data_mod.FASHION_ENV in text


def test_cli_without_the_full_copy_exits_2_without_traceback(tmp_path: Path):
    env = {"ADN_EDGE_FASHION_MNIST": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", "from adn_edge.cli.app import main; main()", "train", "--data", "builtin:fashion-full",
                           "--epochs", "1", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          env={**__import__("os").environ, **env}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "dataset-fashion-mnist" in proc.stderr + proc.stdout


def test_calibration_knows_every_builtin_name():
    # quantize is torch-free and keeps its own list: it must not fall behind the loader's.
    assert set(calibration._BARE_BUILTINS) == set(data_mod.BUILTIN_NAMES)
