"""``adn-edge quantize`` through the command line: results, and every bad input -> exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from adn_edge.modeldir import manifest
from tests._util import run_cli
from tests.quantize._helpers import DATA, TEST_IMAGES


def _pngs(folder: Path, n: int) -> list[Path]:
    """``n`` training images of the embedded model's built-in data (Fashion-MNIST) as 28x28
    grayscale PNGs (what a user's folder would hold)."""
    from PIL import Image

    from adn_edge.data import EMBEDDED_DATASET
    from adn_edge.train.data import _raw_builtin, builtin_split_indices

    images, labels = _raw_builtin(EMBEDDED_DATASET)
    train, _ = builtin_split_indices(EMBEDDED_DATASET)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in train[:n]:
        p = folder / str(labels[i]) / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(np.round(images[i] * 255).astype(np.uint8)).save(p)
        out.append(p)
    return out


def test_cli_quantizes_from_a_folder_with_json(fp32dir: Path, tmp_path: Path, capsys) -> None:
    _pngs(tmp_path / "calib", 40)
    rc, out, err = run_cli(["quantize", fp32dir, "--calib", tmp_path / "calib", "--subnet", "base",
                            "--data", DATA, "--json"], capsys)
    assert rc == 0, err
    rec = json.loads(out)  # stdout is JSON only (ONNX Runtime's prints are kept out of it)
    (s,) = rec["subnets"]
    assert s["code"] == "0000" and s["status"] == "quantized" and s["calibration_cache"] == "miss"
    assert rec["calibration"]["kind"] == "folder" and rec["calibration"]["samples"] == 40
    assert s["accuracy"]["samples"] == TEST_IMAGES and s["accuracy"]["agreement"] >= 97  # measured 99.4
    assert "fewer than the recommended 300" in err
    assert (fp32dir / "resnet_tiny_0000.int8.onnx").is_file()
    m = manifest.load(fp32dir)
    assert m["subnets"]["0000"]["quantization"]["calibration"]["preprocess"]["crop"] == [32, 32]


TORCHLESS = r"""
import sys
from adn_edge.quantize import QuantizeOptions, quantize_directory
r = quantize_directory(sys.argv[1], sys.argv[2], ["1111"], QuantizeOptions(samples=12, eval_data=None))
assert r.subnets[0].status == "quantized", r.record()
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""


def test_folder_calibration_does_not_import_torch(fp32dir: Path, tmp_path: Path) -> None:
    """The quantise path needs torch only for the built-in datasets and evaluation data."""
    import subprocess
    import sys

    _pngs(tmp_path / "calib", 12)
    proc = subprocess.run([sys.executable, "-c", TORCHLESS, str(fp32dir), str(tmp_path / "calib")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_cli_table_output(workdir: Path, capsys) -> None:
    rc, out, err = run_cli(["quantize", workdir, "--calib", DATA, "--samples", "128", "-s", "1111"], capsys)
    assert rc == 0, err
    assert "1111" in out and "kept" in out  # up to date from the session's run


# ------------------------------------------------------------------ errors (exit 2, one paragraph)


def _fails(args: list, capsys, *needles: str) -> str:
    rc, out, err = run_cli(args, capsys)
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and "error: " in err
    err = err[err.index("error: "):]  # warnings may come first
    for n in needles:
        assert n in err.replace("\n", " "), (n, err)
    return err


def test_calibration_folder_missing(fp32dir: Path, tmp_path: Path, capsys) -> None:
    _fails(["quantize", fp32dir, "--calib", tmp_path / "nowhere"], capsys, "does not exist")


def test_calibration_folder_is_a_file(fp32dir: Path, tmp_path: Path, capsys) -> None:
    f = tmp_path / "images.txt"
    f.write_text("x")
    _fails(["quantize", fp32dir, "--calib", f], capsys, "is a file")


def test_calibration_folder_empty(fp32dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    _fails(["quantize", fp32dir, "--calib", tmp_path / "empty"], capsys, "holds no images")


def test_calibration_image_unreadable(fp32dir: Path, tmp_path: Path, capsys) -> None:
    paths = _pngs(tmp_path / "calib", 12)
    paths[3].write_bytes(b"\x89PNG truncated")
    err = _fails(["quantize", fp32dir, "--calib", tmp_path / "calib", "-s", "0000"], capsys, "cannot be read")
    assert paths[3].name in err.replace("\n", "")
    assert not (fp32dir / "resnet_tiny_0000.int8.onnx").exists()  # nothing half-done is left


def test_too_few_samples(fp32dir: Path, tmp_path: Path, capsys) -> None:
    _fails(["quantize", fp32dir, "--calib", "builtin", "--samples", "5"], capsys, "too few", "at least 10")
    _pngs(tmp_path / "few", 4)
    _fails(["quantize", fp32dir, "--calib", tmp_path / "few"], capsys, "Only 4 calibration image(s)")


def test_graph_already_quantized(workdir: Path, capsys) -> None:
    """A 'float32' graph that holds Q/DQ nodes (e.g. an INT8 file copied over it) is refused."""
    shutil.copy(workdir / "resnet_tiny_1111.int8.onnx", workdir / "resnet_tiny_1111.onnx")
    m = manifest.load(workdir)
    m["subnets"]["1111"]["files"]["onnx"] = manifest.file_record(workdir, "resnet_tiny_1111.onnx")
    manifest.save(workdir, m)
    _fails(["quantize", workdir, "--calib", "builtin", "-s", "1111"], capsys, "already quantised",
           "QuantizeLinear", "re-export")


def test_bad_method_subnet_and_directory(fp32dir: Path, tmp_path: Path, capsys) -> None:
    _fails(["quantize", fp32dir, "--calib", "builtin", "--method", "kl"], capsys, "Unknown calibration method")
    _fails(["quantize", fp32dir, "--calib", "builtin", "-s", "1010"], capsys, "1010")
    _fails(["quantize", tmp_path, "--calib", "builtin"], capsys, "manifest.json")


def test_unknown_builtin_dataset(fp32dir: Path, capsys) -> None:
    _fails(["quantize", fp32dir, "--calib", "builtin:cifar"], capsys, "Unknown built-in dataset")


@pytest.mark.parametrize("flag", ["--eval-samples", "--threads"])
def test_bad_numbers(fp32dir: Path, capsys, flag: str) -> None:
    _fails(["quantize", fp32dir, "--calib", "builtin", flag, "0"], capsys, flag)


def test_int8_graph_passes_onnx_checker_after_cli(workdir: Path) -> None:
    onnx.checker.check_model(onnx.load(str(workdir / "resnet_tiny_0000.int8.onnx")), full_check=True)


def test_onnxruntime_failure_is_explained_exit_1(fp32dir: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from adn_edge.quantize import qdq

    def broken(*_a, **_k):
        raise RuntimeError("Unsupported op in graph")

    monkeypatch.setattr(qdq, "quantize_graph", broken)
    rc, _, err = run_cli(["quantize", fp32dir, "--calib", "builtin", "--samples", "16", "-s", "0000"], capsys)
    assert rc == 1 and "Traceback" not in err
    assert "could not quantise sub-network 0000" in err.replace("\n", " ") and "Unsupported op" in err
    assert not (fp32dir / "resnet_tiny_0000.int8.onnx").exists()
