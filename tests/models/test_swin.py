"""Swin-T-ADN specifics that the registry-wide zoo tests do not see.

The zoo tests check layout, strict loading, MACs/params and static == ADN forward.
Here: which blocks and norms each flag switches (against the official fixture,
including the patch-merging twin that follows the *next* stage's flag), shifted
window attention against a brute-force global formulation, the patch-merging phase
order, and ONNX export with a dynamic batch. Behaviour tests use a narrow model of
the same class (identical module tree, tiny widths) so they run fast on CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adn_edge import subnet
from adn_edge.materialize import materialize
from adn_edge.models import create_model
from adn_edge.models.swin import ShiftedWindowAttention, SwinADN, merge_phases
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


def narrow_swin(seed: int = 0, input_size: int = 112) -> SwinADN:
    """Stage maps 28, 14, 7, 4 at 112: shifted stages, a window-sized one, a padded one."""
    model = SwinADN(embed_dim=16, num_heads=(1, 2, 4, 8), num_classes=10, input_size=input_size).eval()
    model.load_state_dict(random_state_dict(model, seed=seed))
    return model


def test_each_flag_runs_the_official_blocks_and_norms() -> None:
    model = narrow_swin()
    x = torch.randn(1, 3, 112, 112)
    for code, ran in assert_follows_official_trace(model, "swin_t", x, CODES).items():
        assert {"pre.2", "features.1", "features.3", "features.5", "norm", "head"} <= ran


@pytest.mark.parametrize(("param", "stage", "changes_when_skipped"), [
    ("features.1.norm_skip.weight", 1, True),  # patch merging 1 follows stage 2's flag, not stage 1's
    ("features.1.norm.bias", 1, False),
    ("features.5.norm_skip.bias", 3, True),
    ("features.0.0.norm1_skip.weight", 0, True),
    ("features.4.2.norm2_skip.bias", 2, True),
    ("features.4.3.mlp.0.weight", 2, False),  # first skippable block of stage 3
    ("features.6.1.attn.relative_position_bias_table", 3, False),
])
def test_perturbing_one_tensor_changes_exactly_the_codes_that_read_it(
        param: str, stage: int, changes_when_skipped: bool) -> None:
    x = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    assert_perturbation_hits_exactly(narrow_swin(), x, CODES, param, stage, changes_when_skipped)


def test_shift_pattern_at_224() -> None:
    """Odd blocks shift by 3, except in stage 4 where one window covers the 7x7 map;
    a skipped stage's mandatory blocks keep their pattern (they are the same modules)."""
    with torch.device("meta"):
        model = create_model("swin_t")
    assert isinstance(model, SwinADN)
    for k, size in enumerate((56, 28, 14, 7)):
        for i, blk in enumerate(model.stage_blocks(k, skipped=False)):
            shift, mask = blk.attn.plan(size, size, device="meta")
            expected = (3, 3) if i % 2 and k < 3 else (0, 0)
            assert shift == expected, (k, i)
            assert (mask is None) == (expected == (0, 0))


def reference_window_attention(attn: ShiftedWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Global attention over the whole map with an explicit pair mask, no roll or partition.

    Pair (i, j) attends iff both fall in the same window of the map rolled by -shift;
    inside a window, pairs where one token wrapped around an edge and the other did
    not get -100 (the official value). Bias from the table by in-window offset.
    """
    _, h, w, c = x.shape
    ws, heads = attn.window, attn.num_heads
    sh, sw = (0 if ws >= h else attn.shift), (0 if ws >= w else attn.shift)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    ry, rx = (ys - sh) % h, (xs - sw) % w
    same_window = (ry[:, None] // ws == ry[None, :] // ws) & (rx[:, None] // ws == rx[None, :] // ws)
    wy, wx = ys < sh, xs < sw
    same_region = (wy[:, None] == wy[None, :]) & (wx[:, None] == wx[None, :])
    dy = (ry[:, None] - ry[None, :]).clamp(-(ws - 1), ws - 1) + ws - 1
    dx = (rx[:, None] - rx[None, :]).clamp(-(ws - 1), ws - 1) + ws - 1
    bias = attn.relative_position_bias_table[dy * (2 * ws - 1) + dx].permute(2, 0, 1)  # [heads, L, L]
    qkv = attn.qkv(x.reshape(h * w, c)).reshape(h * w, 3, heads, c // heads).permute(1, 2, 0, 3)
    q, k, v = qkv[0], qkv[1], qkv[2]
    logits = q @ k.transpose(-2, -1) * (c // heads) ** -0.5 + bias
    logits = logits + (~same_region).float() * -100.0
    logits = logits.masked_fill(~same_window, float("-inf"))
    out = (logits.softmax(-1) @ v).permute(1, 0, 2).reshape(1, h, w, c)
    return attn.proj(out)


@pytest.mark.parametrize("hw", [(14, 14), (14, 21), (7, 14), (7, 7)])
def test_shifted_window_attention_matches_global_reference(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    attn = ShiftedWindowAttention(dim=16, window=7, shift=3, num_heads=2).eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_(std=1.0)
        x = torch.randn(1, *hw, 16)
        assert rel_err(attn(x), reference_window_attention(attn, x)) < 1e-5


def test_patch_merging_phase_order() -> None:
    x = torch.randn(2, 5, 7, 3)
    xp = F.pad(x, (0, 0, 0, 1, 0, 1))
    expected = torch.cat([xp[:, 0::2, 0::2], xp[:, 1::2, 0::2], xp[:, 0::2, 1::2], xp[:, 1::2, 1::2]], dim=-1)
    assert torch.equal(merge_phases(x), expected)


def test_static_module_at_another_input_size() -> None:
    """Precomputed masks are for the model's input size; other sizes fall back."""
    model = narrow_swin()
    x = torch.randn(1, 3, 96, 80)
    for code in ("1111", "0110"):
        with torch.no_grad():
            assert rel_err(materialize(model, code)(x), model(x, skip=subnet.to_skip(code))) < 1e-5


def test_static_part_k_depends_only_on_flag_k() -> None:
    assert_parts_depend_only_on_their_flag(narrow_swin(), CODES)


@pytest.mark.parametrize("code", ["1111", "0000", "0110"])
def test_onnx_export_dynamic_batch_matches_adn_forward(code: str, tmp_path) -> None:
    """Exported at batch 2, run at batch 1 and 3 (narrow model: same graph, small weights)."""
    export_and_compare(narrow_swin(), code, 112, (1, 3))


@pytest.mark.slow
def test_onnx_export_full_size(tmp_path) -> None:
    """The real Swin-T at 224 (fresh init; twin choice is covered by the zoo tests)."""
    torch.manual_seed(0)
    export_and_compare(create_model("swin_t"), "1001", 224, (1,))
