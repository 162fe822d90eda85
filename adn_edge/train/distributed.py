"""Data-parallel training under torchrun, kept apart from the recipe.

One process is the common case: every helper here answers it without touching
``torch.distributed``, and the process group is joined only when torchrun set
``RANK``/``WORLD_SIZE``. A group this process created is also the one it must
destroy, so :class:`Dist` remembers that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from adn_edge.errors import AdnError
from adn_edge.train.config import TrainConfig


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def leave_group(self) -> None:
        if self.initialised_here:
            self.initialised_here = False
            import torch.distributed as dist

            dist.destroy_process_group()


def setup_distributed(device_kind: str) -> Dist:
    """Join the process group torchrun describes (RANK/WORLD_SIZE in the environment)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    mine = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        mine = True
    return Dist(rank, world, local, mine)


def resolve_device(cfg: TrainConfig, dist: Dist | None = None) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AdnError(f"--device {cfg.device} was asked for but no CUDA GPU is available.",
                           "Use --device cpu (or auto).")
        if dist is not None and dist.world > 1 and want == "cuda":
            return torch.device("cuda", dist.local_rank)
    elif want != "cpu":
        raise AdnError(f"Unknown --device {cfg.device!r}.", "Use auto, cpu, cuda or cuda:N.")
    return torch.device(want)


def wrap_ddp(module: nn.Module, device: torch.device, find_unused_parameters: bool) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids, find_unused_parameters=find_unused_parameters)
