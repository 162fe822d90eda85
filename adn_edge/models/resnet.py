"""ResNet-ADN (docs/official-format.md section 2) and our small CIFAR-size ResNet-ADN.

Key names and registration order follow the official ``models/resnet.py`` exactly, so
official state dicts load strictly (checked against the keys fixtures): a mandatory
block lists conv1, bn1, conv2, bn2, conv3, bn3, downsample, then its ``bnX_skip``
twins. Stage k (flag k) is ``layer{k+1}``; its first ``ceil(n/2)`` blocks (at most
n-1) are mandatory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adn_edge.models.base import ADNModel, PoolLinearHead, pick_norm
from adn_edge.models.registry import register_model

if TYPE_CHECKING:
    from adn_edge.models.folding import Folder


def num_mandatory(n: int) -> int:
    return min(math.ceil(n / 2), n - 1)


def _downsample(inplanes: int, outplanes: int, stride: int, variant: str) -> nn.Sequential:
    if variant == "d" and stride != 1:
        # 'vd': average-pool then a stride-1 1x1 conv (keys downsample.1 / .2).
        return nn.Sequential(
            nn.AvgPool2d(2, stride=2, padding=0, ceil_mode=True, count_include_pad=True),
            nn.Conv2d(inplanes, outplanes, 1, stride=1, bias=False),
            nn.BatchNorm2d(outplanes),
        )
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes))


class _Block(nn.Module):
    """Shared logic of basic and bottleneck blocks: a chain of conv+norm, a shortcut."""

    convs: Sequence[str]

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)

    def _add_twins(self, mandatory: bool, planes: Sequence[int]) -> None:
        self.mandatory = mandatory
        if mandatory:
            for i, p in enumerate(planes, start=1):
                setattr(self, f"bn{i}_skip", nn.BatchNorm2d(p))

    def forward(self, x: torch.Tensor, skipped: bool = False) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = x
        last = len(self.convs)
        for i, name in enumerate(self.convs, start=1):
            out = pick_norm(self, f"bn{i}", skipped)(getattr(self, name)(out))
            if i < last:
                out = self.relu(out)
        return self.relu(out + identity)

    def static(self, skipped: bool, fold: Folder) -> _StaticBlock:
        convs = [fold(getattr(self, name), pick_norm(self, f"bn{i}", skipped)) for i, name in enumerate(self.convs, 1)]
        shortcut = None
        if self.downsample is not None:
            *pre, conv, bn = list(self.downsample)
            shortcut = nn.Sequential(*pre, fold(conv, bn))
        return _StaticBlock(convs, shortcut)


class BasicBlock(_Block):
    expansion = 1
    convs = ("conv1", "conv2")

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, mandatory: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self._add_twins(mandatory, [planes, planes])


class Bottleneck(_Block):
    expansion = 4
    convs = ("conv1", "conv2", "conv3")

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, mandatory: bool) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = downsample
        self._add_twins(mandatory, [planes, planes, out])


class _StaticBlock(nn.Module):
    """A residual block after folding: conv(+bias) -> ReLU chains plus a shortcut."""

    def __init__(self, convs: Sequence[nn.Conv2d], shortcut: nn.Module | None) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = x
        for i, conv in enumerate(self.convs):
            out = conv(out)
            if i < len(self.convs) - 1:
                out = torch.relu(out)
        return torch.relu(out + identity)


class ResNetADN(ADNModel):
    """ResNet with skippable second halves of each stage.

    ``stem='imagenet'``: 7x7/2 conv + BN + ReLU + 3x3/2 max-pool (the official one);
    ``stem='cifar'``: 3x3/1 conv + BN + ReLU (our small models for 32x32 inputs).
    """

    num_skippable_stages = 4

    def __init__(self, block: type[_Block], layers: Sequence[int], num_classes: int = 1000,
                 widths: Sequence[int] = (64, 128, 256, 512), stem: str = "imagenet",
                 downsample: str = "a") -> None:
        super().__init__()
        self._num_classes = num_classes
        self.stem_kind = stem
        self.inplanes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, self.inplanes, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        self.mandatory_counts = [num_mandatory(n) for n in layers]
        for k, (n, w) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if k == 0 else 2
            setattr(self, f"layer{k + 1}", self._make_layer(block, w, n, stride, downsample, self.mandatory_counts[k]))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type[_Block], planes: int, n: int, stride: int, variant: str,
                    mandatory: int) -> nn.Sequential:
        out = planes * block.expansion
        ds = _downsample(self.inplanes, out, stride, variant) if stride != 1 or self.inplanes != out else None
        blocks: list[nn.Module] = [block(self.inplanes, planes, stride, ds, mandatory > 0)]  # type: ignore[call-arg]
        self.inplanes = out
        blocks += [block(out, planes, 1, None, i < mandatory) for i in range(1, n)]  # type: ignore[call-arg]
        return nn.Sequential(*blocks)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{k + 1}") for k in range(self.num_skippable_stages)]

    def residual_branch_norms(self) -> list[nn.Module]:
        norms = []
        for stage in self.stages:
            for blk in stage:
                last = f"bn{len(blk.convs)}"
                norms += [getattr(blk, n) for n in (last, last + "_skip") if hasattr(blk, n)]
        return norms

    def _kept_blocks(self, k: int, skipped: bool) -> list[nn.Module]:
        blocks = list(self.stages[k])
        return blocks[: self.mandatory_counts[k]] if skipped else blocks

    def forward(self, x: torch.Tensor, skip: Sequence[Any] | None = None) -> torch.Tensor:
        flags = self.resolve_skip(skip)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for k, skipped in enumerate(flags):
            for blk in self._kept_blocks(k, skipped):
                x = blk(x, skipped)
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def static_stages(self, code: str, folder: Folder) -> list[nn.Module]:
        parts: list[nn.Module] = []
        for k, c in enumerate(code):
            skipped = c == "0"
            mods = [blk.static(skipped, folder) for blk in self._kept_blocks(k, skipped)]
            if k == 0:
                mods.insert(0, nn.Sequential(folder(self.conv1, self.bn1), nn.ReLU(), self.maxpool))
            if k == len(code) - 1:
                mods.append(PoolLinearHead(self.fc))
            parts.append(nn.Sequential(*mods))
        return parts


def _official(layers: Sequence[int], variant: str) -> Any:
    def make(num_classes: int = 1000) -> ResNetADN:
        return ResNetADN(Bottleneck, layers, num_classes=num_classes, downsample=variant)

    return make


_DESC = "official ResNet-{}-ADN ({} shortcut), ImageNet stem, 224x224"
for _name, _layers, _v in (("resnet50", (3, 4, 6, 3), "a"), ("resnet50vd", (3, 4, 6, 3), "d"),
                           ("resnet101", (3, 4, 23, 3), "a"), ("resnet101vd", (3, 4, 23, 3), "d")):
    register_model(_name, num_stages=4,
                   description=_DESC.format(_name[6:9], "conv" if _v == "a" else "avg-pool 'vd'"))(_official(_layers, _v))


@register_model("resnet_tiny", num_stages=4, input_size=32, num_classes=10, official=False,
                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                description="ours: CIFAR-size ResNet-ADN, basic blocks 2-2-2-2, widths 16-32-64-128, 32x32")
def resnet_tiny(num_classes: int = 10) -> ResNetADN:
    return ResNetADN(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, widths=(16, 32, 64, 128), stem="cifar")


@register_model("resnet_small", num_stages=4, input_size=32, num_classes=10, official=False,
                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                description="ours: CIFAR-size bottleneck ResNet-ADN, 3-4-6-3 blocks, widths 16-32-64-128, 32x32")
def resnet_small(num_classes: int = 10) -> ResNetADN:
    return ResNetADN(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, widths=(16, 32, 64, 128), stem="cifar")
