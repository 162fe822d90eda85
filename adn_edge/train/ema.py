"""The exponential moving average of the weights, as the official recipe keeps it.

With ``--ema`` the averaged copy is what gets evaluated and shipped, so its decay
rule and its warm-up behaviour are kept together here rather than spread through the
loop; ``checkpoint.pth`` stores it under ``model_ema`` (docs/checkpoints.md).
"""

from __future__ import annotations

import torch

from adn_edge.models.base import ADNModel
from adn_edge.train.config import TrainConfig


def ema_decay_per_update(cfg: TrainConfig, world: int) -> float:
    """The official adjustment: the decay per EMA update, scaled by the images between updates."""
    adjust = world * cfg.batch_size * cfg.ema_steps / cfg.epochs
    return 1.0 - min(1.0, (1.0 - cfg.ema_decay) * adjust)


def make_ema(model: ADNModel, decay: float) -> torch.optim.swa_utils.AveragedModel:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def update_ema(ema: torch.optim.swa_utils.AveragedModel, model: ADNModel, cfg: TrainConfig, global_step: int,
               epoch: int) -> None:
    """Average in the weights every ``ema_steps`` optimizer steps."""
    if global_step % cfg.ema_steps == 0:
        ema.update_parameters(model)
        if epoch < cfg.warmup_epochs:
            ema.n_averaged.fill_(0)  # official: during warm-up the EMA follows the weights
