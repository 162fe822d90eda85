"""Training: the recipe lowers the loss, writes both checkpoint formats, and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from adn_edge import checkpoint
from adn_edge.models import create_model
from adn_edge.train.adn_step import _ADNStep
from adn_edge.train.from_plain import copy_main_norms_to_twins, init_from_plain
from adn_edge.train.losses import feature_kd_loss, kd_loss
from adn_edge.train.trainer import train
from tests.train.conftest import fast_config


def _log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_few_steps_lower_the_loss_and_write_loadable_checkpoints(two_epoch_run):
    out, result = two_epoch_run
    steps = [r for r in _log(out) if r["event"] == "step"]
    assert len(steps) == 18 and all("base_kd" in r and "super_ce" in r for r in steps)
    first = sum(r["loss"] for r in steps[:3]) / 3
    last = sum(r["loss"] for r in steps[-3:]) / 3
    assert last < 0.8 * first, (first, last)
    ce_first = sum(r["super_ce"] for r in steps[:3]) / 3
    ce_last = sum(r["super_ce"] for r in steps[-3:]) / 3
    assert ce_last < 0.75 * ce_first, (ce_first, ce_last)
    epochs = [r for r in _log(out) if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert all(0.0 <= r["super_top1"] <= 100.0 and 0.0 <= r["base_top1"] <= 100.0 for r in epochs)

    own = result.model.state_dict()
    ours = checkpoint.read(out / "model.safetensors")
    assert ours.container == "adn-edge" and ours.header["arch"] == "resnet_tiny"
    official = checkpoint.read(out / "checkpoint.pth")  # weights_only=True inside
    assert official.container == "training" and official.weights == "model"
    plain = checkpoint.read(out / "model.pth")
    assert plain.container == "plain"
    raw = torch.load(out / "checkpoint.pth", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "args"} <= set(raw) and raw["epoch"] == 2
    for ck in (ours, official, plain):
        model = checkpoint.build_model(ck, "resnet_tiny")
        for k, v in model.state_dict().items():
            assert torch.equal(v, own[k].cpu()), k


def test_resume_continues_exactly(two_epoch_run, tmp_path):
    ref_dir, ref = two_epoch_run
    first = train(fast_config(tmp_path, epochs=3, stop_after_epochs=2))
    assert first.epochs_run == 2
    resumed = train(fast_config(tmp_path, epochs=3, resume=str(tmp_path / "checkpoint.pth")))
    assert resumed.epochs_run == 1 and resumed.history[0]["epoch"] == 3
    events = [r["event"] for r in _log(tmp_path)]
    assert events.count("resume") == 1 and events.count("epoch") == 3
    # Shuffling and augmentation depend only on (seed, epoch): resuming reproduces the uninterrupted run.
    a, b = resumed.model.state_dict(), ref.model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_ema_and_official_training_checkpoint(tmp_path):
    res = train(fast_config(tmp_path, epochs=1, train_fraction=0.1, ema=True, ema_steps=1, ema_decay=0.9))
    ck = checkpoint.read(tmp_path / "checkpoint.pth")
    assert ck.weights == "model_ema"  # auto prefers the EMA, as export does
    raw = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert "n_averaged" in raw["model_ema"] and any(k.startswith("module.") for k in raw["model_ema"])
    assert (tmp_path / "model_ema.safetensors").exists()
    assert "ema_super_top1" in res.history[-1]


def test_kd_loss_is_the_official_topk_kl():
    torch.manual_seed(0)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    full = torch.nn.functional.kl_div(torch.log_softmax(s / 2, 1), torch.softmax(t / 2, 1), reduction="batchmean") * 4
    assert torch.allclose(kd_loss(s, t, 2.0, 500), full)
    idx = t.topk(3, 1).indices
    part = torch.nn.functional.kl_div(torch.log_softmax(s.gather(1, idx), 1), torch.softmax(t.gather(1, idx), 1),
                                      reduction="batchmean")
    assert torch.allclose(kd_loss(s, t, 1.0, 3), part)


def test_feature_kd_taps_stage_outputs_and_targets_are_detached():
    torch.manual_seed(0)
    model = create_model("resnet_tiny").train()
    step = _ADNStep(model, "adn", feature_kd=True)
    out = step(torch.randn(4, 3, 16, 16))
    assert [f.shape[1] for f in out["super_feats"]] == [32, 64, 128]  # stages 2..4, as official layer2-4
    assert [f.shape[1] for f in out["base_feats"]] == [32, 64, 128]
    loss = feature_kd_loss(out["base_feats"], out["super_feats"], 1.0)
    loss.backward()
    # The super-net's skippable blocks get no gradient from the feature loss: its features are the target.
    assert model.layer4[1].conv1.weight.grad is None
    step.tap.remove()


def test_init_from_plain_copies_twins_from_main_norms():
    torch.manual_seed(0)
    donor = create_model("resnet_tiny")
    for m in donor.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight)
            m.running_mean.uniform_()
    plain = {k: v for k, v in donor.state_dict().items() if "_skip" not in k}
    plain["fc.weight"] = torch.zeros(5, 128)  # another head: left random, reported
    model = create_model("resnet_tiny")
    report = init_from_plain(model, plain, "donor.pth")
    assert report["twins_from_main"] > 0 and "fc.weight" in report["shape_mismatch"]
    assert torch.equal(model.layer1[0].bn1_skip.weight, donor.layer1[0].bn1.weight)
    assert torch.equal(model.layer1[0].bn1_skip.running_mean, donor.layer1[0].bn1.running_mean)
    assert torch.equal(model.conv1.weight, donor.conv1.weight)


def test_copy_main_norms_to_twins():
    model = create_model("resnet_tiny")
    with torch.no_grad():
        model.layer2[0].bn2.weight.fill_(3.0)
    assert copy_main_norms_to_twins(model) == 4 * 2  # 4 stages x 1 mandatory block x 2 norms
    assert torch.equal(model.layer2[0].bn2_skip.weight, model.layer2[0].bn2.weight)


def test_plain_mode_trains_only_the_super_net(tmp_path):
    res = train(fast_config(tmp_path, epochs=1, train_fraction=0.1, mode="plain"))
    steps = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines() if '"step"' in x]
    assert steps and all("base_kd" not in r for r in steps)
    m = res.model
    assert torch.equal(m.layer3[0].bn1_skip.running_var, m.layer3[0].bn1.running_var)


@pytest.mark.slow
def test_ddp_under_torchrun_with_gloo(tmp_path):
    """Two CPU processes under torchrun: DDP with gloo trains and rank 0 writes the checkpoint."""
    import os
    import subprocess
    import sys

    from tests._util import REPO

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "adn_edge.cli.app", "train", "--data", "builtin", "--input-size", "16", "--epochs", "1",
           "--train-fraction", "0.2", "--batch-size", "32", "--no-final-eval", "--threads", "1",
           "--out", str(tmp_path), "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2
    assert checkpoint.read(tmp_path / "checkpoint.pth").container == "training"
