"""Multilayer perceptron: fully connected layers on the flattened image.

Rumelhart, Hinton & Williams, "Learning representations by back-propagating errors", Nature 323
(1986). The hidden units are ``Linear -> [BatchNorm1d] -> activation -> [Dropout]``; batch
normalization (Ioffe & Szegedy 2015) and dropout (Srivastava et al. 2014) are optional modern
extras, off by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Allowed activation names -> module class. Constructed per layer; never read inside ``forward``.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Flatten ``(N, C, H, W)`` and map it through hidden fully connected layers to logits.

    Args:
        in_features: ``C * H * W`` of the input image.
        num_classes: number of output logits.
        hidden: width of each hidden layer, in order (empty = multinomial logistic regression).
        activation: one of ``"relu"``, ``"sigmoid"``, ``"tanh"``.
        dropout: dropout probability after each hidden activation (0 disables it).
        batch_norm: put a ``BatchNorm1d`` between each hidden ``Linear`` and its activation.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 10,
        hidden: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            # With batch norm the Linear's bias is redundant (BN's beta shifts the same way).
            layers.append(nn.Linear(width, int(h), bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(h)))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        self.flatten = nn.Flatten(1)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)  # (N, C*H*W)
        x = self.features(x)  # (N, hidden[-1])
        return self.classifier(x)  # (N, num_classes)


def mlp(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    hidden: Sequence[int] = (256, 128),
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> MLP:
    """An :class:`MLP` for ``in_channels x input_size`` images (first layer fan-in C*H*W)."""
    h, w = (int(s) for s in input_size)
    return MLP(in_channels * h * w, num_classes, hidden, activation, dropout, batch_norm)
