"""MobileNetV2-ADN specifics that the registry-wide zoo tests do not cover.

MobileNetV2 is the one architecture whose bare forward is the base-net, and whose
layers outside the skippable stages switch norms with the first (features.0/1) or the
last (features.7/8) flag. Both are easy to get wrong while every generic test still
passes for the super-net, so they are pinned here, plus the ONNX export path.

Weights: ``random_state_dict`` alone makes this network almost input-independent
(52 convs whose random running statistics do not match their inputs shrink the signal
until the BN biases dominate; two different inputs give logits within ~1e-7 relative),
so an error in the early layers would hide below any float tolerance. The tests here
therefore recalibrate every BN's running statistics on a batch (main norms on the
super-net, twins on the base-net) and damp the residual branches, as
``adn_edge.models.random_weights.calibrate_batchnorm`` does for every family.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.materialize import materialize, stable_names
from adn_edge.models.folding import Folder
from adn_edge.models import create_model
from adn_edge.models.mobilenetv2 import MobileNetV2ADN
from adn_edge.models.random_weights import calibrate_batchnorm
from tests._util import export_and_compare, keys_fixture, random_state_dict, rel_err

ARCH = "mobilenet_v2"
CODES = subnet.all_codes(5)
# The model accepts any resolution; a small one keeps the 32-code sweeps fast.
SMALL = 64


def _x(size: int = SMALL, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _calibrated(seed: int) -> MobileNetV2ADN:
    """Random official-format weights whose BN statistics match the activations."""
    m = create_model(ARCH)
    assert isinstance(m, MobileNetV2ADN)
    m.load_state_dict(random_state_dict(m, seed=seed, keys=keys_fixture(ARCH)["keys"]), strict=True)
    calibrate_batchnorm(m, SMALL, seed=99, batch=16)
    return m.eval()


@pytest.fixture(scope="module")
def model() -> MobileNetV2ADN:
    return _calibrated(seed=7)


def test_calibrated_model_depends_on_its_input(model: MobileNetV2ADN) -> None:
    with torch.no_grad():
        for code in ("11111", "00000"):
            a = model(_x(seed=1), skip=subnet.to_skip(code))
            b = model(_x(seed=2), skip=subnet.to_skip(code))
            assert rel_err(a, b) > 0.05, code


def test_materialized_equals_adn_forward_all_codes(model: MobileNetV2ADN) -> None:
    """The zoo test's parity check again, on weights where early layers matter."""
    x = _x(seed=3)
    folder = Folder(model)
    ref = _all_outputs(model, x)
    with torch.no_grad():
        for code in CODES:
            assert rel_err(materialize(model, code, folder)(x), ref[code]) <= 1e-5, code
    # Flipping only the first flag (features.0-2) must matter as much as any other.
    assert rel_err(ref["01111"], ref["11111"]) > 1e-2


