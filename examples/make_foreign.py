"""Make the inputs of the README's "Bring your own model" commands:
``python examples/make_foreign.py [FOLDER]`` (default ``byom/``; ignored by git).

Models dlzoo did not train, made here from code and seeds (nothing is downloaded), with random
weights: they show the import and serving mechanics, not accuracy.
- ``tiny_cnn.onnx`` + ``tiny_cnn_labels.txt``: a MobileNet-style image classifier (depthwise
  separable convolutions) exported by ``torch.onnx.export`` with a fixed batch of 1, 3 x 64 x 64
  input, expecting pixels normalized with mean 0.5 and std 0.25; 4 classes.
- ``iris.onnx``: scikit-learn's logistic regression on its iris data, converted by skl2onnx (tensor
  outputs: ``zipmap`` off).
- ``resnet18.pth``: a state dict in torchvision's ResNet-18 layout (dlzoo's resnet18 at
  torchvision's configuration, random weights and batch-norm statistics), as
  ``torch.save(model.state_dict())`` writes one.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

TINY_LABELS = ["circle", "square", "triangle", "star"]


def separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNet's block: a 3x3 depthwise conv, then a 1x1 pointwise conv, each BN + ReLU6."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU6(),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


def tiny_cnn(folder: Path) -> list[Path]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        separable(16, 32, 2),
        separable(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, len(TINY_LABELS)),
    ).eval()
    path = folder / "tiny_cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.rand(1, 3, 64, 64),),
            str(path),
            input_names=["image"],
            output_names=["scores"],
            external_data=False,
            verbose=False,
        )
    labels = folder / "tiny_cnn_labels.txt"
    labels.write_text("".join(f"{name}\n" for name in TINY_LABELS))
    return [path, labels]


def iris(folder: Path) -> Path:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    path = folder / "iris.onnx"
    path.write_bytes(to_onnx(model, x[:1], options={"zipmap": False}).SerializeToString())
    return path


def resnet18_state_dict(folder: Path) -> Path:
    from training.architectures import resnet18

    torch.manual_seed(0)
    net = resnet18(num_classes=1000, in_channels=3, input_size=(224, 224))
    state = net.state_dict()
    for key, value in state.items():  # statistics a trained network would have, not 0 and 1
        if key.endswith("running_mean"):
            value.normal_(0.0, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    path = folder / "resnet18.pth"
    torch.save(state, path)
    return path


def make(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [*tiny_cnn(folder), iris(folder), resnet18_state_dict(folder)]


if __name__ == "__main__":
    for written in make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("byom")):
        print(written)
