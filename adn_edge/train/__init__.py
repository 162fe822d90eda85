"""Training, evaluation and BN recalibration of ADN models (issue 7).

* :mod:`~adn_edge.train.trainer`: the official self-distillation recipe
  (``TrainConfig``, ``train``), with EMA, AMP, resume, DDP under torchrun;
* :mod:`~adn_edge.train.evaluate`: top-1/top-5 of every sub-network, PyTorch or an
  exported directory, written to ``eval.json``;
* :mod:`~adn_edge.train.recalibrate`: per-sub-network BatchNorm re-estimation;
* :mod:`~adn_edge.train.data`: built-in datasets and ImageFolder loading.

Names are imported lazily so that ``import adn_edge.train.data`` stays cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "TrainResult": "trainer", "Trainer": "trainer", "train": "trainer",
    "kd_loss": "losses", "copy_main_norms_to_twins": "from_plain", "init_from_plain": "from_plain",
    "evaluate_model": "evaluate", "evaluate_directory": "evaluate", "EvalResult": "evaluate",
    "SubnetAccuracy": "evaluate", "write_eval": "evaluate", "read_eval": "evaluate", "topk_correct": "evaluate",
    "recalibrated": "recalibrate", "recalibrated_all": "recalibrate", "calibration_batches": "recalibrate",
    "load_data": "data", "load_builtin": "data", "Preprocess": "data", "ImageFolder": "data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'adn_edge.train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"adn_edge.train.{mod}"), name)
