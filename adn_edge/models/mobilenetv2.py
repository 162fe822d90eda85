"""MobileNetV2-ADN (docs/official-format.md section 3).

The arithmetic is torchvision's MobileNetV2 (width 1.0, ReLU6, BN eps 1e-5), but the
module paths are the official ADN ones, so official state dicts load strictly: each
conv-norm-activation unit owns ``conv_layer``, ``norm`` and, where it has a twin,
``norm_skip``, registered in that order because the state-dict order is compared key
by key against the official fixture.

Unlike ResNet, *every* layer outside the skippable blocks switches norms with some
flag: the layers before the first skippable stage follow the first flag, the layers
after the last one follow the last flag. That is why the flag of each ``features``
entry is computed once (:attr:`MobileNetV2ADN.feature_flags`) and used by both the
ADN forward and :meth:`MobileNetV2ADN.static_body`: the two cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from adn_edge.models.base import ADNModel, PoolLinearHead, pick_norm
from adn_edge.models.registry import register_model

if TYPE_CHECKING:
    # Only for annotations: materialize imports the models package, so a runtime
    # import here would be circular when materialize is imported first.
    from adn_edge.models.folding import Folder

# (expansion t, output channels c, blocks n, first stride s): torchvision's width-1.0 table.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def num_mandatory(n: int) -> int:
    """Blocks of an n-block stage that always run (the rest are dropped when skipped)."""
    return math.ceil(n / 2)


class ConvNormAct(nn.Module):
    """conv -> norm (or its twin) -> optional ReLU6: the official unit, with its key names."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True, twin: bool = False) -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        if twin:
            self.norm_skip = nn.BatchNorm2d(cout)
        # A module (not F.relu6) so that hooks see one executed module per activation.
        self.relu6 = nn.ReLU6(inplace=True) if act else None

    def forward(self, x: torch.Tensor, skipped: bool = False) -> torch.Tensor:
        x = pick_norm(self, "norm", skipped)(self.conv_layer(x))
        return self.relu6(x) if self.relu6 is not None else x

    def static(self, skipped: bool, fold: Folder) -> nn.Module:
        conv = fold(self.conv_layer, pick_norm(self, "norm", skipped))
        # ReLU6 is Hardtanh(0, 6): exported as one Clip, which ONNX Runtime and TensorRT fuse into the conv.
        return nn.Sequential(conv, nn.ReLU6()) if self.relu6 is not None else conv


