"""The sandwich option (``--sandwich K``): which mixed sub-networks a step draws, that
their skipped stages run on the skip-aware twins, that they leave running statistics
alone, and that a seed and a step fix the draw (the resume guarantee)."""

from __future__ import annotations

import collections
import json
import copy

import pytest
import torch

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.models import create_model
from adn_edge.models.folding import TWIN_SUFFIX
from adn_edge.train.adn_step import SubnetSampler, _ADNStep, frozen_running_stats, mixed_codes
from adn_edge.train.losses import kd_loss, recipe_losses

from tests.train.conftest import fast_config


def test_mixed_codes_are_everything_but_the_ends():
    codes = mixed_codes(4)
    assert len(codes) == 14 and len(set(codes)) == 14
    assert "1111" not in codes and "0000" not in codes and "1000" in codes and "0111" in codes
    assert mixed_codes(1) == []


def test_sampler_draws_distinct_mixed_codes_uniformly_and_deterministically():
    s = SubnetSampler(4, 2, seed=3)
    counts: collections.Counter[str] = collections.Counter()
    for step in range(2100):
        drawn = s.draw(step)
        assert len(drawn) == 2 and len(set(drawn)) == 2 and set(drawn) <= set(mixed_codes(4))
        counts.update(drawn)
    # 4200 draws over 14 codes: 300 expected each; 5 sigma of a binomial is ~83.
    assert set(counts) == set(mixed_codes(4))
    assert all(abs(n - 300) < 90 for n in counts.values()), counts
    # A function of (seed, step) only: a second sampler (another rank, a resumed run) agrees.
    again = SubnetSampler(4, 2, seed=3)
    assert [again.draw(t) for t in (0, 17, 999)] == [s.draw(t) for t in (0, 17, 999)]
    other = SubnetSampler(4, 2, seed=4)
    assert [other.draw(t) for t in range(20)] != [s.draw(t) for t in range(20)]
    assert [s.draw(t) for t in range(20)] != [s.draw(0)] * 20
    # k larger than the mixed set is capped; S=1 has nothing to draw.
    assert sorted(SubnetSampler(2, 9, 0).draw(0)) == ["01", "10"]
    assert SubnetSampler(1, 3, 0).draw(5) == []


def _twin_calls(model, fn):
    calls: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _i, n=name: calls.append(n))
             for name, m in model.named_modules() if name.endswith(TWIN_SUFFIX)]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return calls


def test_mixed_pass_is_the_sub_network_with_its_twins_and_frozen_statistics():
    torch.manual_seed(0)
    model = create_model("resnet_tiny").train()
    x = torch.randn(8, 3, 16, 16)
    step = _ADNStep(model, "adn", feature_kd=False, sandwich=2, seed=1)
    step.step = 5
    codes = step.sampler.draw(5)
    before = copy.deepcopy(model.state_dict())
    reference = copy.deepcopy(model)
    out = step(x)
    assert out["mixed_codes"] == codes and len(out["mixed"]) == 2
    # Running statistics moved only by the super- and base-net passes: a step without
    # the sandwich passes leaves exactly the same buffers.
    plain_step = _ADNStep(reference, "adn", feature_kd=False)
    plain_step(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference.state_dict()[k]), k
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items() if "running_mean" in k)
    # Each mixed output is the sub-network itself (train mode, statistics frozen) ...
    for code, logits in zip(codes, out["mixed"], strict=True):
        probe = copy.deepcopy(model)
        with frozen_running_stats(probe):
            expect = probe(x, skip=subnet.to_skip(code))
        torch.testing.assert_close(logits, expect, rtol=1e-5, atol=1e-6)
        # ... whose skipped stages, and only those, run on the twins.
        calls = _twin_calls(probe, lambda p=probe, c=code: p(x, skip=subnet.to_skip(c)))
        stages = {int(name.split(".")[0].removeprefix("layer")) - 1 for name in calls}
        assert stages == {k for k, bit in enumerate(code) if bit == "0"}, (code, calls)


def test_sandwich_loss_distils_each_mixed_net_from_the_detached_super_net():
    torch.manual_seed(0)
    model = create_model("resnet_tiny").train()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    cfg = fast_config("unused", sandwich=2)
    step = _ADNStep(model, "adn", feature_kd=False, sandwich=2, seed=0)
    out = step(x)
    losses = recipe_losses(cfg, out, y)
    teacher = out["super"].detach()
    mixed = sum(kd_loss(m, teacher, cfg.temperature, cfg.topk) for m in out["mixed"])
    torch.testing.assert_close(losses["mixed_kd"], mixed)
    expect = cfg.alpha * losses["super_ce"] + (1 - cfg.alpha) * (losses["base_kd"] + mixed)
    torch.testing.assert_close(losses["loss"], expect)
    # The mixed terms pull on the students only: nothing flows back into the super-net's
    # logits (the teacher is detached), while the base-net's would get a gradient.
    out["super"].retain_grad()
    losses["mixed_kd"].backward(retain_graph=True)
    assert out["super"].grad is None
    out["base"].retain_grad()
    losses["base_kd"].backward()
    assert out["base"].grad is not None and out["super"].grad is None


def test_sandwich_config_is_checked():
    with pytest.raises(AdnError, match="--sandwich"):
        fast_config("x", sandwich=-1).validate()
    with pytest.raises(AdnError, match="plain"):
        fast_config("x", sandwich=1, mode="plain").validate()
    fast_config("x", sandwich=1).validate()


def test_sandwich_training_resumes_exactly(tmp_path):
    from adn_edge.train.trainer import train

    ref = train(fast_config(tmp_path / "ref", epochs=2, train_fraction=0.1, sandwich=1))
    steps = [json.loads(line) for line in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    assert all(r["mixed_kd"] > 0 for r in steps if r.get("event") == "step")
    first = train(fast_config(tmp_path / "cut", epochs=2, train_fraction=0.1, sandwich=1, stop_after_epochs=1))
    assert first.epochs_run == 1
    resumed = train(fast_config(tmp_path / "cut", epochs=2, train_fraction=0.1, sandwich=1,
                                resume=str(tmp_path / "cut" / "checkpoint.pth")))
    a, b = resumed.model.state_dict(), ref.model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_train_help_documents_sandwich_and_the_cli_passes_it(tmp_path):
    from typer.testing import CliRunner

    from adn_edge.cli.app import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--sandwich" in help_text and "mixed" in help_text
    res = runner.invoke(app, ["train", "--arch", "resnet_tiny", "--data", "builtin", "--input-size", "16",
                              "--train-fraction", "0.05", "--epochs", "1", "--sandwich", "2", "--no-final-eval",
                              "--threads", "1", "--log-every", "1", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    ck = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert ck["args"]["sandwich"] == 2
    steps = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any("mixed_kd" in r for r in steps if r.get("event") == "step")
