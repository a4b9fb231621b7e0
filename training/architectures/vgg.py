"""VGG.

Simonyan & Zisserman, "Very deep convolutional networks for large-scale image recognition",
arXiv:1409.1556 (ICLR 2015), Table 1. A variant is data: ``cfgs[name]`` lists conv widths (3x3,
stride 1, padding 1, each followed by ReLU) and ``"M"`` for a 2x2 stride-2 max pool. Configurations
A, B, D, E are VGG-11, -13, -16, -19. The ``_bn`` builders add batch normalization (Ioffe & Szegedy
2015) after every conv, as torchvision does; the paper had none (it used LRN in A-LRN only).

Module and parameter names follow torchvision (``features``, ``avgpool``, ``classifier``), so with
``width=1.0, small_input=False, in_channels=3`` a torchvision VGG state_dict loads unchanged
(VGG-16: 138,357,544 parameters for 1000 classes).

Small images:

* ``small_input=True`` (for 32x32-sized inputs, CIFAR-style): ``avgpool`` reduces to 1x1 instead of
  7x7, and the classifier's two hidden layers have ``512 * width`` units instead of
  ``4096 * width``. Five pools take 32x32 to 1x1, so a 7x7 head would replicate one value 49 times.
* An input smaller than 32x32 (e.g. 28x28) would be pooled below 1x1; a pool that would do so is
  replaced by ``nn.Identity`` (the layer index is kept, so parameter names do not move).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

cfgs: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def make_layers(
    cfg: Sequence[int | str],
    batch_norm: bool = False,
    in_channels: int = 3,
    width: float = 1.0,
    input_size: Sequence[int] | None = None,
) -> nn.Sequential:
    """The ``features`` stack for one of ``cfgs``: ``Conv3x3 -> [BN] -> ReLU`` per number, a 2x2
    max pool per ``"M"``.

    With ``input_size`` given, a pool that would reduce a side below 1 becomes ``nn.Identity``.
    """
    layers: list[nn.Module] = []
    h, w = (int(s) for s in input_size) if input_size is not None else (None, None)
    for v in cfg:
        if v == "M":
            if h is not None and (h // 2 < 1 or w // 2 < 1):
                layers.append(nn.Identity())
            else:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                h, w = (h // 2, w // 2) if h is not None else (None, None)
        else:
            out_channels = _scaled(int(v), width)
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU())
            in_channels = out_channels
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman 2014) around a ``features`` stack from :func:`make_layers`.

    Args:
        features: the convolutional stack; its last conv has ``features_out`` channels.
        features_out: channels out of ``features`` (512 * width).
        num_classes: number of output logits (1000 in the paper).
        pool_size: side of ``avgpool``'s output (7 for 224x224 inputs, 1 for small inputs).
        hidden: units in each of the two hidden FC layers (4096 in the paper).
        dropout: dropout probability after each hidden FC layer (0.5 in the paper).
        init_weights: He-normal convs, N(0, 0.01) linears, zero biases (as torchvision).
    """

    def __init__(
        self,
        features: nn.Sequential,
        features_out: int = 512,
        num_classes: int = 1000,
        pool_size: int = 7,
        hidden: int = 4096,
        dropout: float = 0.5,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Linear(features_out * pool_size * pool_size, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        if init_weights:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    # The paper's N(0, 0.01) suits 4096-wide layers; at the narrow widths of the
                    # small-input variants it shrinks the logits to ~1e-4 and a 16-layer net
                    # without batch norm never leaves chance level (measured on digits). Glorot
                    # initialisation is what the paper reports working without pre-training.
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512*width, H/32, W/32); (N, 512*width, 1, 1) at 32x32
        x = self.avgpool(x)  # (N, 512*width, pool_size, pool_size)
        x = self.flatten(x)  # (N, 512*width*pool_size^2)
        return self.classifier(x)  # (N, num_classes)


def _vgg(
    cfg: str,
    batch_norm: bool,
    num_classes: int,
    in_channels: int,
    input_size: Sequence[int],
    width: float,
    small_input: bool,
    dropout: float,
) -> VGG:
    features = make_layers(cfgs[cfg], batch_norm, in_channels, width, input_size)
    return VGG(
        features,
        features_out=_scaled(512, width),
        num_classes=num_classes,
        pool_size=1 if small_input else 7,
        hidden=_scaled(512 if small_input else 4096, width),
        dropout=dropout,
    )


def vgg11(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.5,
) -> VGG:
    """VGG-11, configuration A (Simonyan & Zisserman 2014)."""
    return _vgg("A", False, num_classes, in_channels, input_size, width, small_input, dropout)


def vgg11_bn(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.5,
) -> VGG:
    """VGG-11 (configuration A) with batch normalization."""
    return _vgg("A", True, num_classes, in_channels, input_size, width, small_input, dropout)


def vgg13(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.5,
) -> VGG:
    """VGG-13, configuration B (Simonyan & Zisserman 2014)."""
    return _vgg("B", False, num_classes, in_channels, input_size, width, small_input, dropout)


def vgg13_bn(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.5,
) -> VGG:
    """VGG-13 (configuration B) with batch normalization."""
    return _vgg("B", True, num_classes, in_channels, input_size, width, small_input, dropout)


def vgg16(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.5,
) -> VGG:
    """VGG-16, configuration D (Simonyan & Zisserman 2014)."""
    return _vgg("D", False, num_classes, in_channels, input_size, width, small_input, dropout)


def vgg16_bn(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.5,
) -> VGG:
    """VGG-16 (configuration D) with batch normalization."""
    return _vgg("D", True, num_classes, in_channels, input_size, width, small_input, dropout)


def vgg19(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.5,
) -> VGG:
    """VGG-19, configuration E (Simonyan & Zisserman 2014)."""
    return _vgg("E", False, num_classes, in_channels, input_size, width, small_input, dropout)


def vgg19_bn(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.5,
) -> VGG:
    """VGG-19 (configuration E) with batch normalization."""
    return _vgg("E", True, num_classes, in_channels, input_size, width, small_input, dropout)
