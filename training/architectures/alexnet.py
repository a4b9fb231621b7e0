"""AlexNet.

Krizhevsky, Sutskever & Hinton, "ImageNet classification with deep convolutional neural networks",
NeurIPS 2012, section 3. Five convolutional layers (96, 256, 384, 384, 256 kernels of 11x11 stride
4, 5x5, 3x3, 3x3, 3x3) with ReLU, local response normalization after the first two (after their
ReLU, as in section 3.3), overlapping 3x3 stride-2 max pooling after layers 1, 2 and 5 (section
3.4), then three fully connected layers of 4096, 4096 and ``num_classes`` units with dropout 0.5
before the first two (section 4.2).

Layout and module names follow torchvision (``features``, ``avgpool``, ``classifier``; the first
conv has padding 2 so a 224x224 input gives 55x55 maps, and ``avgpool`` adapts to 6x6), but the
widths are the paper's: torchvision's single-GPU variant uses 64/192 kernels in the first two layers
and no LRN, so torchvision's weights fit only ``variant="owt"`` (below). The paper split kernels
across two GPUs; here every layer sees all channels of the previous one (62,378,344 parameters at
paper size for 1000 classes).

Local response normalization, the paper's equation (section 3.3)::

    b = a / (k + alpha * sum_{n neighbouring channels} a^2) ** beta
    k = 2, n = 5, alpha = 1e-4, beta = 0.75

computed by :class:`LocalResponseNorm` as ``a * (k + conv1x1(a^2, W)) ** -beta``, where the fixed
matrix ``W`` holds ``alpha`` for each channel's window of ``n`` neighbours (the window
``nn.LocalResponseNorm`` uses: n // 2 before, (n - 1) // 2 after, cut at the edges). The same
function as ``nn.LocalResponseNorm(n, alpha * n, beta, k)`` (torch averages the squares, hence the
``* n``; largest difference 1.2e-7 on the trained quick AlexNet's logits), but that module's 3-D
average pooling exports to Pow -> AveragePool -> Pow -> Div, which took ~1.0 of ONNX Runtime's
1.7 ms per image here (ORT profiler), and ONNX's own LRN operator was slower still. As a 1x1
convolution: ORT 1.72 -> 1.01 ms and PyTorch 2.60 -> 1.94 ms per image (quick model, batch 1). At
the paper's width the dense 256x256 window does ~50x the needed multiply-adds and is still faster:
ORT 42.6 -> 36.6 ms, PyTorch 47.6 -> 43.2 ms (224x224, batch 1, one thread).
``W`` is a non-persistent buffer: checkpoints are the same as with torch's module (LRN has no
weights).

``variant="owt"`` is the single-GPU network of Krizhevsky, "One weird trick for parallelizing
convolutional neural networks", arXiv:1404.5997 (2014), which torchvision's ``alexnet`` implements:
64, 192, 384, 256, 256 kernels, no LRN, the same pools and classifier. Its module indices are
torchvision's (``features.0/3/6/8/10``, ``classifier.1/4/6``), so a torchvision AlexNet state_dict
loads unchanged (61,100,840 parameters for 1000 classes).

``small_input=True`` is a CIFAR-style stem for 32x32-sized images: the first conv is 3x3 stride 1
(padding 1) and the first max pool is dropped, so a 32x32 input reaches ``avgpool`` as 7x7.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Paper's LRN hyper-parameters (section 3.3).
_LRN_SIZE, _LRN_ALPHA, _LRN_BETA, _LRN_K = 5, 1e-4, 0.75, 2.0
# Kernels of the five convs: the 2012 paper's, and the 2014 single-GPU variant's (torchvision's).
_WIDTHS = {"paper": (96, 256, 384, 384, 256), "owt": (64, 192, 384, 256, 256)}


class LocalResponseNorm(nn.Module):
    """The paper's local response normalization across channels; see the module docstring."""

    def __init__(
        self,
        channels: int,
        size: int = _LRN_SIZE,
        alpha: float = _LRN_ALPHA,
        beta: float = _LRN_BETA,
        k: float = _LRN_K,
    ) -> None:
        super().__init__()
        offset = (
            torch.arange(channels)[None, :] - torch.arange(channels)[:, None]
        )  # input - output channel
        window = (offset >= -(size // 2)) & (offset <= (size - 1) // 2)
        self.register_buffer("window", (window.float() * alpha)[:, :, None, None], persistent=False)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.pow(self.k + nn.functional.conv2d(x * x, self.window), -self.beta)

    def extra_repr(self) -> str:
        return (
            f"{self.window.shape[0]}, size={self.size}, alpha={self.alpha}, beta={self.beta}, "
            f"k={self.k}"
        )


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _pool_out(side: int) -> int:
    """Side after a 3x3 stride-2 max pool (no padding)."""
    return (side - 3) // 2 + 1


class AlexNet(nn.Module):
    """AlexNet (Krizhevsky et al. 2012); see the module docstring.

    Args:
        num_classes: number of output logits (1000 in the paper).
        in_channels: input image channels (3 in the paper).
        input_size: ``(H, W)`` of the input, checked so that no pooling stage sees a map below 3x3.
        width: multiplies every conv width (96/256/384/384/256) and the FC hidden width (4096).
        small_input: 3x3 stride-1 first conv and no first max pool, for 32x32-sized images.
        dropout: dropout probability before the first two FC layers (0.5 in the paper).
        variant: ``"paper"`` (2012: LRN, 96/256/384/384/256) or ``"owt"`` (2014, torchvision's).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: Sequence[int] = (224, 224),
        width: float = 1.0,
        small_input: bool = False,
        dropout: float = 0.5,
        variant: str = "paper",
    ) -> None:
        super().__init__()
        if variant not in _WIDTHS:
            raise ValueError(f"AlexNet variant {variant!r}: allowed {', '.join(_WIDTHS)}")
        c1, c2, c3, c4, c5 = (_scaled(c, width) for c in _WIDTHS[variant])
        hidden = _scaled(4096, width)
        self._check_input_size(input_size, small_input)
        # the paper normalizes after the first two ReLUs; the 2014 variant does not
        lrn = (lambda c: [LocalResponseNorm(c)]) if variant == "paper" else (lambda c: [])
        if small_input:
            stem: list[nn.Module] = [
                nn.Conv2d(in_channels, c1, kernel_size=3, stride=1, padding=1),
                nn.ReLU(),
                *lrn(c1),
            ]
        else:
            stem = [
                nn.Conv2d(in_channels, c1, kernel_size=11, stride=4, padding=2),
                nn.ReLU(),
                *lrn(c1),
                nn.MaxPool2d(kernel_size=3, stride=2),
            ]
        self.features = nn.Sequential(
            *stem,
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(),
            *lrn(c2),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c5 * 6 * 6, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    @staticmethod
    def _check_input_size(input_size: Sequence[int], small_input: bool) -> None:
        for side in (int(s) for s in input_size):
            s = side if small_input else (side + 2 * 2 - 11) // 4 + 1  # after conv1
            pools = 2 if small_input else 3
            for _ in range(pools):
                if s < 3:
                    hint = "" if small_input else "; use small_input=True for 32x32-sized images"
                    raise ValueError(
                        f"AlexNet input {tuple(input_size)} is too small: a 3x3 max pool would see "
                        f"a {s}x{s} map{hint}"
                    )
                s = _pool_out(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, 256*width, 6, 6) at 224x224; (N, 256*width, 7, 7) with small_input at 32x32
        x = self.features(x)
        x = self.avgpool(x)  # (N, 256*width, 6, 6)
        x = self.flatten(x)  # (N, 256*width*36)
        return self.classifier(x)  # (N, num_classes)


def alexnet(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (32, 32),
    width: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.5,
    variant: str = "paper",
) -> AlexNet:
    """AlexNet (Krizhevsky et al. 2012); ``small_input=True`` for 32x32-sized images,
    ``variant="owt"`` for the 2014 single-GPU network torchvision ships."""
    return AlexNet(num_classes, in_channels, input_size, width, small_input, dropout, variant)
