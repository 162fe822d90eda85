"""Fixtures for the training tests: one tiny trained run shared by the module.

Everything runs resnet_tiny at 16x16 on a 30 % slice of the built-in digits, one
PyTorch thread (the machine's two cores are shared with other test runs, and
oversubscribed OpenMP threads are several times slower than one).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adn_edge.train.trainer import TrainConfig, train

FAST = dict(arch="resnet_tiny", data="builtin", input_size=16, train_fraction=0.3, batch_size=64, lr=0.1,
            log_every=1, final_eval=False)


def fast_config(out: Path, **kw) -> TrainConfig:
    return TrainConfig(out_dir=str(out), **{**FAST, **kw})


@pytest.fixture(scope="session")
def two_epoch_run(tmp_path_factory):
    """A 3-epoch ADN run (18 steps): the reference for loss, checkpoints, resume and eval tests."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run2")
    result = train(fast_config(out, epochs=3))
    return out, result


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test in this folder runs with one torch thread (see tests/conftest.py)."""
