"""(model, code) -> a plain static ``nn.Module`` of one sub-network.

The static module has no skip argument and no control flow: skipped blocks are not
in it, each mandatory block holds the norm its stage's flag selects, and every
BatchNorm is folded into the convolution before it. Export, the PyTorch runtime
backend and evaluation all run this module, so what is measured is what is shipped.

Sharing: a :class:`~adn_edge.models.folding.Folder` caches folded convolutions by (conv, bn) pair. Build all
sub-networks of a model with one folder and they share every tensor that is really
identical (a folded conv exists once per stage skip-state), and modules that need
no folding (linear heads, LayerNorms) are the parent model's own modules.

Stable names (docs/model-directory.md, "Initializer names"): every parameter of the static module knows
where it came from. A folded conv is named after the conv, with ``.skip`` appended
when the BN it absorbed was a ``_skip`` twin; an untouched module keeps its name in
the parent model. :func:`stable_names` returns that mapping for the exporter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adn_edge import subnet
from adn_edge.models.base import ADNModel
from adn_edge.models.folding import Folder

class StaticSubnet(nn.Module):
    """One sub-network as a plain module: ``forward(x) -> logits``."""

    def __init__(self, body: nn.Module, arch: str, code: str, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.arch = arch
        self.code = code
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def materialize(model: ADNModel, code: str, folder: Folder | None = None) -> StaticSubnet:
    """The static module of sub-network ``code`` (any accepted spelling) of ``model``."""
    canonical = subnet.parse_code(code, model.num_skippable_stages, model.arch)
    folder = folder or Folder(model)
    body = model.static_body(canonical, folder)
    return StaticSubnet(body, model.arch, canonical, model.num_classes).eval()


def stable_names(static: nn.Module, folder: Folder) -> dict[str, str]:
    """Map each parameter/buffer name of ``static`` to its stable, cross-graph name.

    Tensors created by the static module itself and not traceable to the parent
    (e.g. a precomputed attention bias) are left out; the exporter names those by
    content hash, which keeps the contract (identical tensor <=> identical name).
    """
    out: dict[str, str] = {}
    for fqn, mod in static.named_modules():
        source: Any = getattr(mod, "adn_source", None)
        if source is not None:
            base, suffix = source
        elif id(mod) in folder.names:
            base, suffix = folder.names[id(mod)], ""
        else:
            continue
        prefix = f"{fqn}." if fqn else ""
        for pname, _ in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            out[prefix + pname] = f"{base}.{pname}{suffix}" if base else f"{pname}{suffix}"
    return out
