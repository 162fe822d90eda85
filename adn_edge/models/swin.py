"""Swin-T-ADN (docs/official-format.md section 5).

torchvision's Swin-T (v1) arithmetic under the official ADN module paths: ``pre.0``
(patch conv), ``pre.2`` (its LayerNorm), ``features.0/2/4/6`` the four stages and
``features.1/3/5`` the patch-merging layers, then ``norm`` and ``head``. Stage k
keeps its first ``BASE_DEPTHS[k]`` blocks when skipped. A patch-merging layer has a
``norm_skip`` twin that follows the flag of the stage *after* it: it produces that
stage's input, and the official code switches it with that stage.

Tensors stay channels-last ``[B, H, W, C]`` between stages, and every linear layer
is applied to a tensor whose first dimension is the real batch (never the batch of
windows): the MAC counter divides by the first dimension. Window attention is
computed on ``[B, windows, heads, tokens, head_dim]`` for the same reason.

``skip=None`` is accepted and means the super-net, like an omitted ``skip``; the
official model raises ``TypeError`` there (docs/official-format.md 1.1), which no caller relies on.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from adn_edge.models.base import ADNModel, pick_norm
from adn_edge.models.registry import register_model

if TYPE_CHECKING:  # annotation only: materialize imports the models package
    from adn_edge.models.folding import Folder

LN_EPS = 1e-5
MASK_VALUE = -100.0
"""Official additive mask between tokens of different regions of a shifted window.
Not -inf: exp(-100) underflows to a negligible value, and a finite value exports to
any runtime without NaN risk."""
BASE_DEPTHS = (1, 1, 3, 1)
"""Mandatory blocks per stage (official fixed base depths for depths 2-2-6-2)."""


# --------------------------------------------------------------------------- helpers

def relative_position_index(window: int) -> torch.Tensor:
    """Index into the ``(2w-1)^2`` bias table for every (query, key) pair of a window.

    Row-major token order; the relative offset (dy, dx), each shifted into
    [0, 2w-2], is encoded as ``dy * (2w-1) + dx``.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [2, N, N]
    return (rel[0] * (2 * window - 1) + rel[1]).flatten()


