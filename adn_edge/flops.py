"""Multiply-accumulates and parameters per sub-network.

Convention (docs/model-directory.md, matching the official README's GFLOPs column to
within 1% for ResNet/ViT/Swin): multiply-accumulates of convolutions, linear layers
and attention matrix products (QK^T and AV), batch 1; norms, activations, pooling and
biases are not counted. Parameters are those the sub-network *reads* in the unfolded
ADN model (only the norm set in use), the official "params_used".

Both are counted by running the ADN model's own forward on the ``meta`` device (no
memory, no arithmetic) with hooks that see which modules execute, so the count
follows the real forward and cannot drift from it. Modules that multiply matrices
outside ``nn.Conv2d``/``nn.Linear`` calls (attention) report those MACs through an
``adn_macs(inputs, output) -> int`` method.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from adn_edge import subnet
from adn_edge.models.base import ADNModel
from adn_edge.models.registry import create_model, get_spec


@dataclass(frozen=True)
class Cost:
    code: str
    macs: int
    params: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def _module_macs(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if isinstance(mod, nn.Conv2d):
        kh, kw = mod.kernel_size
        return output.numel() // output.shape[0] * (mod.in_channels // mod.groups) * kh * kw
    if isinstance(mod, nn.Linear):
        return output.numel() // output.shape[0] * mod.in_features
    extra = getattr(mod, "adn_macs", None)
    return int(extra(inputs, output)) if callable(extra) else 0


def count(model: ADNModel, code: str, input_size: int) -> Cost:
    """MACs (batch 1) and parameters read by sub-network ``code`` of ``model``."""
    device = next(model.parameters()).device
    seen: dict[int, nn.Module] = {}
    macs = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        seen[id(mod)] = mod
        if isinstance(output, torch.Tensor):
            macs += _module_macs(mod, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=device), skip=subnet.to_skip(code))
    finally:
        for h in handles:
            h.remove()
    params = {id(p): p.numel() for m in seen.values() for p in m.parameters(recurse=False)}
    return Cost(code, macs, sum(params.values()))


@lru_cache(maxsize=64)
def arch_costs(arch: str, num_classes: int | None = None, input_size: int | None = None) -> dict[str, Cost]:
    """Costs of every sub-network of a registered architecture (cached; no weights needed)."""
    spec = get_spec(arch)
    with torch.device("meta"):
        model = create_model(arch, num_classes=num_classes)
    size = input_size or spec.input_size
    return {c: count(model, c, size) for c in subnet.all_codes(spec.num_stages)}
