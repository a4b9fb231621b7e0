"""LeNet-5.

LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 86(11), 1998, section II.B. On a 32x32 input::

    C1  conv 5x5, 6 maps        -> 6 @ 28x28
    S2  2x2 subsampling         -> 6 @ 14x14
    C3  conv 5x5, 16 maps       -> 16 @ 10x10
    S4  2x2 subsampling         -> 16 @ 5x5
    C5  conv 5x5, 120 maps      -> 120 @ 1x1   (a full connection to S4)
    F6  full connection, 84 units
    output, one unit per class

Departures from the paper, all common in modern re-implementations:

* S2 and S4 are plain 2x2 average pooling; the paper's subsampling units also had a trainable
  coefficient and bias per map followed by a squashing function.
* C3 is fully connected to all six S2 maps; the paper's Table I connected each C3 map to a subset.
* The squashing function is ``tanh``; the paper used the scaled ``1.7159 * tanh(2/3 * a)``.
* The output layer is a ``Linear`` producing logits (for cross-entropy); the paper's output layer
  was Euclidean radial basis function units.

Other input sizes: C5 is defined in the paper as a full connection to S4 that happens to be a 5x5
convolution because S4 is 5x5. We keep that meaning: C5's kernel covers the whole S4 map, whatever
its size (4x4 for a 28x28 MNIST image, 13x13 for 64x64), so C5 always outputs ``120 @ 1x1``. An
input too small to leave at least a 1x1 S4 map (a side below 16) raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _s4_size(side: int) -> int:
    """Side of the S4 map for an input side (C1 conv 5, S2 pool 2, C3 conv 5, S4 pool 2)."""
    return ((side - 4) // 2 - 4) // 2


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998); see the module docstring for the layer table and departures.

    Args:
        num_classes: number of output logits (10 in the paper).
        in_channels: input image channels (1 in the paper).
        input_size: ``(H, W)`` of the input; 32x32 in the paper. C5's kernel is sized to cover S4.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, input_size: Sequence[int] = (32, 32)
    ) -> None:
        super().__init__()
        h, w = (int(s) for s in input_size)
        s4 = (_s4_size(h), _s4_size(w))
        if min(s4) < 1:
            raise ValueError(
                f"LeNet5 needs an input of at least 16x16 (it leaves a 1x1 S4 map); got {h}x{w}"
            )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),  # C1
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2, stride=2),  # S2
            nn.Conv2d(6, 16, kernel_size=5),  # C3
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2, stride=2),  # S4
            nn.Conv2d(16, 120, kernel_size=s4),  # C5: a full connection to S4
            nn.Tanh(),
        )
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Linear(120, 84),  # F6
            nn.Tanh(),
            nn.Linear(84, num_classes),  # output
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 120, 1, 1) for any accepted input size
        x = self.flatten(x)  # (N, 120)
        return self.classifier(x)  # (N, num_classes)


def lenet5(
    num_classes: int = 10, in_channels: int = 1, input_size: Sequence[int] = (32, 32)
) -> LeNet5:
    """LeNet-5 (LeCun et al. 1998) for ``in_channels x input_size`` images."""
    return LeNet5(num_classes, in_channels, input_size)
