"""(model, code) -> a plain static ``nn.Module`` of one sub-network.

The static module has no skip argument and no control flow: skipped blocks are not
in it, each mandatory block holds the norm its stage's flag selects, and every
BatchNorm is folded into the convolution before it. Export, the PyTorch runtime
backend and evaluation all run this module, so what is measured is what is shipped.

Sharing: a :class:`Folder` caches folded convolutions by (conv, bn) pair. Build all
sub-networks of a model with one folder and they share every tensor that is really
identical (a folded conv exists once per stage skip-state), and modules that need
no folding (linear heads, LayerNorms) are the parent model's own modules.

Stable names (CONTRACTS.md section 3): every parameter of the static module knows
where it came from. A folded conv is named after the conv, with ``.skip`` appended
when the BN it absorbed was a ``_skip`` twin; an untouched module keeps its name in
the parent model. :func:`stable_names` returns that mapping for the exporter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adn_edge import subnet
from adn_edge.models.base import TWIN_SUFFIX, ADNModel

SKIP_SUFFIX = ".skip"


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv computing ``bn(conv(x))`` (eval-mode BN), folded in float64."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    dtype = conv.weight.dtype
    with torch.no_grad():
        fused.weight.copy_((w * scale.reshape(-1, 1, 1, 1)).to(dtype))
        fused.bias.copy_(((b - mean) * scale + beta).to(dtype))
    fused.requires_grad_(False)
    return fused.to(conv.weight.device)


class Folder:
    """Folds conv+BN pairs of one parent model, once each, and names the results."""

    def __init__(self, model: nn.Module, variant: str = "") -> None:
        """``variant`` is appended to every folded tensor's name: sub-networks whose
        BN statistics were re-estimated individually (``export --recalibrate``) fold
        to tensors of their own, which must not share a name with anyone else's."""
        self.model = model
        self.variant = variant
        self.names: dict[int, str] = {id(m): n for n, m in model.named_modules()}
        self._cache: dict[tuple[int, int], nn.Conv2d] = {}

    def name_of(self, module: nn.Module) -> str:
        return self.names[id(module)]

    def __call__(self, conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
        key = (id(conv), id(bn))
        hit = self._cache.get(key)
        if hit is None:
            assert isinstance(bn, nn.BatchNorm2d), f"expected BatchNorm2d, got {type(bn).__name__}"
            hit = fold_conv_bn(conv, bn)
            twin = self.name_of(bn).endswith(TWIN_SUFFIX)
            suffix = (SKIP_SUFFIX if twin else "") + self.variant
            hit.adn_source = (self.name_of(conv), suffix)  # type: ignore[assignment]
            self._cache[key] = hit
        return hit


class StaticSubnet(nn.Module):
    """One sub-network as a plain module: ``forward(x) -> logits``."""

    def __init__(self, body: nn.Module, arch: str, code: str, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.arch = arch
        self.code = code
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def materialize(model: ADNModel, code: str, folder: Folder | None = None) -> StaticSubnet:
    """The static module of sub-network ``code`` (any accepted spelling) of ``model``."""
    canonical = subnet.parse_code(code, model.num_skippable_stages, model.arch)
    folder = folder or Folder(model)
    body = model.static_body(canonical, folder)
    return StaticSubnet(body, model.arch, canonical, model.num_classes).eval()


def stable_names(static: nn.Module, folder: Folder) -> dict[str, str]:
    """Map each parameter/buffer name of ``static`` to its stable, cross-graph name.

    Tensors created by the static module itself and not traceable to the parent
    (e.g. a precomputed attention bias) are left out; the exporter names those by
    content hash, which keeps the contract (identical tensor <=> identical name).
    """
    out: dict[str, str] = {}
    for fqn, mod in static.named_modules():
        source: Any = getattr(mod, "adn_source", None)
        if source is not None:
            base, suffix = source
        elif id(mod) in folder.names:
            base, suffix = folder.names[id(mod)], ""
        else:
            continue
        prefix = f"{fqn}." if fqn else ""
        for pname, _ in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            out[prefix + pname] = f"{base}.{pname}{suffix}" if base else f"{pname}{suffix}"
    return out
