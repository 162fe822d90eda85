"""Folding BatchNorm into the convolution before it, once per (conv, BN) pair.

The model families build their static sub-network modules through a :class:`Folder`
(``static_stages(code, folder)``), and :mod:`adn_edge.materialize` assembles them;
keeping the folding here, below both, lets the families use it without importing
the materialiser that imports them. A folded conv records where it came from
(``adn_source``), which gives the exported initializers their stable names, and
which BatchNorm it absorbed (``adn_bn``, the norm's name in the parent model), which
the corrected segment export (:mod:`adn_edge.export.corrections`) needs to find the
statistics of each folded convolution.
"""

from __future__ import annotations

import torch
from torch import nn

TWIN_SUFFIX = "_skip"
"""Name suffix of a mandatory block's skip-aware norm (``bn1`` -> ``bn1_skip``), the
official format's spelling; a folded conv that absorbed one is named ``... .skip``."""
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
            hit.adn_bn = self.name_of(bn)  # type: ignore[assignment]
            self._cache[key] = hit
        return hit
