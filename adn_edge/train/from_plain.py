"""Filling an ADN's ``_skip`` twins from a network that never had them.

Two cases meet here: ``--init-from`` a plain (non-ADN) checkpoint, whose file holds
only main norms, and ``--plain`` training, which never runs the twins. In both the
twins take the main norms' values, so that skipping stages means "the plain network
with those stages dropped". Key and container spellings are those of
docs/checkpoints.md.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from adn_edge.errors import AdnError
from adn_edge.models.base import ADNModel
from adn_edge.models.folding import TWIN_SUFFIX


def copy_main_norms_to_twins(model: ADNModel) -> int:
    """Set every ``_skip`` twin to a copy of its main norm; returns how many twins."""
    mods = dict(model.named_modules())
    n = 0
    with torch.no_grad():
        for name, mod in mods.items():
            leaf = name.rsplit(".", 1)[-1]
            if not leaf.endswith(TWIN_SUFFIX):
                continue
            main = mods.get(name[: -len(TWIN_SUFFIX)])
            if main is None:
                continue
            mod.load_state_dict(main.state_dict())
            n += 1
    return n


def init_from_plain(model: ADNModel, state_dict: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Load a plain (non-ADN) checkpoint of the same backbone where keys and shapes allow.

    Twins absent from the file start as copies of their main norms *from the file*, so
    the base-net starts as "the pretrained network with stages dropped". Keys of the
    wrong shape (typically a head with another number of classes) stay random.
    """
    own = model.state_dict()
    loaded: list[str] = []
    twins: list[str] = []
    shape_mismatch: list[str] = []
    new: dict[str, torch.Tensor] = {}
    for key, t in own.items():
        src_key = key
        if key not in state_dict:
            parts = key.split(".")
            if len(parts) >= 2 and parts[-2].endswith(TWIN_SUFFIX):
                parts[-2] = parts[-2][: -len(TWIN_SUFFIX)]
                src_key = ".".join(parts)
        if src_key not in state_dict:
            continue
        v = state_dict[src_key]
        if tuple(v.shape) != tuple(t.shape):
            shape_mismatch.append(key)
            continue
        new[key] = v.to(t.dtype)
        (twins if src_key != key else loaded).append(key)
    unexpected = [k for k in state_dict if k not in own and not k.endswith("num_batches_tracked")]
    matched_weights = [k for k in loaded if not k.endswith("num_batches_tracked")]
    if not matched_weights:
        raise AdnError(f"No weight of {source!r} fits {model.arch}: none of its keys match the model's "
                       f"(first keys in the file: {', '.join(list(state_dict)[:3])}).",
                       f"--init-from needs a checkpoint of the same backbone as {model.arch} "
                       "(e.g. a torchvision ResNet-50 for resnet50).")
    model.load_state_dict(new, strict=False)
    missing = [k for k in own if k not in new and not k.endswith("num_batches_tracked")]
    return {"source": source, "loaded": len(loaded), "twins_from_main": len(twins),
            "shape_mismatch": shape_mismatch, "missing": missing, "unexpected": unexpected[:20],
            "unexpected_count": len(unexpected)}


def plain_eval_copy(model: ADNModel) -> ADNModel:
    """A copy whose twins are its main norms: a plain-mode model as "skip with the main norms"."""
    m = copy.deepcopy(model)
    copy_main_norms_to_twins(m)
    return m
