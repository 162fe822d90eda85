"""Per-sub-network BatchNorm statistics as runtime inputs of the segment graphs.

Recalibration (:mod:`adn_edge.train.recalibrate`) gives each sub-network its own
BatchNorm statistics, and folded into the convolutions they would make the weights
of part k depend on the whole prefix ``code[:k+1]``: no per-stage graph could stand
for every sub-network it is chained into. Corrected segments keep the weights shared
and move the statistics out of them instead:

* every BatchNorm of the segment graphs is folded with *reference* statistics (the
  checkpoint's own running statistics, or the joint statistics of
  :func:`~adn_edge.train.recalibrate.recalibrated_jointly`, see ``reference``);
* after each folded convolution the graph applies a per-channel affine
  ``y' = a * y + b`` whose vectors are graph **inputs** (float32, ``[1, C, 1, 1]``),
  named after the folded convolution: ``<conv>[.skip].corr_scale`` and
  ``<conv>[.skip].corr_shift`` (``.skip`` when the convolution absorbed a ``_skip``
  twin, as the stable initializer names do).

With the reference statistics (mu_r, sigma_r = sqrt(var_r + eps)) folded and a
sub-network's recalibrated ones (mu_c, sigma_c), the folded output is
``y = gamma (z - mu_r) / sigma_r + beta`` and the recalibrated one
``gamma (z - mu_c) / sigma_c + beta = a y + b`` with::

    a = sigma_r / sigma_c,    b = beta (1 - a) + gamma (mu_r - mu_c) / sigma_c

Part k's statistics depend on the prefix ``code[:k+1]`` only (what reaches a norm of
part k has gone through parts 0..k), so the corrections are stored per (prefix,
input): ``2 + 4 + ... + 2^S`` sets, all in one ``.npz`` of float32 arrays keyed
``"<prefix>:<input name>"`` (read with ``allow_pickle=False``).

The cheap form (``threshold``): a convolution keeps its Mul only where some
sub-network's scale differs materially from the reference (``max |a - 1| > T``), its
Add only where some shift does (``max |mu_r - mu_c| / sigma_r > T``, the shift in
units of the channel's output scale ``|gamma|``), and is left as folded otherwise.
Add-only convolutions use ``b' = gamma (mu_r - mu_c) / sigma_r``, which restores the
sub-network's mean exactly (its variance stays the reference one). The PyTorch model
those graphs compute is the recalibrated one with each norm's statistics replaced
accordingly (:func:`approximated_stats`), which is what parity checks them against.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from torch import nn

from adn_edge.modeldir import manifest
from adn_edge.models.folding import SKIP_SUFFIX, TWIN_SUFFIX

SCALE = ".corr_scale"
SHIFT = ".corr_shift"
REFERENCES = ("checkpoint", "joint")
MODES = ("affine", "shift", "none")
"""A convolution's correction: Mul+Add (exact), Add only, or none (reference statistics)."""

Stats = tuple[np.ndarray, np.ndarray]
"""(running_mean, running_var) of one norm, float64."""


@dataclass
class FoldedConv:
    """One folded convolution of a segment graph and the norm it absorbed."""

    weight: str
    """Stable name of its folded weight initializer (what the graph's Conv reads)."""
    name: str
    """Base of its correction inputs: the conv's name, ``.skip`` for a twin norm."""
    bn: str
    """Name of the absorbed BatchNorm in the parent model."""
    channels: int
    mode: str = "affine"

    @property
    def inputs(self) -> list[str]:
        return {"affine": [self.name + SCALE, self.name + SHIFT], "shift": [self.name + SHIFT],
                "none": []}[self.mode]


def folded_convs(part: nn.Module) -> dict[str, FoldedConv]:
    """The convolutions of a static part that a :class:`~adn_edge.models.folding.Folder`
    folded, by the stable name of their weight (see :func:`adn_edge.materialize.stable_names`)."""
    out: dict[str, FoldedConv] = {}
    for mod in part.modules():
        source = getattr(mod, "adn_source", None)
        bn = getattr(mod, "adn_bn", None)
        if source is None or bn is None:
            continue
        base, suffix = source
        weight = f"{base}.weight{suffix}" if base else f"weight{suffix}"
        name = base + (SKIP_SUFFIX if bn.endswith(TWIN_SUFFIX) else "")
        out[weight] = FoldedConv(weight, name, bn, int(mod.weight.shape[0]))
    return out


