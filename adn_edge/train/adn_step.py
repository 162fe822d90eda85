"""Both training passes of a batch as one module call, the unit DDP wraps.

The official script calls ``backward`` once per pass; here both passes run inside one
module call (:class:`_ADNStep`) and the summed loss is back-propagated once. The
gradients are identical (they add), BN statistics are updated in the same order
(super-net, then base-net), one GradScaler scales both terms alike; but under
DistributedDataParallel a single forward/backward per step is what DDP supports, and
every parameter receives a gradient in it (main norms and skippable blocks from the
super-net, twins from the base-net), so no ``find_unused_parameters`` is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from adn_edge.errors import AdnError
from adn_edge.models.base import ADNModel


class StageTap:
    """Records each stage's output during a forward (for feature distillation).

    ResNet-ADN calls its blocks one by one rather than the ``layerK`` containers, so
    the hook sits on every block and the last block to run in a stage leaves the
    stage's output (the last mandatory block when the stage is skipped).
    """

    def __init__(self, model: ADNModel, first_stage: int = 1) -> None:
        stages = getattr(model, "stages", None)
        if stages is None:
            raise AdnError(f"--feature-kd is implemented for ResNet-family models (as the official --fpn option), "
                           f"not for {model.arch}.", "Train without --feature-kd.")
        self.first = first_stage
        self.outputs: dict[int, torch.Tensor] = {}
        self.handles = []
        for k, stage in enumerate(stages):
            if k < first_stage:
                continue
            for blk in stage:
                self.handles.append(blk.register_forward_hook(self._hook(k)))

    def _hook(self, k: int) -> Callable[..., None]:
        def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            self.outputs[k] = out

        return hook

    def take(self) -> list[torch.Tensor]:
        out = [self.outputs[k] for k in sorted(self.outputs)]
        self.outputs = {}
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class _ADNStep(nn.Module):
    """Both training passes of one batch in one module call (see the module docstring)."""

    def __init__(self, model: ADNModel, mode: str, feature_kd: bool) -> None:
        super().__init__()
        self.model = model
        self.mode = mode
        self.tap = StageTap(model) if feature_kd else None

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        S = self.model.num_skippable_stages
        out: dict[str, Any] = {"super": self.model(x, skip=[False] * S)}
        if self.tap is not None:
            out["super_feats"] = self.tap.take()
        if self.mode == "adn":
            out["base"] = self.model(x, skip=[True] * S)
            if self.tap is not None:
                out["base_feats"] = self.tap.take()
        return out
