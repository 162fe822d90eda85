"""Random but realistic weights for any registered architecture.

Used by tests, benchmarks and ``--random-init``: every norm gets its own random
affine and running statistics (so a twin mix-up or a folding error changes the
logits by orders of magnitude, not by float noise), and residual branches are
damped (norm scales < 1) so that deep random networks do not amplify rounding
(docs/official-format.md section 7). Integer buffers (indices, counters) are architecture,
not weights, and are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

_NORMS = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def _norm_param_names(model: nn.Module) -> set[str]:
    return {f"{n}.{p}" if n else p for n, m in model.named_modules() if isinstance(m, _NORMS)
            for p in ("weight", "bias")}


def random_state_dict(model: nn.Module, seed: int = 0,
                      keys: Sequence[Sequence[Any]] | None = None) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` (or for the ``[key, shape, dtype]`` list ``keys``)."""
    g = torch.Generator().manual_seed(seed)
    own = model.state_dict()
    norm_params = _norm_param_names(model)
    entries = keys or [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in own.items()]
    out: dict[str, torch.Tensor] = {}
    for key, shape_list, dtype in entries:
        if dtype != "float32":
            out[key] = own[key].clone()
            continue
        shape = tuple(shape_list)
        if key.endswith("running_var"):
            t = torch.rand(shape, generator=g) * 1.5 + 0.5
        elif key.endswith("running_mean"):
            t = torch.randn(shape, generator=g) * 0.1
        elif key in norm_params and key.endswith("weight"):
            t = torch.rand(shape, generator=g) * 0.5 + 0.3
        elif key in norm_params or key.endswith("bias"):
            t = torch.randn(shape, generator=g) * 0.05
        elif len(shape) >= 2:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            t = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
        else:
            t = torch.randn(shape, generator=g) * 0.02
        out[key] = t
    return out


def calibrate_batchnorm(model: nn.Module, input_size: int, seed: int = 0, batch: int = 8) -> nn.Module:
    """Give every BatchNorm running statistics that match its real input.

    Random running statistics that do not match the activations make a deep random
    network ignore its input (over ~50 conv+BN layers the signal shrinks until the
    BN biases decide the logits), and then a parity test cannot see mistakes in the
    early layers. So, as training would, estimate the main norms on the super-net and
    the ``_skip`` twins on the base-net, from a random batch. Twins and mains end up
    with different statistics, as in a trained ADN.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return model
    n = getattr(model, "num_skippable_stages", None)
    if n is None:
        return model
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, input_size, input_size, generator=g)
    momenta = [m.momentum for m in bns]
    was_training = model.training
    try:
        model.train()
        for m in bns:
            m.momentum = None  # cumulative average over the passes below
            m.reset_running_stats()
        with torch.no_grad():
            model(x, skip=[False] * n)
            model(x, skip=[True] * n)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    damp_residual_branches(model)
    return model


def damp_residual_branches(model: nn.Module, factor: float = 0.3) -> nn.Module:
    """Scale the affine of every norm that ends a residual branch by ``factor``.

    Trained ResNets keep residual branches small relative to the identity path; a
    random network with unit-variance branches instead amplifies float32 rounding
    (ResNet-50: 1e-5 relative error against float64, ResNet-101: 6e-5), which would
    drown the parity checks. Damped, both stay near 4e-7 and still depend strongly
    on the input and on the sub-network.
    """
    norms = getattr(model, "residual_branch_norms", lambda: [])()
    with torch.no_grad():
        for norm in norms:
            norm.weight.mul_(factor)
            norm.bias.mul_(factor)
    return model


def randomize(model: nn.Module, seed: int = 0, input_size: int | None = None) -> nn.Module:
    """Load :func:`random_state_dict` into ``model`` in place (BN statistics calibrated
    on random data when ``input_size`` is given) and return it."""
    model.load_state_dict(random_state_dict(model, seed))
    if input_size is not None:
        calibrate_batchnorm(model, input_size, seed)
    return model.eval()
