"""ViT-B/16-ADN specifics that the registry-wide zoo tests do not see.

The zoo tests check layout, strict loading, MACs/params and static == ADN forward.
Here: which layers and norms each flag switches (against the official fixture),
the attention against ``nn.MultiheadAttention``, the fixed input size, and ONNX
export with a dynamic batch. Behaviour tests use a narrow model of the same class
(identical module tree, tiny widths) so they run in milliseconds on CPU; the real
size is checked on the meta device and by one full-size export.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.materialize import materialize
from adn_edge.models import create_model
from adn_edge.models.vit import SelfAttention, ViTADN
from tests._util import (
    assert_follows_official_trace,
    assert_parts_depend_only_on_their_flag,
    assert_perturbation_hits_exactly,
    export_and_compare,
    random_state_dict,
    rel_err,
)

CODES = subnet.all_codes(4)
pytestmark = pytest.mark.usefixtures("one_thread")


def narrow_vit(seed: int = 0) -> ViTADN:
    model = ViTADN(image_size=32, patch_size=8, hidden_dim=32, num_heads=4, mlp_dim=64, num_classes=10).eval()
    model.load_state_dict(random_state_dict(model, seed=seed))
    return model


def test_each_flag_runs_the_official_layers_and_norms() -> None:
    """Every code against the official trace (narrow model: the same module tree)."""
    model = narrow_vit()
    x = torch.randn(1, 3, 32, 32)
    for code, ran in assert_follows_official_trace(model, "vit_b_16", x, CODES).items():
        layers = {n for n in ran if n.count(".") == 2 and n.startswith("encoder.layers.")}
        assert len(layers) == 12 - code.count("0"), code
        assert {"conv_proj", "encoder", "encoder.ln", "heads.head"} <= ran


@pytest.mark.parametrize(("param", "stage", "changes_when_skipped"), [
    ("encoder.layers.encoder_layer_4.ln_1_skip.weight", 1, True),
    ("encoder.layers.encoder_layer_4.ln_2.bias", 1, False),
    ("encoder.layers.encoder_layer_5.mlp.3.weight", 1, False),  # the skippable layer of stage 1
    ("encoder.layers.encoder_layer_9.ln_2_skip.bias", 3, True),
    ("encoder.layers.encoder_layer_8.self_attention.in_proj_weight", 2, False),
])
def test_perturbing_one_tensor_changes_exactly_the_codes_that_read_it(
        param: str, stage: int, changes_when_skipped: bool) -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert_perturbation_hits_exactly(narrow_vit(), x, CODES, param, stage, changes_when_skipped)


def test_attention_matches_torch_multihead_attention() -> None:
    """Same parameter names, same packed q/k/v order, same arithmetic."""
    torch.manual_seed(0)
    ours = SelfAttention(32, 4).eval()
    ref = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(std=0.2)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        expected, _ = ref(x, x, x, need_weights=False)
        assert rel_err(ours(x), expected) < 1e-6


def test_skip_argument_semantics() -> None:
    model = narrow_vit()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        sup = model(x, skip=[False] * 4)
        # Omitted or None: the super-net (the official model raises TypeError for None).
        assert torch.equal(model(x), sup) and torch.equal(model(x, skip=None), sup)
        # Official "== True" semantics: only True-like entries skip.
        assert torch.equal(model(x, skip=["True", 0, False, False]), sup)
        assert torch.equal(model(x, skip=[1, 0, 0, 0]), model(x, skip=[True, False, False, False]))
    with pytest.raises(AdnError):
        model(x, skip=[True] * 3)


@pytest.mark.parametrize("hw", [(192, 192), (224, 192), (256, 256)])
def test_rejects_other_input_sizes_clearly(hw: tuple[int, int]) -> None:
    with torch.device("meta"):
        model = create_model("vit_b_16")
    x = torch.zeros(1, 3, *hw, device="meta")
    with pytest.raises(AdnError, match="224x224"):
        model(x)
    with pytest.raises(AdnError, match="224x224"):
        materialize(model, "1010")(x)


def test_static_module_holds_only_kept_layers_and_chosen_norms() -> None:
    model = narrow_vit()
    static = materialize(model, "1001")
    held = {id(t) for t in static.parameters()}
    names = {n for n, p in model.named_parameters() if id(p) in held}
    for i in range(12):
        stage, skippable = i // 3, i % 3 == 2
        skipped = "1001"[stage] == "0"
        prefix = f"encoder.layers.encoder_layer_{i}."
        assert (prefix + "mlp.0.weight" in names) == (not (skipped and skippable)), i
        if not skippable:
            assert (prefix + "ln_1_skip.weight" in names) == skipped
            assert (prefix + "ln_1.weight" in names) == (not skipped)
    assert {"class_token", "encoder.pos_embedding", "conv_proj.weight", "encoder.ln.weight"} <= names


def test_static_part_k_depends_only_on_flag_k() -> None:
    assert_parts_depend_only_on_their_flag(narrow_vit(), CODES)


@pytest.mark.parametrize("code", ["1111", "0000", "1010"])
def test_onnx_export_dynamic_batch_matches_adn_forward(code: str, tmp_path) -> None:
    """Exported at batch 2, run at batch 1 and 3 (narrow model: same graph, small weights)."""
    export_and_compare(narrow_vit(), code, 32, (1, 3))


@pytest.mark.slow
def test_onnx_export_full_size(tmp_path) -> None:
    """The real ViT-B/16 (fresh init; twin choice is covered by the zoo tests)."""
    torch.manual_seed(0)
    export_and_compare(create_model("vit_b_16"), "0110", 224, (1,))
