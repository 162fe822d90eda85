"""Evaluation and recalibration: hand counts, eval.json, BN re-estimation per sub-network."""

from __future__ import annotations

import json

import pytest
import torch

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.models import create_model
from adn_edge.train import data as data_mod
from adn_edge.train.evaluate import evaluate_model, read_eval, topk_correct, write_eval
from adn_edge.train.recalibrate import calibration_batches, recalibrated, used_batchnorms
from adn_edge.train.data import TensorImages


@pytest.fixture(scope="module")
def prep():
    return data_mod.preprocess_for_arch("resnet_tiny", 16)


def test_topk_correct_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.0, 0.0, 0.0, 0.0],   # target 1: top-1 hit
                           [0.9, 0.1, 0.5, 0.4, 0.3, 0.2],   # target 1: 6th largest -> neither
                           [0.2, 0.1, 0.9, 0.8, 0.7, 0.0]])  # target 3: 2nd largest -> top-5 only
    assert topk_correct(logits, torch.tensor([1, 1, 3]), (1, 5)) == {1: 1, 5: 2}


def test_eval_matches_a_hand_count(two_epoch_run, prep):
    _, result = two_epoch_run
    model = result.model.eval()
    test = data_mod.load_builtin("digits", "test", prep)
    small = TensorImages(test.images[:40], test.labels[:40], test.classes, "digits", "test")
    codes = ["1111", "0101", "0000"]
    res = evaluate_model(model, small, codes, batch_size=16)
    for code in codes:
        with torch.no_grad():
            logits = model(small.images, skip=subnet.to_skip(code))
        order = logits.argsort(dim=1, descending=True)
        hand1 = sum(int(order[i, 0] == small.labels[i]) for i in range(40))
        hand5 = sum(int(small.labels[i] in order[i, :5].tolist()) for i in range(40))
        got = res.subnets[code]
        assert (got.correct1, got.correct5, got.samples) == (hand1, hand5, 40), code
        assert got.top1 == pytest.approx(100.0 * hand1 / 40)


def test_eval_json_shape_and_merge(tmp_path, two_epoch_run, prep):
    model = two_epoch_run[1].model
    test = data_mod.load_builtin("digits", "test", prep)
    write_eval(tmp_path, evaluate_model(model, test, ["super"]))
    write_eval(tmp_path, evaluate_model(model, test, ["base"]))
    rec = read_eval(tmp_path)
    assert {"schema", "dataset", "split", "samples", "source", "subnets"} <= set(rec)
    assert rec["schema"] == 1 and rec["source"] == "pytorch" and rec["split"] == "test" and rec["samples"] == 360
    assert set(rec["subnets"]) == {"1111", "0000"}
    for s in rec["subnets"].values():
        assert 0 <= s["top1"] <= 100 and s["top5"] is not None and s["samples"] == 360
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind


def test_default_is_every_subnetwork(two_epoch_run, prep):
    test = data_mod.load_builtin("digits", "test", prep)
    small = TensorImages(test.images[:8], test.labels[:8], test.classes, "digits", "test")
    res = evaluate_model(two_epoch_run[1].model, small)
    assert sorted(res.subnets) == sorted(subnet.all_codes(4)) and next(iter(res.subnets)) == "1111"


def test_recalibration_changes_bn_stats_and_keeps_or_improves_accuracy(two_epoch_run, prep):
    model = two_epoch_run[1].model.eval()
    train_set = data_mod.load_builtin("digits", "train", prep)
    test = data_mod.load_builtin("digits", "test", prep)
    batches = calibration_batches(train_set, 256, 64)
    code = "1010"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recal = recalibrated(model, code, batches)
    for k, v in model.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k]), k
    used = {id(m) for m in used_batchnorms(recal, code, batches[0])}
    names = {id(m): n for n, m in recal.named_modules()}
    used_names = {names[i] for i in used}
    assert "bn1" in used_names and "layer2.0.downsample.1" in used_names  # shared BNs without twins
    assert "layer2.0.bn1_skip" in used_names and "layer1.0.bn1_skip" not in used_names
    rs = recal.state_dict()
    assert not torch.allclose(rs["bn1.running_mean"], before["bn1.running_mean"])
    assert not torch.allclose(rs["layer2.0.bn1_skip.running_var"], before["layer2.0.bn1_skip.running_var"])
    assert torch.equal(rs["layer1.0.bn1_skip.running_mean"], before["layer1.0.bn1_skip.running_mean"])  # unused
    assert torch.equal(rs["conv1.weight"], before["conv1.weight"])  # weights untouched
    acc_before = evaluate_model(model, test, [code]).subnets[code].top1
    acc_after = evaluate_model(model, test, [code], recalibrate_with=batches).subnets[code].top1
    assert acc_after >= acc_before - 1.0, (acc_before, acc_after)


def test_recalibration_refuses_layernorm_archs():
    with torch.device("meta"):
        vit = create_model("vit_b_16")
    with pytest.raises(AdnError, match="LayerNorm"):
        recalibrated(vit, "1111", [torch.zeros(2, 3, 224, 224)])


