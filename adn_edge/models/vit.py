"""ViT-B/16-ADN (docs/official-format.md section 4).

Key names are torchvision's ViT-B/16 plus the ``ln_1_skip``/``ln_2_skip`` twins of
the mandatory layers, registered after ``mlp`` so that the state-dict order is the
official one. The 12 encoder layers are grouped *by index* into 4 stages of 3
(flag k governs layers 3k..3k+2); the third layer of each group is skippable. The
grouping has no module of its own in the official layout, so it lives in
:meth:`ViTADN.stage_layers` and nowhere else.

The attention is our own module with ``nn.MultiheadAttention``'s parameter names
rather than that class itself: it does its products inside one functional call (a
fused kernel in eval), which the MAC counter's module hooks (``adn_edge.flops``)
cannot see, and its fast path depends on the PyTorch build. Plain
linear/matmul/softmax ops count exactly and export as ordinary ONNX ops.

``skip=None`` is accepted and means the super-net, like an omitted ``skip``; the
official model raises ``TypeError`` there (docs/official-format.md 1.1), which no caller relies on.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from adn_edge.errors import AdnError
from adn_edge.models.base import ADNModel, pick_norm
from adn_edge.models.registry import register_model

if TYPE_CHECKING:  # annotation only: materialize imports the models package
    from adn_edge.models.folding import Folder

LN_EPS = 1e-6
LAYERS_PER_STAGE = 3
"""Official grouping: stage k = encoder layers 3k, 3k+1 (mandatory) and 3k+2 (skippable)."""


class SelfAttention(nn.Module):
    """Multi-head self-attention, parameter-compatible with ``nn.MultiheadAttention``.

    q, k and v come from one packed projection (``in_proj_weight`` rows: q, then k,
    then v), as in the official checkpoints.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        out = attn.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))

    def adn_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """MACs per sample of the functional part: packed in-projection, QK^T and AV.

        ``out_proj`` is an ``nn.Linear`` call and is counted by its own hook.
        """
        n, d = inputs[0].shape[-2:]
        return n * d * 3 * d + 2 * n * n * d


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    # Indices 0 and 3 are the official key names (torchvision's MLPBlock layout).
    fc1, fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
    for m in (fc1, fc2):
        nn.init.xavier_uniform_(m.weight)
        nn.init.normal_(m.bias, std=1e-6)
    return nn.Sequential(fc1, nn.GELU(), nn.Dropout(0.0), fc2, nn.Dropout(0.0))


def _residual_pair(x: torch.Tensor, norm_a: nn.Module, attn: nn.Module, norm_b: nn.Module,
                   mlp: nn.Module) -> torch.Tensor:
    """Pre-norm encoder arithmetic, shared by the ADN and the static layer so they cannot drift."""
    y = x + attn(norm_a(x))
    return y + mlp(norm_b(y))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, mandatory: bool) -> None:
        super().__init__()
        self.mandatory = mandatory
        self.ln_1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.self_attention = SelfAttention(dim, num_heads)
        self.ln_2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = _mlp(dim, mlp_dim)
        if mandatory:
            self.ln_1_skip = nn.LayerNorm(dim, eps=LN_EPS)
            self.ln_2_skip = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, skipped: bool = False) -> torch.Tensor:
        return _residual_pair(x, pick_norm(self, "ln_1", skipped), self.self_attention,
                              pick_norm(self, "ln_2", skipped), self.mlp)

    def static(self, skipped: bool) -> _StaticEncoderLayer:
        return _StaticEncoderLayer(pick_norm(self, "ln_1", skipped), self.self_attention,
                                   pick_norm(self, "ln_2", skipped), self.mlp)


class Encoder(nn.Module):
    """Holds ``pos_embedding`` so that it is read (and counted) by a module that runs."""

    def __init__(self, seq_len: int, dim: int, num_layers: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_len, dim).normal_(std=0.02))
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderLayer(dim, num_heads, mlp_dim, i % LAYERS_PER_STAGE != LAYERS_PER_STAGE - 1))
            for i in range(num_layers)
        ))
        self.ln = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, plan: Sequence[tuple[EncoderLayer, bool]]) -> torch.Tensor:
        x = x + self.pos_embedding
        for layer, skipped in plan:
            x = layer(x, skipped)
        return self.ln(x)