def _all_outputs(model: MobileNetV2ADN, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {c: model(x, skip=subnet.to_skip(c)) for c in CODES}


def test_skip_omitted_or_none_is_base_net(model: MobileNetV2ADN) -> None:
    x = _x()
    with torch.no_grad():
        base = model(x, skip=[True] * 5)
        sup = model(x, skip=[False] * 5)
        assert torch.equal(model(x), base)
        assert torch.equal(model(x, skip=None), base)
        assert torch.equal(model.forward_code(x, "base"), base)
    assert rel_err(sup, base) > 1e-2


def test_official_flag_truthiness(model: MobileNetV2ADN) -> None:
    """Only values ``== True`` skip: 1 does, the string "True" does not (docs/official-format.md 1.1)."""
    x = _x()
    with torch.no_grad():
        assert torch.equal(model(x, skip=[1] * 5), model(x, skip=[True] * 5))
        assert torch.equal(model(x, skip=["True"] * 5), model(x, skip=[False] * 5))


@pytest.mark.parametrize("n", [0, 4, 6])
def test_wrong_length_skip_raises(model: MobileNetV2ADN, n: int) -> None:
    with pytest.raises(AdnError, match="5 skippable stages"):
        model(_x(), skip=[False] * n)


def test_feature_flags_layout(model: MobileNetV2ADN) -> None:
    # features.0/1 -> first flag, stages 2..6 -> flags 0..4, features.7/8 -> last flag.
    assert model.feature_flags == (0, 0, 0, 1, 2, 3, 4, 4, 4)
    assert model.stage_indices == [2, 3, 4, 5, 6]
    assert model.mandatory_counts == [1, 2, 2, 2, 2]


def test_executed_norms_follow_the_official_stage_table() -> None:
    """For every code, exactly the norms the fixture's ``stages`` list predicts run.

    Counted on the meta device (no arithmetic), so all 32 codes are cheap.
    """
    stages = keys_fixture(ARCH)["stages"]
    with torch.device("meta"):
        m = create_model(ARCH)
    names = {id(mod): n for n, mod in m.named_modules()}
    bn_names = {n for n, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d)}
    seen: set[str] = set()
    handles = [mod.register_forward_hook(lambda mod, i, o: seen.add(names[id(mod)]))
               for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    try:
        for code in CODES:
            skip = subnet.to_skip(code)
            expected: set[str] = set()
            for st in stages:
                k = st["flag_index"]
                expected |= {twin if skip[k] else main for main, twin in st["norm_twins"]}
                if not skip[k]:
                    expected |= {n for n in bn_names if any(n.startswith(b + ".") for b in st["skippable_blocks"])}
            seen.clear()
            with torch.no_grad():
                m(torch.zeros(1, 3, 224, 224, device="meta"), skip=skip)
            assert seen == expected, code
    finally:
        for h in handles:
            h.remove()
    # Every BN of the model belongs to some stage of the table (nothing is flag-invariant).
    covered = {n for st in stages for pair in st["norm_twins"] for n in pair}
    skippable = {n for st in stages for n in bn_names if any(n.startswith(b + ".") for b in st["skippable_blocks"])}
    assert covered | skippable == bn_names


@pytest.fixture(scope="module")
def perturb_refs(model: MobileNetV2ADN) -> dict[str, torch.Tensor]:
    return _all_outputs(model, _x(n=1, seed=4))


@pytest.mark.parametrize(("norm", "flag", "used_when_skipped"), [
    ("features.0.norm_skip", 0, True),
    ("features.0.norm", 0, False),
    ("features.1.conv.1.norm_skip", 0, True),
    ("features.7.conv.0.norm_skip", 4, True),
    ("features.8.norm_skip", 4, True),
    ("features.8.norm", 4, False),
])
def test_twin_choice_by_perturbation(model: MobileNetV2ADN, perturb_refs: dict[str, torch.Tensor], norm: str,
                                     flag: int, used_when_skipped: bool) -> None:
    """Perturbing one norm changes exactly the codes whose flag selects it."""
    bn = model.get_submodule(norm)
    assert isinstance(bn, nn.BatchNorm2d) and bn.bias is not None and bn.running_mean is not None
    saved = {k: v.clone() for k, v in bn.state_dict().items()}
    try:
        with torch.no_grad():
            bn.bias.add_(0.5)
            bn.running_mean.add_(0.3)
        out = _all_outputs(model, _x(n=1, seed=4))
    finally:
        bn.load_state_dict(saved)
    changed = {c for c in CODES if not torch.equal(out[c], perturb_refs[c])}
    expected = {c for c in CODES if (c[flag] == "0") == used_when_skipped}
    assert changed == expected
    assert all(rel_err(out[c], perturb_refs[c]) > 1e-2 for c in expected)


def test_static_structure_and_sharing(model: MobileNetV2ADN) -> None:
    folder = Folder(model)
    sup, base = materialize(model, "11111", folder), materialize(model, "00000", folder)
    for static, convs, blocks in ((sup, 52, 17), (base, 34, 11)):
        mods = list(static.modules())
        assert not any(isinstance(mm, nn.BatchNorm2d) for mm in mods)
        assert sum(isinstance(mm, nn.Conv2d) for mm in mods) == convs
        units = [u for part in static.body for u in part][:-1]  # the last unit of the last part is the head
        assert len(units) == blocks + 2
        assert sum(isinstance(mm, nn.ReLU6) for mm in mods) == 2 * blocks - 1 + 2  # t=1 block has one
        assert not any(isinstance(mm, nn.Dropout) for mm in mods)
    # features.0 follows flag 0 and features.8 flag 4: shared exactly when those flags agree.
    s01111, s11110 = materialize(model, "01111", folder), materialize(model, "11110", folder)
    first = lambda s: s.body[0][0][0]  # noqa: E731  (part 0, unit features.0, its conv)
    last = lambda s: s.body[-1][-2][0]  # noqa: E731  (last part, unit features.8, its conv)
    assert first(s01111) is first(base) and first(s01111) is not first(sup)
    assert last(s01111) is last(sup) and last(s11110) is last(base)
    assert s01111.body[-1][-1].fc is model.classifier[1]

    names_base, names_sup = stable_names(base, folder), stable_names(sup, folder)
    assert len(names_base) == len(set(names_base.values()))
    assert "features.0.conv_layer.weight.skip" in names_base.values()
    assert "features.8.conv_layer.bias.skip" in names_base.values()
    assert "features.0.conv_layer.weight" in names_sup.values()
    assert "features.2.1.conv.0.conv_layer.weight" in names_sup.values()
    assert "features.2.1.conv.0.conv_layer.weight" not in names_base.values()
    assert "classifier.1.weight" in names_sup.values()


def test_num_classes_and_other_resolutions() -> None:
    m = create_model(ARCH, num_classes=10)
    assert m.num_classes == 10
    with torch.no_grad():
        assert m(_x(32, n=3), skip=[False] * 5).shape == (3, 10)
        assert materialize(m, "10101")(_x(96, n=1)).shape == (1, 10)


@pytest.mark.parametrize("code", ["11111", "00000", "01101", "10010"])
def test_onnx_export_matches_adn_forward(model: MobileNetV2ADN, code: str) -> None:
    graph = export_and_compare(model, code, 224, batches=(3,))  # batch 3 != export batch: dynamic
    assert "Clip" in {n.op_type for n in graph.graph.node}