def static_hw(x: torch.Tensor) -> tuple[int, int]:
    """H and W of a channels-last map as Python ints, also under the ONNX tracer.

    Only the batch is dynamic in an export, so H and W are meant to be baked into the
    graph as constants; the tracer's warning about exactly that is silenced here and
    nowhere else. The batch size is never read this way (reshapes use -1).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(x.shape[1]), int(x.shape[2])


def _padded(size: int, window: int) -> int:
    return -(-size // window) * window


def effective_shift(shift: int, window: int, padded_h: int, padded_w: int) -> tuple[int, int]:
    """Per-axis shift: none along an axis that a single window already covers."""
    return (0 if window >= padded_h else shift, 0 if window >= padded_w else shift)


def _partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B, windows, window*window, C]`` (windows row-major)."""
    h, w = static_hw(x)
    c = x.shape[-1]
    x = x.reshape(-1, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, (h // window) * (w // window), window * window, c)


def _unpartition(x: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    c = x.shape[-1]
    x = x.reshape(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shift_mask(padded_h: int, padded_w: int, window: int, shift: tuple[int, int],
               device: torch.device | None = None) -> torch.Tensor:
    """Additive mask ``[windows, 1, N, N]`` for attention in a cyclically shifted map.

    After rolling by -shift, a window at the bottom/right edge contains tokens that
    were not neighbours in the image; each axis is cut into up to three regions
    (``[0, P-w)``, ``[P-w, P-s)``, ``[P-s, P)``) and tokens attend only within their
    region. With shift 0 along an axis that axis has a single region.
    """

    def regions(p: int, s: int) -> torch.Tensor:
        i = torch.arange(p, device=device)
        return (i >= p - window).long() + (i >= p - s).long() if s else torch.zeros(p, dtype=torch.long, device=device)

    label = regions(padded_h, shift[0])[:, None] * 3 + regions(padded_w, shift[1])[None, :]
    windows = _partition(label[None, :, :, None], window)[0, :, :, 0]  # [windows, N]
    diff = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(diff.shape, device=device).masked_fill(diff, MASK_VALUE).unsqueeze(1)


def window_attention(x: torch.Tensor, qkv: nn.Linear, proj: nn.Linear, bias: torch.Tensor,
                     mask: torch.Tensor | None, window: int, num_heads: int, shift: tuple[int, int]) -> torch.Tensor:
    """(Shifted-)window multi-head attention on a channels-last map.

    Shared by the ADN and the static block so the two cannot drift. ``bias`` is the
    gathered relative position bias ``[heads, N, N]``; ``mask`` is
    :func:`shift_mask` for the padded size, or None when not shifted. Zero padding
    to a multiple of the window happens after the norm and takes part in attention
    unmasked, as in the official model (a no-op at 224).
    """
    h, w = static_hw(x)
    c = qkv.in_features
    ph, pw = _padded(h, window), _padded(w, window)
    x = F.pad(x, (0, 0, 0, pw - w, 0, ph - h))
    shifted = shift != (0, 0)
    if shifted:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    head_dim = c // num_heads
    n = window * window
    windows = (ph // window) * (pw // window)
    t = qkv(_partition(x, window))  # [B, windows, N, 3C]
    q, k, v = t.reshape(-1, windows, n, 3, num_heads, head_dim).permute(3, 0, 1, 4, 2, 5).unbind(0)
    attn = (q * head_dim**-0.5) @ k.transpose(-2, -1) + bias  # [B, windows, heads, N, N]
    if mask is not None:
        attn = attn + mask
    out = attn.softmax(dim=-1) @ v  # [B, windows, heads, N, head_dim]
    out = _unpartition(proj(out.transpose(2, 3).reshape(-1, windows, n, c)), window, ph, pw)
    if shifted:
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    return out[:, :h, :w, :]


def merge_phases(x: torch.Tensor) -> torch.Tensor:
    """2x2 space-to-depth in the official channel order: (0,0), (1,0), (0,1), (1,1).

    That order is (row, col) with the *row* varying fastest, so a reshape that puts
    the column index before the row index gives it without strided slicing (which
    the ONNX exporter cannot constant-fold and TensorRT handles less well).
    """
    h, w = static_hw(x)
    x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    h, w, c = h + h % 2, w + w % 2, x.shape[-1]
    x = x.reshape(-1, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5)  # [B, h/2, w/2, col, row, C]
    return x.reshape(-1, h // 2, w // 2, 4 * c)


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Per-sample stochastic depth (training only; identity in eval)."""
    if not training or p == 0.0:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - p)
    return x * keep / (1 - p)


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    # Indices 0 and 3 are the official key names.
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim), nn.Dropout(0.0))


# --------------------------------------------------------------------------- ADN modules

class ShiftedWindowAttention(nn.Module):
    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window: int, shift: int, num_heads: int) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        # Persistent: official checkpoints carry it and a strict load expects it.
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.normal_(self.relative_position_bias_table, std=0.02)

    def relative_bias(self) -> torch.Tensor:
        """``[heads, N, N]`` gathered from the table with the (checkpoint's) index."""
        n = self.window * self.window
        return self.relative_position_bias_table[self.relative_position_index].reshape(n, n, -1).permute(2, 0, 1)

    def plan(self, h: int, w: int, device: torch.device | None = None) -> tuple[tuple[int, int], torch.Tensor | None]:
        """Shift and mask for an ``h`` x ``w`` map (they depend only on its padded size)."""
        ph, pw = _padded(h, self.window), _padded(w, self.window)
        shift = effective_shift(self.shift, self.window, ph, pw)
        mask = shift_mask(ph, pw, self.window, shift, device) if shift != (0, 0) else None
        return shift, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift, mask = self.plan(*static_hw(x), device=x.device)
        return window_attention(x, self.qkv, self.proj, self.relative_bias(), mask, self.window, self.num_heads, shift)

    def adn_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """QK^T and AV per sample, over the padded map (``qkv``/``proj`` count themselves)."""
        _, h, w, c = inputs[0].shape
        tokens = _padded(h, self.window) * _padded(w, self.window)
        return 2 * tokens * self.window * self.window * c


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float,
                 mandatory: bool) -> None:
        super().__init__()
        self.mandatory = mandatory
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = ShiftedWindowAttention(dim, window, shift, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = _mlp(dim, int(dim * mlp_ratio))
        if mandatory:
            self.norm1_skip = nn.LayerNorm(dim, eps=LN_EPS)
            self.norm2_skip = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, skipped: bool = False) -> torch.Tensor:
        x = x + _drop_path(self.attn(pick_norm(self, "norm1", skipped)(x)), self.drop_path, self.training)
        return x + _drop_path(self.mlp(pick_norm(self, "norm2", skipped)(x)), self.drop_path, self.training)

    def static(self, skipped: bool, input_hw: tuple[int, int]) -> _StaticSwinBlock:
        attn = _StaticWindowAttention(self.attn, input_hw)
        return _StaticSwinBlock(pick_norm(self, "norm1", skipped), attn, pick_norm(self, "norm2", skipped), self.mlp)


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=LN_EPS)
        self.norm_skip = nn.LayerNorm(4 * dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, skipped: bool = False) -> torch.Tensor:
        """``skipped`` is the flag of the stage this layer feeds, not the one before it."""
        return self.reduction(pick_norm(self, "norm", skipped)(merge_phases(x)))

    def static(self, skipped: bool) -> _StaticPatchMerging:
        return _StaticPatchMerging(pick_norm(self, "norm", skipped), self.reduction)


class _ChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class SwinADN(ADNModel):
    """Swin Transformer (v1) whose stages keep only their first blocks when skipped.

    Widths, heads and window are parameters so that tests can build a small model
    with the same structure; the registered ``swin_t`` is the official size.
    ``input_size`` is only where the static module precomputes its shift masks.
    """

    arch = "swin"
    num_skippable_stages = 4
    depths = (2, 2, 6, 2)

    def __init__(self, embed_dim: int = 96, num_heads: Sequence[int] = (3, 6, 12, 24), window: int = 7,
                 patch_size: int = 4, mlp_ratio: float = 4.0, stochastic_depth: float = 0.1,
                 num_classes: int = 1000, input_size: int = 224) -> None:
        super().__init__()
        self._num_classes = num_classes
        self.patch_size = patch_size
        self.input_size = input_size
        self.pre = nn.Sequential(nn.Conv2d(3, embed_dim, patch_size, stride=patch_size), _ChannelsLast(),
                                 nn.LayerNorm(embed_dim, eps=LN_EPS))
        total = sum(self.depths)
        layers: list[nn.Module] = []
        dim, index = embed_dim, 0
        for k, (depth, heads) in enumerate(zip(self.depths, num_heads, strict=True)):
            if k:
                layers.append(PatchMerging(dim))
                dim *= 2
            blocks = []
            for i in range(depth):
                blocks.append(SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio,
                                        stochastic_depth * index / (total - 1), i < BASE_DEPTHS[k]))
                index += 1
            layers.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, num_classes)
        # torchvision's trunc_normal_(std=0.02) truncates at +-2 absolute, i.e. at 100
        # sigma: it is a plain normal, minus seconds of rejection sampling per model.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def stage_blocks(self, k: int, skipped: bool) -> list[SwinBlock]:
        blocks = cast(list[SwinBlock], list(cast(nn.Sequential, self.features[2 * k])))
        return blocks[: BASE_DEPTHS[k]] if skipped else blocks

    def merging(self, k: int) -> PatchMerging | None:
        """The patch-merging layer in front of stage ``k`` (it follows flag k)."""
        return cast(PatchMerging, self.features[2 * k - 1]) if k else None

    def forward(self, x: torch.Tensor, skip: Sequence[Any] | None = None) -> torch.Tensor:
        flags = self.resolve_skip(skip)
        x = self.pre(x)
        for k, skipped in enumerate(flags):
            merge = self.merging(k)
            if merge is not None:
                x = merge(x, skipped)
            for blk in self.stage_blocks(k, skipped):
                x = blk(x, skipped)
        return _classify(x, self.norm, self.head)

    def static_stages(self, code: str, folder: Folder) -> list[nn.Module]:
        # Nothing to fold (LayerNorm): ``folder`` only provides the parent's names.
        # Part k = the patch merging in front of stage k (it follows flag k) and the
        # stage's kept blocks; part 0 adds the patch embedding, the last the head.
        size = self.input_size // self.patch_size
        hw = (size, size)
        parts: list[nn.Module] = []
        for k, c in enumerate(code):
            skipped = c == "0"
            mods: list[nn.Module] = [self.pre] if k == 0 else []
            merge = self.merging(k)
            if merge is not None:
                mods.append(merge.static(skipped))
                hw = ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
            mods += [blk.static(skipped, hw) for blk in self.stage_blocks(k, skipped)]
            if k == len(code) - 1:
                mods.append(_StaticHead(self.norm, self.head))
            parts.append(nn.Sequential(*mods))
        return parts


def _classify(x: torch.Tensor, norm: nn.Module, head: nn.Module) -> torch.Tensor:
    x = norm(x).permute(0, 3, 1, 2)
    return head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------- static modules

class _StaticWindowAttention(nn.Module):
    """Window attention with the bias gathered once and the mask precomputed.

    The buffers are for the model's input size; another size recomputes them on the
    fly (a shape-only branch, so it traces to a static graph either way). They are
    not named after the parent: the exporter names such tensors by content.
    """

    relative_bias: torch.Tensor
    mask: torch.Tensor | None

    def __init__(self, attn: ShiftedWindowAttention, input_hw: tuple[int, int]) -> None:
        super().__init__()
        self.qkv = attn.qkv
        self.proj = attn.proj
        self.window = attn.window
        self.num_heads = attn.num_heads
        self._parent = [attn]  # a list: not registered, so its table and index stay out of the static graph
        self.input_hw = input_hw
        shift, mask = attn.plan(*input_hw, device=attn.relative_position_bias_table.device)
        self.shift = shift
        self.register_buffer("relative_bias", attn.relative_bias().detach().clone().contiguous())
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = static_hw(x)
        if hw == self.input_hw:
            shift, mask = self.shift, self.mask
        else:
            shift, mask = self._parent[0].plan(*hw, device=x.device)
        return window_attention(x, self.qkv, self.proj, self.relative_bias, mask, self.window, self.num_heads, shift)


class _StaticSwinBlock(nn.Module):
    def __init__(self, norm1: nn.Module, attn: nn.Module, norm2: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.norm1 = norm1
        self.attn = attn
        self.norm2 = norm2
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _StaticPatchMerging(nn.Module):
    def __init__(self, norm: nn.Module, reduction: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.reduction = reduction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(merge_phases(x)))


class _StaticHead(nn.Module):
    def __init__(self, norm: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _classify(x, self.norm, self.head)


@register_model("swin_t", num_stages=4, norm="layernorm", interpolation="bicubic",
                description="official Swin-T-ADN: depths 2-2-6-2, base depths 1-1-3-1, window 7, 224x224")
def swin_t(num_classes: int = 1000) -> SwinADN:
    return SwinADN(num_classes=num_classes)
