"""ResNet.

He, Zhang, Ren & Sun, "Deep residual learning for image recognition", arXiv:1512.03385 (CVPR 2016),
Table 1. ResNet-18/34 stack :class:`BasicBlock` (two 3x3 convs), ResNet-50/101/152 stack
:class:`Bottleneck` (1x1 reduce, 3x3, 1x1 expand by 4). Every conv is followed by batch
normalization; a shortcut that changes shape is a strided 1x1 conv + BN (the paper's option B).

Module, parameter and buffer names follow torchvision exactly (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer2.0.downsample.0`` / ``.1``, ``fc``), so with ``width=1.0``,
``small_input=False`` and ``in_channels=3`` a torchvision state_dict loads unchanged (ResNet-18:
11,689,512 parameters, ResNet-50: 25,557,032, for 1000 classes). Like torchvision ("ResNet v1.5"),
a Bottleneck strides in its 3x3 conv, not its first 1x1 conv as in the paper.

``width`` scales the base planes (64 * width, then x2 per stage). ``small_input=True`` is the stem
used for CIFAR-sized images (section 4.2 of the paper uses a 3x3 first conv on 32x32 images): conv1
is 3x3 stride 1 and the max pool is dropped (``maxpool`` becomes ``nn.Identity``; it has no
parameters, so names are unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or projection) shortcut: ``relu(F(x) + shortcut(x))``."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (N, planes, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (N, planes, H/s, W/s)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce to ``planes``, 3x3 (strided), 1x1 expand to ``4 * planes``, plus shortcut."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (N, 4*planes, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (N, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (N, 4*planes, H/s, W/s)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet (He et al. 2015): stem, four stages of residual blocks, global average pool, ``fc``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``[2, 2, 2, 2]`` for ResNet-18.
        num_classes: number of output logits (1000 in the paper).
        in_channels: input image channels (3 in the paper).
        width: multiplies the base planes (64) of every stage.
        small_input: 3x3 stride-1 ``conv1`` and no max pool, for 32x32-sized images.
        zero_init_residual: zero the last BN's gamma in each block, so each block starts as identity
            (Goyal et al. 2017); off by default, as in the paper.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        width: float = 1.0,
        small_input: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        planes = [_scaled(p, width) for p in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes[3] * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes for a 224x224 input with width 1 (small_input at 32x32: 32, 32, 16, 8, 4).
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 64, 112, 112)
        x = self.maxpool(x)  # (N, 64, 56, 56)
        x = self.layer1(x)  # (N, 64*e, 56, 56), e = block.expansion
        x = self.layer2(x)  # (N, 128*e, 28, 28)
        x = self.layer3(x)  # (N, 256*e, 14, 14)
        x = self.layer4(x)  # (N, 512*e, 7, 7)
        x = self.avgpool(x)  # (N, 512*e, 1, 1)
        x = torch.flatten(x, 1)  # (N, 512*e)
        return self.fc(x)  # (N, num_classes)


def _resnet(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    num_classes: int,
    in_channels: int,
    input_size: Sequence[int],
    width: float,
    small_input: bool,
    zero_init_residual: bool,
) -> ResNet:
    # Any input size works: every stride-2 stage maps a 1x1 map to 1x1 and avgpool is adaptive.
    del input_size
    return ResNet(block, layers, num_classes, in_channels, width, small_input, zero_init_residual)


def resnet18(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-18 (He et al. 2015): BasicBlock x [2, 2, 2, 2]."""
    return _resnet(
        BasicBlock,
        [2, 2, 2, 2],
        num_classes,
        in_channels,
        input_size,
        width,
        small_input,
        zero_init_residual,
    )


def resnet34(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-34 (He et al. 2015): BasicBlock x [3, 4, 6, 3]."""
    return _resnet(
        BasicBlock,
        [3, 4, 6, 3],
        num_classes,
        in_channels,
        input_size,
        width,
        small_input,
        zero_init_residual,
    )


def resnet50(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-50 (He et al. 2015): Bottleneck x [3, 4, 6, 3]."""
    return _resnet(
        Bottleneck,
        [3, 4, 6, 3],
        num_classes,
        in_channels,
        input_size,
        width,
        small_input,
        zero_init_residual,
    )


def resnet101(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-101 (He et al. 2015): Bottleneck x [3, 4, 23, 3]."""
    return _resnet(
        Bottleneck,
        [3, 4, 23, 3],
        num_classes,
        in_channels,
        input_size,
        width,
        small_input,
        zero_init_residual,
    )


def resnet152(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-152 (He et al. 2015): Bottleneck x [3, 8, 36, 3]."""
    return _resnet(
        Bottleneck,
        [3, 8, 36, 3],
        num_classes,
        in_channels,
        input_size,
        width,
        small_input,
        zero_init_residual,
    )
