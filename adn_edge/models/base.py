"""What every ADN architecture shares.

An ADN model is an ``nn.Module`` whose ``forward(x, skip)`` reproduces the official
research code's forward for the given skip list (docs/official-format.md section 1). On top of that each
family implements :meth:`ADNModel.static_body`, which builds the *static* module of
one sub-network: skipped blocks absent, norm twins chosen, BatchNorm folded. That
second method is what makes a sub-network exportable without control flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from adn_edge import subnet
from adn_edge.models.folding import TWIN_SUFFIX, Folder
from adn_edge.errors import AdnError


def pick_norm(block: nn.Module, name: str, skipped: bool) -> nn.Module:
    """The norm a block uses: its ``<name>_skip`` twin iff the stage is skipped.

    Skippable blocks have no twins; they never run in a skipped stage anyway, so
    falling back to the main norm is exactly the official rule.
    """
    twin = getattr(block, name + TWIN_SUFFIX, None)
    return twin if skipped and twin is not None else getattr(block, name)


class ADNModel(nn.Module):
    """Base class: skip-list handling, codes, and the static-export hook."""

    arch: str = "?"
    num_skippable_stages: ClassVar[int] = 4
    default_skip_all: ClassVar[bool] = False
    """Official default when ``skip`` is omitted: False = super-net (MobileNetV2: True)."""

    def resolve_skip(self, skip: Sequence[Any] | None) -> list[bool]:
        """The official flag semantics: an entry counts as skipped iff ``== True``."""
        n = self.num_skippable_stages
        if skip is None:
            return [self.default_skip_all] * n
        flags = [bool(s == True) for s in skip]  # noqa: E712 - official semantics (see docs/official-format.md 1.1)
        if len(flags) != n:
            raise AdnError(f"{self.arch} has {n} skippable stages but a skip list of {len(flags)} was given.")
        return flags

    def forward_code(self, x: torch.Tensor, code: str) -> torch.Tensor:
        """Forward of one sub-network named by any accepted spelling of its code."""
        canonical = subnet.parse_code(code, self.num_skippable_stages, self.arch)
        return self(x, skip=subnet.to_skip(canonical))

    def static_stages(self, code: str, folder: Folder) -> list[nn.Module]:
        """The sub-network ``code`` as S static parts, part k depending only on ``code[k]``.

        Part 0 takes the image (it includes the stem), part S-1 returns the logits
        (it includes the head); chained they are the whole sub-network. Splitting
        along the flags is what lets the segmented runtime hold 2*S graphs instead of
        2^S. ``folder`` folds conv+BN pairs and caches the result, so parts built with
        the same folder share every folded tensor that is identical.
        """
        raise NotImplementedError

    def static_body(self, code: str, folder: Folder) -> nn.Module:
        """The sub-network ``code`` as one static module (no skip argument)."""
        return nn.Sequential(*self.static_stages(code, folder))

    def residual_branch_norms(self) -> list[nn.Module]:
        """The norms that end a residual branch (what ``zero_init_residual`` zeroes).

        Random-weight tools damp them so that deep random networks stay well
        conditioned, as trained ones are (see :mod:`adn_edge.models.random_weights`).
        """
        return []

    @property
    def num_classes(self) -> int:
        raise NotImplementedError


class PoolLinearHead(nn.Module):
    """Global average pool, flatten, linear: the head of every CNN family here."""

    def __init__(self, fc: nn.Linear) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))
