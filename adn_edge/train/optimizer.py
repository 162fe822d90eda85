"""The optimizer and learning-rate schedule of the recipe, sized from a config.

Which parameters decay and how the rate moves per step decide whether a run
reproduces the official one; they are small enough to read in one place, and the
loop only asks for "the optimizer" and "the factor at step n".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from adn_edge.train.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    marks = sorted(int(round(m * total)) for m in cfg.milestones)

    def f(step: int) -> float:
        if step < warm:
            return cfg.warmup_start + (1.0 - cfg.warmup_start) * step / max(1, warm)
        if cfg.schedule == "cosine":
            progress = (step - warm) / max(1, total - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return cfg.gamma ** sum(step >= m for m in marks)

    return f


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov with momentum) or AdamW; weight decay on weights only, never on norms and biases."""
    lr, wd = cfg.resolved_lr(), cfg.resolved_weight_decay()
    groups = param_groups(model, wd)
    if cfg.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum,
                                                           nesterov=cfg.momentum > 0)
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr)
    return optimizer