class _StaticEncoderLayer(nn.Module):
    """One kept layer with its norms chosen; every child is the parent's own module."""

    def __init__(self, ln_1: nn.Module, self_attention: nn.Module, ln_2: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.ln_1 = ln_1
        self.self_attention = self_attention
        self.ln_2 = ln_2
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _residual_pair(x, self.ln_1, self.self_attention, self.ln_2, self.mlp)


class _Named(nn.Module):
    """Holds one parent parameter under its own name, for the exporter's naming.

    ``class_token`` and ``encoder.pos_embedding`` belong to modules (the root, the
    encoder) that a static part cannot hold whole; ``adn_source`` tells
    :func:`adn_edge.materialize.stable_names` the owner they are named after.
    """

    def __init__(self, owner: str, name: str, param: nn.Parameter) -> None:
        super().__init__()
        self.register_parameter(name, param)
        self.name = name
        self.adn_source = (owner, "")

    @property
    def value(self) -> torch.Tensor:
        return cast(torch.Tensor, getattr(self, self.name))


class _StaticInput(nn.Module):
    """Patches -> tokens: patch projection, class token first, position embedding."""

    def __init__(self, parent: ViTADN) -> None:
        super().__init__()
        self.image_size = parent.image_size
        self.arch = parent.arch
        self.conv_proj = parent.conv_proj
        self.cls = _Named("", "class_token", parent.class_token)
        self.pos = _Named("encoder", "pos_embedding", parent.encoder.pos_embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(x, self.image_size, self.arch)
        return _tokens(x, self.conv_proj, self.cls.value) + self.pos.value


class _StaticOutput(nn.Module):
    """Final LayerNorm, class token, head."""

    def __init__(self, ln: nn.Module, heads: nn.Module) -> None:
        super().__init__()
        self.ln = ln
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.ln(x)[:, 0])


def _check_size(x: torch.Tensor, size: int, arch: str) -> None:
    """The position embedding has one entry per patch of a ``size`` x ``size`` image.

    Also checked under the ONNX tracer, where sizes are traced tensors: H and W are
    meant to be constants of an export (only the batch is dynamic), so reading them
    as ints is intended and the tracer's warning about it is silenced here.
    """
    if x.dim() == 4:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            hw = (int(x.shape[2]), int(x.shape[3]))
        if hw == (size, size):
            return
    raise AdnError(
        f"{arch} takes [N, 3, {size}, {size}] images only (its position embedding is fixed to "
        f"{size}x{size}), but got an input of shape {list(x.shape)}.",
        f"Resize and centre-crop to {size}x{size} before the model, as the official evaluation does.",
    )


def _tokens(x: torch.Tensor, conv_proj: nn.Module, class_token: torch.Tensor) -> torch.Tensor:
    x = conv_proj(x).flatten(2).transpose(1, 2)
    return torch.cat([class_token.expand(x.shape[0], -1, -1), x], dim=1)


class ViTADN(ADNModel):
    """Vision Transformer with the third layer of each group of three skippable.

    The widths are parameters so that tests can build a small model with the same
    structure; the registered ``vit_b_16`` is the official size.
    """

    arch = "vit"
    num_skippable_stages = 4

    def __init__(self, image_size: int = 224, patch_size: int = 16, hidden_dim: int = 768, num_heads: int = 12,
                 mlp_dim: int = 3072, num_classes: int = 1000) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self._num_classes = num_classes
        num_layers = LAYERS_PER_STAGE * self.num_skippable_stages
        conv_proj = nn.Conv2d(3, hidden_dim, patch_size, stride=patch_size)
        nn.init.trunc_normal_(conv_proj.weight, std=math.sqrt(1 / (3 * patch_size * patch_size)))
        nn.init.zeros_(conv_proj.bias)  # type: ignore[arg-type]  # created with a bias
        self.conv_proj = conv_proj
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        seq_len = (image_size // patch_size) ** 2 + 1
        self.encoder = Encoder(seq_len, hidden_dim, num_layers, num_heads, mlp_dim)
        head = nn.Linear(hidden_dim, num_classes)
        # Not torchvision's zero head: a fresh model with all-zero logits would make
        # every parity check on it vacuous. Checkpoints overwrite it anyway.
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        self.heads = nn.Sequential(OrderedDict(head=head))

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def stage_layers(self, k: int, skipped: bool) -> list[EncoderLayer]:
        """Layers stage ``k`` runs: all three, or the two mandatory ones when skipped."""
        layers = cast(list[EncoderLayer], list(self.encoder.layers))[LAYERS_PER_STAGE * k: LAYERS_PER_STAGE * (k + 1)]
        return [layer for layer in layers if layer.mandatory or not skipped]

    def forward(self, x: torch.Tensor, skip: Sequence[Any] | None = None) -> torch.Tensor:
        flags = self.resolve_skip(skip)
        _check_size(x, self.image_size, self.arch)
        x = _tokens(x, self.conv_proj, self.class_token)
        plan = [(layer, s) for k, s in enumerate(flags) for layer in self.stage_layers(k, s)]
        return self.heads(self.encoder(x, plan)[:, 0])

    def static_stages(self, code: str, folder: Folder) -> list[nn.Module]:
        # LayerNorm cannot be folded into anything: the parts just hold the chosen
        # norm modules, so ``folder`` only provides the parent's names. Part k is
        # stage k's kept layers; part 0 adds the tokenizer, the last part the head.
        parts: list[nn.Module] = []
        for k, c in enumerate(code):
            mods: list[nn.Module] = [layer.static(c == "0") for layer in self.stage_layers(k, c == "0")]
            if k == 0:
                mods.insert(0, _StaticInput(self))
            if k == len(code) - 1:
                mods.append(_StaticOutput(self.encoder.ln, self.heads))
            parts.append(nn.Sequential(*mods))
        return parts


@register_model("vit_b_16", num_stages=4, norm="layernorm",
                description="official ViT-B/16-ADN: 12 layers in 4 groups of 3 (3rd skippable), 224x224 only")
def vit_b_16(num_classes: int = 1000) -> ViTADN:
    return ViTADN(num_classes=num_classes)