def insert_corrections(graph: onnx.ModelProto, convs: Mapping[str, FoldedConv]) -> list[str]:
    """Insert ``Mul(scale)`` / ``Add(shift)`` after each folded Conv (by ``mode``), with
    the vectors as new float32 graph inputs ``[1, C, 1, 1]``; in place. Initializers
    are untouched (their stable names stay). Returns the new input names."""
    g = graph.graph
    nodes: list[onnx.NodeProto] = []
    found: set[str] = set()
    inputs: list[onnx.ValueInfoProto] = []
    for node in g.node:
        nodes.append(node)
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in convs:
            continue
        conv = convs[node.input[1]]
        found.add(conv.weight)
        if conv.mode == "none":
            continue
        out = node.output[0]
        current = conv.name + ".folded"
        node.output[0] = current
        if conv.mode == "affine":
            nodes.append(helper.make_node("Mul", [current, conv.name + SCALE], [conv.name + ".scaled"],
                                          name=conv.name + "/corr_mul"))
            current = conv.name + ".scaled"
        nodes.append(helper.make_node("Add", [current, conv.name + SHIFT], [out], name=conv.name + "/corr_add"))
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, conv.channels, 1, 1])
                   for n in conv.inputs]
    missing = set(convs) - found
    if missing:
        raise RuntimeError(f"folded convolutions not found in the traced graph: {sorted(missing)}")
    del g.node[:]
    g.node.extend(nodes)
    g.input.extend(inputs)
    return [v.name for v in inputs]


def bn_stats(model: nn.Module, names: Iterable[str]) -> dict[str, Stats]:
    mods = dict(model.named_modules())
    return {n: (mods[n].running_mean.detach().double().numpy().copy(),
                mods[n].running_var.detach().double().numpy().copy()) for n in names}


def bn_affine(model: nn.Module, names: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    mods = dict(model.named_modules())
    out = {}
    for n in names:
        bn = mods[n]
        c = bn.running_mean.shape[0]
        gamma = bn.weight.detach().double().numpy() if bn.weight is not None else np.ones(c)
        beta = bn.bias.detach().double().numpy() if bn.bias is not None else np.zeros(c)
        out[n] = (gamma, beta, float(bn.eps))
    return out


def affine(ref: Stats, cur: Stats, gamma: np.ndarray, beta: np.ndarray, eps: float,
           mode: str = "affine") -> tuple[np.ndarray, np.ndarray]:
    """(a, b) that turn the output folded with ``ref`` into the one folded with ``cur``
    (``mode`` "affine"), or the mean-preserving shift alone (``a = 1``, "shift")."""
    (mu_r, var_r), (mu_c, var_c) = ref, cur
    sr, sc = np.sqrt(var_r + eps), np.sqrt(var_c + eps)
    if mode == "shift":
        return np.ones_like(sr), gamma * (mu_r - mu_c) / sr
    a = sr / sc
    return a, beta * (1 - a) + gamma * (mu_r - mu_c) / sc


def deviations(ref: Stats, cur: Stats, eps: float) -> tuple[float, float]:
    """(max |a - 1|, max |mu_r - mu_c| / sigma_r) of one norm: how far a sub-network's
    scale and mean are from the reference, in units of the channel's output scale."""
    (mu_r, var_r), (mu_c, var_c) = ref, cur
    sr, sc = np.sqrt(var_r + eps), np.sqrt(var_c + eps)
    return float(np.max(np.abs(sr / sc - 1))), float(np.max(np.abs(mu_r - mu_c) / sr))


def choose_mode(scale_dev: float, shift_dev: float, threshold: float | None) -> str:
    """A convolution's correction under ``threshold`` (None: exact everywhere)."""
    if threshold is None or scale_dev > threshold:
        return "affine"
    return "shift" if shift_dev > threshold else "none"


def approximated_stats(ref: Stats, cur: Stats, mode: str) -> Stats:
    """The norm statistics a graph corrected with ``mode`` computes exactly: the
    sub-network's own (affine), its mean with the reference variance (shift), or the
    reference (none)."""
    return {"affine": cur, "shift": (cur[0], ref[1]), "none": ref}[mode]


prefixes = manifest.code_prefixes
key = manifest.correction_key
feeds = manifest.correction_feeds


def to_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    out: dict[str, Any] = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    np.savez(buf, **out)
    return buf.getvalue()
