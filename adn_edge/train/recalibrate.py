"""Per-sub-network BatchNorm recalibration.

ADN training runs only the super-net (main norms) and the base-net (``_skip`` twins).
A mixed sub-network such as ``1010`` combines stages normalised for the super-net with
stages normalised for the base-net, and the BNs without twins (the stem, every
downsample) hold statistics blended from *both* training passes. The activations
that reach each BN in a mixed sub-network follow neither distribution, so its
running statistics are wrong for it, and accuracy can collapse (issue 7: 26-90 % on
digits, against 96 % for the super-net).

The fix is cheap and exact: run the sub-network itself on a few hundred training
images with its BNs in training mode and re-estimate every running mean/variance it
uses, with cumulative (equal-weight) averaging instead of the momentum average, so
the result does not depend on the order of batches. Weights and affine parameters
are untouched; the recalibrated copy is then folded and exported like any other.

A recalibrated model is correct **only for its code**: the BNs of other stage
states keep their old statistics, but shared BNs (stem, downsample) are rewritten.

:func:`recalibrated_jointly` is the other kind: one set of statistics for all
sub-networks at once, every BN averaged over every sub-network that executes it. It
is what a model whose graphs are shared between sub-networks (segments: one graph per
stage and form) could carry; whether it is accurate depends on the training
(``benchmarks/bench_adn_training.py`` measures it).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from adn_edge import subnet
from adn_edge.errors import AdnError
from adn_edge.models.base import ADNModel

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
LN_TYPES = (nn.LayerNorm, nn.GroupNorm)


def check_recalibratable(model: ADNModel) -> None:
    """Raise a clear error for architectures whose norms keep no running statistics."""
    from adn_edge.models import get_spec

    norm = "batchnorm"
    try:
        norm = get_spec(model.arch).norm
    except AdnError:
        pass
    has_bn = any(isinstance(m, BN_TYPES) for m in model.modules())
    if norm != "batchnorm" or not has_bn:
        kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, LN_TYPES)}) or ["no BatchNorm"]
        raise AdnError(
            f"{model.arch} normalises with {', '.join(kinds)}, which computes its statistics from each input "
            "and keeps no running statistics, so there is nothing to recalibrate per sub-network.",
            "Leave out --recalibrate for this architecture: its sub-networks already normalise with their own "
            "statistics; recalibration applies to BatchNorm architectures (ResNet, MobileNetV2).")


def _images(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"recalibration batches must be image tensors or (images, labels) pairs, got {type(batch)}")


def used_batchnorms(model: ADNModel, code: str, example: torch.Tensor) -> list[nn.Module]:
    """The BN modules that sub-network ``code`` executes, found by running it once in eval mode."""
    seen: dict[int, nn.Module] = {}

    def note(mod: nn.Module, _inp: Any) -> None:  # returns None: a pre-hook's return value replaces the input
        seen[id(mod)] = mod

    hooks = [m.register_forward_pre_hook(note) for m in model.modules() if isinstance(m, BN_TYPES)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1], skip=subnet.to_skip(code))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return list(seen.values())


@contextlib.contextmanager
def _re_estimating(model: nn.Module, bns: list[nn.Module]) -> Iterator[None]:
    """Run the body with ``bns`` reset and re-estimating their statistics: training mode,
    cumulative averaging (every batch weighs the same, whatever the order), no
    gradients; the rest of ``model`` stays in eval mode. Afterwards the momenta are
    restored and ``model`` is in eval mode."""
    saved = {id(bn): bn.momentum for bn in bns}
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
        bn.train()
    try:
        with torch.no_grad():
            yield
    finally:
        for bn in bns:
            bn.momentum = saved[id(bn)]
        model.eval()


def recalibrated(model: ADNModel, code: str, batches: Iterable[Any], max_samples: int | None = None) -> ADNModel:
    """A copy of ``model`` whose BN running statistics are re-estimated on sub-network ``code``.

    ``batches``: image tensors ``[N, 3, H, W]`` (normalised like training input, no
    augmentation) or ``(images, labels)`` pairs, e.g. a DataLoader over training data;
    consumed once. ``max_samples`` stops after that many images. Every BN the
    sub-network executes is reset and re-estimated with cumulative averaging, shared
    stem/downsample BNs included; BNs it does not execute keep their statistics.
    The copy is in eval mode, on the model's device; ``model`` is not modified.
    """
    check_recalibratable(model)
    canonical = subnet.parse_code(code, model.num_skippable_stages, model.arch)
    device = next(model.parameters()).device
    out = copy.deepcopy(model).eval()
    it = iter(batches)
    try:
        first = _images(next(it)).to(device)
    except StopIteration:
        raise AdnError("Recalibration got no images.", "Pass a non-empty set of training images.") from None
    bns = used_batchnorms(out, canonical, first)
    seen = 0
    with _re_estimating(out, bns):
        x: torch.Tensor | None = first
        while x is not None:
            if max_samples is not None and seen + x.shape[0] > max_samples:
                x = x[: max_samples - seen]
            if x.shape[0] > 1:  # BN cannot estimate a variance from a single image
                out(x, skip=subnet.to_skip(canonical))
                seen += x.shape[0]
            if max_samples is not None and seen >= max_samples:
                break
            nxt = next(it, None)
            x = None if nxt is None else _images(nxt).to(device)
    if seen == 0:
        raise AdnError("Recalibration needs batches of at least 2 images.", "Use a larger batch size.")
    out.recalibrated_for = canonical
    out.recalibration_samples = seen
    result: ADNModel = out
    return result


def recalibrated_jointly(model: ADNModel, codes: Iterable[str], batches: list[Any],
                         max_samples: int | None = None) -> ADNModel:
    """A copy of ``model`` with one set of BN statistics re-estimated over all ``codes``.

    Every BN is reset, then every sub-network in ``codes`` runs the same images
    (``batches``, a list, ``max_samples`` images at most) in training mode with
    cumulative averaging: a BN's statistics become the equal-weight average over all
    the sub-networks that execute it (the stem over all of them, a stage's main norms
    over those that run the stage in full, its twins over those that skip it). BNs that
    none of them executes keep their statistics. The copy is in eval mode; ``model`` is
    not modified.
    """
    check_recalibratable(model)
    S = model.num_skippable_stages
    canonical = list(dict.fromkeys(subnet.parse_code(c, S, model.arch) for c in codes))
    if not canonical:
        raise AdnError("Joint recalibration needs at least one sub-network.")
    images = []
    seen = 0
    for b in batches:
        x = _images(b)
        if max_samples is not None:
            x = x[: max_samples - seen]
        if x.shape[0] > 1:
            images.append(x)
            seen += x.shape[0]
        if max_samples is not None and seen >= max_samples:
            break
    if not images:
        raise AdnError("Recalibration needs batches of at least 2 images.", "Use a larger batch size.")
    device = next(model.parameters()).device
    out = copy.deepcopy(model).eval()
    used = {id(bn): bn for code in canonical for bn in used_batchnorms(out, code, images[0].to(device))}
    with _re_estimating(out, list(used.values())):
        for code in canonical:
            for x in images:
                out(x.to(device), skip=subnet.to_skip(code))
    out.recalibrated_for = "joint:" + ",".join(canonical)
    out.recalibration_samples = seen
    result: ADNModel = out
    return result


def recalibrated_all(model: ADNModel, codes: Iterable[str], batches: list[Any],
                     max_samples: int | None = None) -> dict[str, ADNModel]:
    """``{code: recalibrated(model, code, batches)}``; ``batches`` must be re-iterable (a list)."""
    return {c: recalibrated(model, c, batches, max_samples) for c in codes}


def calibration_batches(dataset: Any, samples: int = 512, batch_size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    """A fixed, shuffled list of image batches (``samples`` images) from a dataset.

    The batches are materialised once so that all 2^S sub-networks are recalibrated
    on exactly the same images.
    """
    n = len(dataset)
    if n < 2:
        raise AdnError(f"Recalibration needs at least 2 images; the data has {n}.")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)[: min(samples, n)].tolist()
    out: list[torch.Tensor] = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        if len(chunk) < 2:
            break
        out.append(torch.stack([dataset[i][0] for i in chunk]))
    return out


def batches_from_data(data: str, arch: str, samples: int = 512, input_size: int | None = None,
                      batch_size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    """Calibration batches from a ``--data`` value (``builtin``, ``builtin:NAME`` or an ImageFolder).

    Uses the *training* split (``DIR/train`` when present), preprocessed exactly as
    the architecture's input (``input_size`` overrides the registry's), without
    augmentation: what ``adn-edge export --recalibrate DATA --recal-samples N`` needs.
    """
    from adn_edge.train.data import load_data, preprocess_for_arch

    if samples < 2:
        raise AdnError(f"--recal-samples must be at least 2, not {samples}.")
    prep = preprocess_for_arch(arch, input_size)
    return calibration_batches(load_data(data, "train", prep), samples, batch_size, seed)
