"""Every registered architecture against the official layout and its own forward.

Parametrised by the registry, so a new architecture is tested by registering it.
Tolerances: materialised (folded) module vs ADN forward, relative error <= 1e-5
(float32 folding noise is ~3e-7); they are compared on random, well-conditioned
official-format weights with independent ``_skip`` twins, so choosing the wrong twin,
dropping the wrong block or folding wrongly gives errors of order 1.
"""

from __future__ import annotations

import random

import pytest
import torch

from adn_edge import subnet
from adn_edge.flops import arch_costs
from adn_edge.materialize import materialize
from adn_edge.models.folding import Folder
from adn_edge.models import create_model, get_spec, list_models
from adn_edge.models.random_weights import calibrate_batchnorm
from tests._util import export_and_compare, keys_fixture, random_state_dict, rel_err, subnets_fixture

OFFICIAL = list_models(official=True)
ALL = list_models()
# Large models: a sampled subset of codes keeps the suite within CI's budget.
SAMPLED = {"resnet101": 5, "resnet101vd": 4, "vit_b_16": 5, "swin_t": 5}


def codes_for(arch: str) -> list[str]:
    codes = subnet.all_codes(get_spec(arch).num_stages)
    k = SAMPLED.get(arch)
    if k is None:
        return codes
    rest = random.Random(arch).sample(codes[1:-1], k - 2)
    return [codes[0], *rest, codes[-1]]


@pytest.fixture(scope="module")
def loaded_models() -> dict:
    return {}


def loaded(arch: str, cache: dict):
    if arch not in cache:
        model = create_model(arch)
        keys = keys_fixture(arch)["keys"] if get_spec(arch).official else None
        model.load_state_dict(random_state_dict(model, seed=1, keys=keys), strict=True)
        calibrate_batchnorm(model, get_spec(arch).input_size, seed=1, batch=4)
        cache[arch] = model.eval()
    return cache[arch]


@pytest.mark.parametrize("arch", OFFICIAL)
def test_state_dict_layout_matches_official(arch: str) -> None:
    fx = keys_fixture(arch)
    model = create_model(arch)
    ours = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]
    assert ours == fx["keys"]
    assert model.num_skippable_stages == fx["header"]["num_skippable_stages"]
    assert sum(p.numel() for p in model.parameters()) == fx["header"]["total_parameters"]


@pytest.mark.parametrize("arch", OFFICIAL)
def test_loads_official_keys_strictly_and_rejects_missing(arch: str, loaded_models: dict) -> None:
    model = loaded(arch, loaded_models)
    sd = random_state_dict(model, seed=2, keys=keys_fixture(arch)["keys"])
    model2 = create_model(arch)
    model2.load_state_dict(sd, strict=True)
    sd.pop(next(iter(sd)))
    with pytest.raises(RuntimeError):
        model2.load_state_dict(sd, strict=True)


@pytest.mark.parametrize("arch", OFFICIAL)
def test_stage_structure_matches_fixture(arch: str) -> None:
    """The blocks each flag removes and the twins it switches are the official ones."""
    fx = keys_fixture(arch)["stages"]
    model = create_model(arch)
    names = {n for n, _ in model.named_modules()}
    for stage in fx:
        for blk in stage["skippable_blocks"]:
            assert blk in names
        for main, twin in stage["norm_twins"]:
            assert main in names and twin in names


@pytest.mark.parametrize("arch", ALL)
def test_materialized_equals_adn_forward(arch: str, loaded_models: dict) -> None:
    model = loaded(arch, loaded_models)
    size = get_spec(arch).input_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    folder = Folder(model)
    refs = {}
    for code in codes_for(arch):
        with torch.no_grad():
            ref = model(x, skip=subnet.to_skip(code))
            out = materialize(model, code, folder)(x)
        refs[code] = ref
        assert out.shape == ref.shape
        assert rel_err(out, ref) <= 1e-5, code
    # The comparison above cannot pass vacuously: sub-networks really differ, and the
    # logits depend on the input (a random net with mismatched BN statistics would not).
    first, last = refs[codes_for(arch)[0]], refs[codes_for(arch)[-1]]
    assert rel_err(first, last) > 1e-2
    with torch.no_grad():
        other = model(x.flip(0), skip=subnet.to_skip(codes_for(arch)[-1]))
    assert rel_err(other, last) > 1e-2


@pytest.mark.parametrize("arch", [a for a in OFFICIAL if a in subnets_fixture()["archs"]])
def test_macs_and_params_match_official_measurements(arch: str) -> None:
    ref = subnets_fixture()["archs"][arch]["subnets"]
    costs = arch_costs(arch)
    assert set(costs) == set(ref)
    for code, cost in costs.items():
        assert cost.macs / 1e9 == pytest.approx(ref[code]["gmacs"], rel=1e-6), code
        assert cost.params == ref[code]["params_used"], code


# ViT, Swin and MobileNetV2 have their own export tests (narrow and full-size models).
ONNX_ARCHS = [a for a in ALL if get_spec(a).factory.__module__ == "adn_edge.models.resnet"]


@pytest.mark.parametrize("arch", ONNX_ARCHS)
def test_onnx_runtime_equals_adn_forward(arch: str, loaded_models: dict) -> None:
    """The exported graph (project exporter, dynamic batch) against the unfolded ADN
    forward, relative error <= 1e-4, for the super-net and a mixed sub-network."""
    model = loaded(arch, loaded_models)
    for code in ("1111", "0110"):
        export_and_compare(model, code, get_spec(arch).input_size, batches=(1,))