def test_recalibration_is_order_independent(two_epoch_run, prep):
    """Cumulative averaging: the same images in another batch order give the same statistics."""
    model = two_epoch_run[1].model
    train_set = data_mod.load_builtin("digits", "train", prep)
    batches = calibration_batches(train_set, 128, 64)
    a = recalibrated(model, "0110", batches).state_dict()
    b = recalibrated(model, "0110", batches[::-1]).state_dict()
    assert torch.allclose(a["bn1.running_mean"], b["bn1.running_mean"], atol=1e-5)


def test_directory_eval_through_the_runtime_matches_pytorch(two_epoch_run, tmp_path, prep):
    runtime = pytest.importorskip("adn_edge.runtime")
    if not hasattr(runtime, "EngineSwitcher"):
        pytest.skip("adn_edge.runtime.EngineSwitcher is not available yet")
    pytest.importorskip("onnxruntime")
    from adn_edge.export import ExportOptions, export
    from adn_edge.train.evaluate import evaluate_directory, preprocess_for_directory

    model = two_epoch_run[1].model.eval()
    export(model, tmp_path, ["1111", "0101"], options=ExportOptions(input_size=16))
    dprep = preprocess_for_directory(tmp_path)
    assert dprep == prep
    test = data_mod.load_builtin("digits", "test", dprep)
    small = TensorImages(test.images[:64], test.labels[:64], test.classes, "digits", "test")
    res = evaluate_directory(tmp_path, small, "all", backend="onnxruntime")
    ref = evaluate_model(model, small, ["1111", "0101"])
    assert set(res.subnets) == {"1111", "0101"} and res.source != "pytorch"
    for c in res.subnets:
        assert res.subnets[c].correct1 == ref.subnets[c].correct1
    write_eval(tmp_path, res)
    assert json.loads((tmp_path / "eval.json").read_text())["source"] == res.source


def test_segmented_directory_eval_covers_every_chain(two_epoch_run, tmp_path, prep):
    """``--segmented`` evaluates the segment chains: all 2^S sub-networks (only two were
    exported whole), each as accurate as PyTorch, written beside eval.json, not over it."""
    from adn_edge import subnet
    from adn_edge.export import ExportOptions, export
    from adn_edge.export.segments import export_segments
    from adn_edge.train.evaluate import evaluate_directory, preprocess_for_directory

    model = two_epoch_run[1].model.eval()
    opts = ExportOptions(input_size=16)
    export(model, tmp_path, ["1111", "0101"], options=opts)
    export_segments(model, tmp_path, options=opts)
    test = data_mod.load_builtin("digits", "test", preprocess_for_directory(tmp_path))
    small = TensorImages(test.images[:64], test.labels[:64], test.classes, "digits", "test")
    res = evaluate_directory(tmp_path, small, "all", backend="onnxruntime", segmented=True)
    ref = evaluate_model(model, small, "all")
    assert set(res.subnets) == set(subnet.all_codes(4))
    for c in res.subnets:
        assert res.subnets[c].correct1 == ref.subnets[c].correct1, c
    rec = res.record()
    assert (rec["source"], rec["precision"], rec["segmented"]) == ("onnxruntime-segmented", "fp32", True)
    write_eval(tmp_path, evaluate_directory(tmp_path, small, "all", backend="onnxruntime"))
    path = write_eval(tmp_path, res, variant="fp32-segmented")
    assert path.name == "eval-fp32-segmented.json"
    assert json.loads((tmp_path / "eval.json").read_text())["segmented"] is False


def test_joint_recalibration_averages_the_statistics_of_each_sub_network(two_epoch_run, prep):
    """One set for all: a BN's joint statistics are the mean of the per-sub-network ones
    (same images, same batch count each), BNs that no sub-network runs are untouched."""
    from adn_edge.train.recalibrate import recalibrated_jointly

    model = two_epoch_run[1].model
    batches = calibration_batches(data_mod.load_builtin("digits", "train", prep), 128, 64)
    joint = recalibrated_jointly(model, ["1100", "0100"], batches).state_dict()
    a = recalibrated(model, "1100", batches).state_dict()
    b = recalibrated(model, "0100", batches).state_dict()
    key = "layer2.0.bn1"  # stage 2's main norm: its input differs between the two codes
    for stat in ("running_mean", "running_var"):
        assert not torch.allclose(a[f"{key}.{stat}"], b[f"{key}.{stat}"], atol=1e-3)
        torch.testing.assert_close(joint[f"{key}.{stat}"], (a[f"{key}.{stat}"] + b[f"{key}.{stat}"]) / 2,
                                   rtol=1e-4, atol=1e-5)
    # Stage 1: main norms only in 1100, twins only in 0100, each from that one sub-network.
    torch.testing.assert_close(joint["layer1.0.bn1.running_mean"], a["layer1.0.bn1.running_mean"])
    torch.testing.assert_close(joint["layer1.0.bn1_skip.running_mean"], b["layer1.0.bn1_skip.running_mean"])
    # Both codes skip stage 4: its main norms run in neither, the trained statistics stay.
    original = model.state_dict()
    torch.testing.assert_close(joint["layer4.0.bn1.running_mean"], original["layer4.0.bn1.running_mean"])
    with pytest.raises(AdnError):
        recalibrated_jointly(model, [], batches)
