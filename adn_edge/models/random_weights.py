"""Random but realistic weights for any registered architecture.

Used by tests, benchmarks and ``--random-init``: every norm gets its own random
affine and running statistics (so a twin mix-up or a folding error changes the
logits by orders of magnitude, not by float noise), and residual branches are
damped (norm scales < 1) so that deep random networks do not amplify rounding
(ADN_FORMAT.md section 7). Integer buffers (indices, counters) are architecture,
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


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Load :func:`random_state_dict` into ``model`` in place and return it."""
    model.load_state_dict(random_state_dict(model, seed))
    return model