class InvertedResidual(nn.Module):
    """Expansion 1x1 (absent for t=1) -> depthwise 3x3 -> linear 1x1, plus identity add."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, twin: bool) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        units: list[nn.Module] = []
        if expand_ratio != 1:
            units.append(ConvNormAct(cin, hidden, 1, twin=twin))
        units += [
            ConvNormAct(hidden, hidden, 3, stride=stride, groups=hidden, twin=twin),
            ConvNormAct(hidden, cout, 1, act=False, twin=twin),
        ]
        self.conv = nn.Sequential(*units)

    def forward(self, x: torch.Tensor, skipped: bool = False) -> torch.Tensor:
        out = x
        for unit in self.conv:
            out = unit(out, skipped)
        return x + out if self.use_res_connect else out

    def static(self, skipped: bool, fold: Folder) -> _StaticBlock:
        return _StaticBlock([cast(ConvNormAct, u).static(skipped, fold) for u in self.conv], self.use_res_connect)


class _StaticBlock(nn.Module):
    def __init__(self, units: Sequence[nn.Module], residual: bool) -> None:
        super().__init__()
        self.conv = nn.Sequential(*units)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


class MobileNetV2ADN(ADNModel):
    """MobileNetV2 whose stages of two or more blocks drop their second halves.

    ``features`` = stem unit, one entry per row of ``setting`` (a single block for
    one-block rows, a ``Sequential`` stage otherwise), last 1x1 unit. Rows with
    n >= 2 are the skippable stages, in order; everything else follows the nearest
    end's flag (docs/official-format.md section 3). Every mandatory layer has twins.
    """

    num_skippable_stages = 5
    default_skip_all = True  # official: skip omitted or None -> base-net

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2,
                 setting: Sequence[tuple[int, int, int, int]] = INVERTED_RESIDUAL_SETTING) -> None:
        super().__init__()
        self._num_classes = num_classes
        skippable_rows = [i for i, (_, _, n, _) in enumerate(setting) if n >= 2]
        if len(skippable_rows) != self.num_skippable_stages:
            raise ValueError(f"MobileNetV2-ADN needs {self.num_skippable_stages} rows with n >= 2, "
                             f"got {len(skippable_rows)}")
        first, last = skippable_rows[0], skippable_rows[-1]
        if any(n < 2 for _, _, n, _ in setting[first:last + 1]):
            raise ValueError("a one-block row between skippable stages has no official flag")

        layers: list[nn.Module] = [ConvNormAct(3, STEM_CHANNELS, 3, stride=2, twin=True)]
        # features index -> flag index: a stage's own flag, else the nearest end's.
        flags: list[int] = [0]
        self.stage_indices: list[int] = []
        self.mandatory_counts: list[int] = []
        cin = STEM_CHANNELS
        for row, (t, c, n, s) in enumerate(setting):
            if n >= 2:
                k = len(self.stage_indices)
                m = num_mandatory(n)
                blocks = [InvertedResidual(cin if i == 0 else c, c, s if i == 0 else 1, t, twin=i < m)
                          for i in range(n)]
                layers.append(nn.Sequential(*blocks))
                self.stage_indices.append(row + 1)
                self.mandatory_counts.append(m)
                flags.append(k)
            else:
                layers.append(InvertedResidual(cin, c, s, t, twin=True))
                flags.append(0 if row < first else self.num_skippable_stages - 1)
            cin = c
        layers.append(ConvNormAct(cin, LAST_CHANNELS, 1, twin=True))
        flags.append(self.num_skippable_stages - 1)
        self.features = nn.Sequential(*layers)
        self.feature_flags: tuple[int, ...] = tuple(flags)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(LAST_CHANNELS, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's scheme; official checkpoints overwrite it anyway.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def _kept(self, flags: Sequence[bool]) -> list[tuple[ConvNormAct | InvertedResidual, bool, int]]:
        """The (block, skipped, flag index) triples that run, in order, for resolved flags."""
        out: list[tuple[ConvNormAct | InvertedResidual, bool, int]] = []
        for idx, layer in enumerate(self.features):
            k = self.feature_flags[idx]
            skipped = flags[k]
            if idx in self.stage_indices:
                m = self.mandatory_counts[self.stage_indices.index(idx)]
                blocks = [cast(InvertedResidual, b) for b in cast(nn.Sequential, layer)]
                out += [(b, skipped, k) for b in (blocks[:m] if skipped else blocks)]
            else:
                out.append((cast("ConvNormAct | InvertedResidual", layer), skipped, k))
        return out

    def forward(self, x: torch.Tensor, skip: Sequence[Any] | None = None) -> torch.Tensor:
        for block, skipped, _ in self._kept(self.resolve_skip(skip)):
            x = block(x, skipped)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))

    def residual_branch_norms(self) -> list[nn.Module]:
        blocks = [m for m in self.modules() if isinstance(m, InvertedResidual) and m.use_res_connect]
        last = [cast(ConvNormAct, b.conv[-1]) for b in blocks]
        return [n for u in last for n in (u.norm, getattr(u, "norm_skip", None)) if n is not None]

    def static_stages(self, code: str, folder: Folder) -> list[nn.Module]:
        # feature_flags never decreases, so each flag's layers are contiguous.
        parts: list[list[nn.Module]] = [[] for _ in code]
        for block, skipped, k in self._kept([c == "0" for c in code]):
            parts[k].append(block.static(skipped, folder))
        parts[-1].append(PoolLinearHead(cast(nn.Linear, self.classifier[1])))
        return [nn.Sequential(*p) for p in parts]


@register_model("mobilenet_v2", num_stages=5, input_size=224, norm="batchnorm",
                description="official MobileNetV2-ADN (width 1.0), 224x224; bare forward = base-net")
def mobilenet_v2(num_classes: int = 1000) -> MobileNetV2ADN:
    return MobileNetV2ADN(num_classes=num_classes)
