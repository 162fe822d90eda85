"""Checkpoint containers (docs/official-format.md section 6), always with weights_only loading."""

from __future__ import annotations

import argparse
import collections

import pytest
import torch

from adn_edge import checkpoint
from adn_edge.errors import AdnError
from adn_edge.models import create_model
from tests._util import random_state_dict

ARCH = "resnet_tiny"


@pytest.fixture(scope="module")
def sd():
    m = create_model(ARCH)
    return random_state_dict(m, seed=3)


def same(model, sd) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_plain_state_dict(sd, tmp_path) -> None:
    torch.save(sd, tmp_path / "w.pth")
    model, ck = checkpoint.load(tmp_path / "w.pth", arch=ARCH)
    assert same(model, sd) and ck.container == "plain" and ck.num_classes == 10
    assert len(ck.sha256) == 64


def test_official_training_checkpoint_prefers_ema_unless_asked(sd, tmp_path) -> None:
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    ckpt = {
        "model": sd,
        "model_ema": {"n_averaged": torch.tensor(5), **{f"module.{k}": v for k, v in ema.items()}},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
        "lr_scheduler": {"milestones": collections.Counter({60: 1})},
        "epoch": 7,
        "args": argparse.Namespace(model="resnet50", lr=0.1),
    }
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    model, ck = checkpoint.load(tmp_path / "checkpoint.pth", arch=ARCH)
    assert ck.weights == "model_ema" and same(model, ema)
    model, ck = checkpoint.load(tmp_path / "checkpoint.pth", arch=ARCH, weights="model")
    assert ck.weights == "model" and same(model, sd)


def test_ddp_prefix_and_state_dict_container(sd, tmp_path) -> None:
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    model, ck = checkpoint.load(tmp_path / "ddp.pth", arch=ARCH)
    assert same(model, sd) and ck.container == "state_dict"


def test_safetensors_plain_and_ours_with_header(sd, tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    model, ck = checkpoint.load(tmp_path / "w.safetensors")  # arch guessed from the keys
    assert model.arch == ARCH and same(model, sd) and ck.container == "safetensors"
    checkpoint.save(model, tmp_path / "ours.safetensors")
    ck2 = checkpoint.read(tmp_path / "ours.safetensors")
    assert ck2.container == "adn-edge" and ck2.header["arch"] == ARCH and ck2.header["input_size"] == 32
    model2, _ = checkpoint.load(tmp_path / "ours.safetensors")
    assert same(model2, sd)


def test_num_classes_inferred_from_head(tmp_path) -> None:
    m = create_model(ARCH, num_classes=7)
    torch.save(m.state_dict(), tmp_path / "c7.pth")
    model, ck = checkpoint.load(tmp_path / "c7.pth", arch=ARCH)
    assert model.num_classes == 7 == ck.num_classes
    with pytest.raises(AdnError, match="7 classes"):
        checkpoint.load(tmp_path / "c7.pth", arch=ARCH, num_classes=10)


class Evil:
    def __reduce__(self):
        return (print, ("this would run",))


def test_pickle_needing_code_is_refused(tmp_path) -> None:
    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(AdnError, match="code execution") as err:
        checkpoint.read(tmp_path / "evil.pth")
    assert "safetensors" in err.value.paragraph()


def test_truncated_empty_missing(sd, tmp_path) -> None:
    torch.save(sd, tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(AdnError, match="truncated"):
        checkpoint.read(tmp_path / "cut.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(AdnError, match="empty"):
        checkpoint.read(tmp_path / "empty.pth")
    with pytest.raises(AdnError, match="does not exist"):
        checkpoint.read(tmp_path / "nope.pth")


def test_wrong_arch_names_first_mismatching_keys(sd, tmp_path) -> None:
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(AdnError) as err:
        checkpoint.load(tmp_path / "w.pth", arch="resnet_small")
    msg = err.value.paragraph()
    assert "resnet_small" in msg and ("missing keys" in msg or "shape mismatches" in msg)
    assert "--arch resnet_tiny" in msg


def test_guess_arch_tells_every_registered_arch_apart_by_names_and_shapes():
    """resnet50 and resnet_small share every tensor name: only the shapes tell them apart."""
    from adn_edge.checkpoint import guess_arch
    from adn_edge.models import create_model, list_models

    for arch in list_models():
        with torch.device("meta"):
            sd = create_model(arch, num_classes=7).state_dict()
        assert guess_arch(sd) == arch, arch
    with torch.device("meta"):
        sd = create_model("resnet50", num_classes=7).state_dict()
    sd["layer1.0.conv1.weight"] = torch.empty(1, 1, 1, 1, device="meta")
    assert guess_arch(sd) is None
