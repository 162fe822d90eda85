"""Shared test helpers: official-format random weights, fixture paths, references."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
OFFICIAL = FIXTURES / "official"


@lru_cache(maxsize=None)
def keys_fixture(arch: str) -> dict:
    return json.loads((OFFICIAL / f"{arch}.keys.json").read_text())


@lru_cache(maxsize=None)
def subnets_fixture() -> dict:
    return json.loads((OFFICIAL / "subnets.json").read_text())


def _norm_param_names(model: nn.Module) -> set[str]:
    norms = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    return {f"{n}.{p}" if n else p for n, m in model.named_modules() if isinstance(m, norms)
            for p in ("weight", "bias")}


def random_state_dict(model: nn.Module, seed: int = 0, keys: list | None = None) -> dict[str, torch.Tensor]:
    """Random but well-conditioned weights in the model's (official) key layout.

    Every norm gets its own random affine and running statistics, so a twin mix-up
    or a folding mistake changes the logits far beyond float noise. Residual
    branches are damped (norm scales < 1) so that deep random networks do not amplify
    rounding error (ADN_FORMAT.md section 7). Integer buffers (indices, counters) are
    the model's own: they are architecture, not weights.
    """
    g = torch.Generator().manual_seed(seed)
    own = model.state_dict()
    norm_params = _norm_param_names(model)
    entries = keys or [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in own.items()]
    out: dict[str, torch.Tensor] = {}
    for key, shape, dtype in entries:
        if dtype != "float32":
            out[key] = own[key].clone()
            continue
        shape = tuple(shape)
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


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, the relative error used throughout the tests."""
    a64, b64 = a.detach().double(), b.detach().double()
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-30))
