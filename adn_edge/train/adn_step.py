"""The training passes of a batch as one module call, the unit DDP wraps.

The official script calls ``backward`` once per pass; here both passes run inside one
module call (:class:`_ADNStep`) and the summed loss is back-propagated once. The
gradients are identical (they add), BN statistics are updated in the same order
(super-net, then base-net), one GradScaler scales both terms alike; but under
DistributedDataParallel a single forward/backward per step is what DDP supports, and
every parameter receives a gradient in it (main norms and skippable blocks from the
super-net, twins from the base-net), so no ``find_unused_parameters`` is needed.

``sandwich=k`` (beyond the paper) adds k mixed sub-networks per step, drawn by
:class:`SubnetSampler`, each distilled from the detached super-net like the base-net.
Why: the paper trains only the two ends, and mixed sub-networks such as ``1000`` are
the weak ones on every seed, even after recalibration; the sandwich rule of
slimmable / once-for-all training trains the sub-networks in between too. A mixed
pass uses the skip-aware twins of its skipped stages (as the base-net does) and the
main norms of the others, but leaves every BatchNorm's running statistics alone: a
mixed prefix feeds stage k activations of neither end's distribution, and averaging
them into the super-net's or base-net's statistics would blur both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.models.base import ADNModel

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def mixed_codes(num_stages: int) -> list[str]:
    """Every code but the super-net and the base-net (2^S - 2 of them), in code order."""
    ends = {subnet.super_code(num_stages), subnet.base_code(num_stages)}
    return [c for c in subnet.all_codes(num_stages) if c not in ends]


class SubnetSampler:
    """Draws the mixed sub-networks of one training step.

    ``k`` codes uniformly without replacement from :func:`mixed_codes`, as a function of
    ``(seed, step)`` only: every DDP rank draws the same codes (the same parameters get
    gradients everywhere), and a resumed run draws what the uninterrupted one would have.
    """

    def __init__(self, num_stages: int, k: int, seed: int) -> None:
        self.codes = mixed_codes(num_stages)
        self.k = min(k, len(self.codes))
        self.seed = seed

    def draw(self, step: int) -> list[str]:
        if self.k == 0:
            return []
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step * 7_919 + 12_345) % (2**63))
        order = torch.randperm(len(self.codes), generator=g)[: self.k].tolist()
        return [self.codes[i] for i in order]


class frozen_running_stats:
    """Context: BatchNorms normalise with batch statistics (train mode) but keep their
    running statistics unchanged (momentum 0 for the duration, the batch counters put
    back), so a checkpoint cannot tell whether mixed passes ran."""

    def __init__(self, model: nn.Module) -> None:
        self.bns = [m for m in model.modules() if isinstance(m, _BN_TYPES) and m.track_running_stats]
        self.saved: list[tuple[float | None, torch.Tensor | None]] = []

    def __enter__(self) -> frozen_running_stats:
        self.saved = [(bn.momentum, None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone())
                      for bn in self.bns]
        for bn in self.bns:
            bn.momentum = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        for bn, (momentum, count) in zip(self.bns, self.saved, strict=True):
            bn.momentum = momentum
            if count is not None:
                bn.num_batches_tracked.copy_(count)


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
    """The training passes of one batch in one module call (see the module docstring).

    ``step`` is set by the trainer before each call; it seeds the sandwich draw."""

    def __init__(self, model: ADNModel, mode: str, feature_kd: bool, sandwich: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.mode = mode
        self.tap = StageTap(model) if feature_kd else None
        self.sampler = SubnetSampler(model.num_skippable_stages, sandwich, seed) if sandwich else None
        self.step = 0

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        S = self.model.num_skippable_stages
        out: dict[str, Any] = {"super": self.model(x, skip=[False] * S)}
        if self.tap is not None:
            out["super_feats"] = self.tap.take()
        if self.mode == "adn":
            out["base"] = self.model(x, skip=[True] * S)
            if self.tap is not None:
                out["base_feats"] = self.tap.take()
            if self.sampler is not None:
                codes = self.sampler.draw(self.step)
                with frozen_running_stats(self.model):
                    out["mixed"] = [self.model(x, skip=subnet.to_skip(c)) for c in codes]
                out["mixed_codes"] = codes
                if self.tap is not None:
                    self.tap.take()  # mixed passes are distilled on logits only
        return out
