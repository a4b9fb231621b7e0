"""Image classification data sets as tensors, with the canonical image form serving needs.

``load_images(name, ...)`` returns an :class:`ImageData`: train/val/test tensors brought to the
model's ``size`` and ``channels``, the class names, and ``canonical``: how the data set's images
look (resolution, ink polarity, how the object is framed, contrast), which becomes the card's
``service.card.Preprocess`` together with the model's size, channels, mean and std. Serving brings
every upload to that form, so that it looks like the data the model was trained on.

Where canonical values are measured (digits, Fashion-MNIST), they are measured on the full training
split at native resolution, so ``limit`` does not change them:

- ``fill``: the median over images of the ink bounding box's longer side over the frame's side
  (ink: pixel > ``INK_THRESHOLD``), at most 1.
- ``center``: the mean distance from the frame's centre of the ink box's centre and of the centre
  of mass is measured; the one closer to the frame's centre is how the data set centres its objects.
- ``stretch_contrast``: true when the median image reaches the data set's maximum value.

Measured on this machine: digits fill 1.0 (every digit's box is 8 pixels high), box centre 0.18 px
from the frame centre vs 0.42 px for the centre of mass -> ``bbox``; Fashion-MNIST fill 1.0, box
centre 0.35 px vs 1.80 px -> ``bbox``; both reach their maximum value in most images.
MNIST's framing is documented rather than measured (LeCun et al.: each digit size-normalised into a
20x20 box, then centred by its centre of mass in the 28x28 frame).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.data import cifar10, digits, idx

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10")

FASHION_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
INK_THRESHOLD = 0.15  # a pixel above this (of the data set's range) is ink
VAL_FRACTION = 0.1  # MNIST-style and CIFAR: validation is the last 10% of the training files
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L"): colour -> one channel


@dataclass(frozen=True)
class ImageData:
    name: str  # one of DATASETS
    source: str  # where it came from: a folder, or "sklearn.datasets.load_digits"
    labels: list[str]  # class names; index = class id
    train: tuple[torch.Tensor, torch.Tensor]  # x float32 (N, C, H, W) in [0, 1], y int64 (N,)
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    canonical: dict  # service.card.Preprocess kwargs but size/channels/mean/std

    def splits(self) -> dict[str, int]:
        return {"train": len(self.train[1]), "val": len(self.val[1]), "test": len(self.test[1])}


@dataclass(frozen=True)
class _Source:
    """Where a data set that is not bundled is looked for, and what to tell a user who lacks it."""

    env: str
    default: str | None
    how_to_get: str


_SOURCES = {
    "mnist": _Source(
        "DLZOO_MNIST",
        None,
        "pass root= or set DLZOO_MNIST to a folder holding MNIST's four IDX files "
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte; .gz or not)",
    ),
    "fashion-mnist": _Source(
        "DLZOO_FASHION_MNIST",
        "/usr/share/datasets/fashion-mnist",
        "`apt-get install dataset-fashion-mnist` installs it in /usr/share/datasets/fashion-mnist; "
        "or pass root= or set DLZOO_FASHION_MNIST to a folder holding its four IDX files",
    ),
    "cifar10": _Source(
        "DLZOO_CIFAR10",
        None,
        "pass root= or set DLZOO_CIFAR10 to the folder unpacked from cifar-10-binary.tar.gz "
        "(the binary version: data_batch_1.bin .. data_batch_5.bin, test_batch.bin)",
    ),
}


def load_images(
    name: str,
    *,
    root: str | None = None,
    size: tuple[int, int] = (32, 32),
    channels: int = 1,
    seed: int = 0,
    limit: int | None = None,
) -> ImageData:
    """Load data set ``name`` as float32 (N, channels, *size) tensors in [0, 1].

    ``root``: the data's folder (not for digits, which ships with scikit-learn). ``seed``: digits'
    stratified split; the other data sets have a fixed split. ``limit``: keep at most that many
    examples of each split, the first ones (for tiny runs). Resizing is bilinear
    (``align_corners=False``, antialiased when shrinking); one channel becomes three by repetition,
    three become one by luma.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"size must be (height, width) of positive ints, got {size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of examples, got {limit}")

    if name == "digits":
        if root is not None:
            raise ValueError("digits ships with scikit-learn; it takes no root")
        source, labels, max_value = digits.SOURCE, digits.LABELS, digits.MAX_VALUE
        raw = digits.read_splits(seed)
        canonical = _measured_canonical(raw["train"][0], max_value)
    elif name in ("mnist", "fashion-mnist"):
        folder = find_root(name, root)
        source, max_value = str(folder), 255
        with _hint(name):
            train, test = idx.read_split(folder, "train"), idx.read_split(folder, "test")
        raw = {**_hold_out(*train), "test": test}
        if name == "mnist":
            labels = digits.LABELS
            native = tuple(int(d) for d in train[0].shape[-2:])  # 28x28
            canonical = _canonical(
                native, "light", {"mode": "bbox", "fill": 20 / 28, "center": "mass"}, True
            )
        else:
            labels = FASHION_LABELS
            canonical = _measured_canonical(raw["train"][0], max_value)
    else:  # cifar10
        root_folder = find_root(name, root)
        with _hint(name):
            folder = cifar10.find_dir(root_folder)
            train = cifar10.read_split(folder, cifar10.TRAIN_FILES)
            test = cifar10.read_split(folder, cifar10.TEST_FILES)
        source, labels, max_value = str(folder), cifar10.LABELS, 255
        raw = {**_hold_out(*train), "test": test}
        canonical = _canonical(None, None, {"mode": "none"}, False)

    tensors = {
        split: _to_tensors(x[:limit], y[:limit], max_value, size, channels)
        for split, (x, y) in raw.items()
    }
    return ImageData(
        name=name,
        source=source,
        labels=list(labels),
        train=tensors["train"],
        val=tensors["val"],
        test=tensors["test"],
        canonical=canonical,
    )


def find_root(name: str, root: str | None) -> Path:
    src = _SOURCES[name]
    if root is not None:
        chosen, why = root, "the root argument"
    elif os.environ.get(src.env):
        chosen, why = os.environ[src.env], f"${src.env}"
    elif src.default is not None:
        chosen, why = src.default, "the default location"
    else:
        raise FileNotFoundError(
            f"{name}: no data folder given (root=None, ${src.env} unset); {src.how_to_get}"
        )
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{name}: looked in {folder} ({why}), which is not a folder; {src.how_to_get}"
        )
    return folder


@contextmanager
def _hint(name: str) -> Iterator[None]:
    """Add how to get the data to a FileNotFoundError about a missing file."""
    try:
        yield
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{name}: {exc}; {_SOURCES[name].how_to_get}") from exc


def _hold_out(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train and val from one training set: val is its last VAL_FRACTION (CIFAR-10: 5,000)."""
    if len(y) < 2:
        raise ValueError(f"a training set of {len(y)} examples cannot be split into train and val")
    n_val = max(1, int(len(y) * VAL_FRACTION))
    return {"train": (x[:-n_val], y[:-n_val]), "val": (x[-n_val:], y[-n_val:])}


def _canonical(
    native_size: tuple[int, int] | None, ink: str | None, framing: dict, stretch: bool
) -> dict:
    return {
        "native_size": native_size,
        "ink": ink,
        "background": (1.0, 1.0, 1.0),
        "framing": framing,
        "stretch_contrast": stretch,
    }


def _measured_canonical(images: np.ndarray, max_value: int) -> dict:
    """Canonical form of a light-ink, one-channel data set, measured on its training images
    (N, 1, H, W)."""
    x = images[:, 0].astype(np.float32) / max_value  # (N, H, W)
    height, width = x.shape[1:]
    framing = measure_framing(x)
    stretch = bool(np.median(x.reshape(len(x), -1).max(axis=1)) >= 0.99)
    return _canonical((height, width), "light", framing, stretch)


def measure_framing(x: np.ndarray, threshold: float = INK_THRESHOLD) -> dict:
    """How light objects sit in images ``x`` (N, H, W) in [0, 1]: a ``service.card.Framing``
    dict."""
    n, height, width = x.shape
    ink = x > threshold  # (N, H, W)
    rows, cols = ink.any(axis=2), ink.any(axis=1)  # (N, H), (N, W)
    has_ink = rows.any(axis=1)
    x, rows, cols = x[has_ink], rows[has_ink], cols[has_ink]
    if not len(x):
        raise ValueError("no image has any ink: cannot measure the framing")
    top, bottom = rows.argmax(axis=1), height - 1 - rows[:, ::-1].argmax(axis=1)  # (N,) inclusive
    left, right = cols.argmax(axis=1), width - 1 - cols[:, ::-1].argmax(axis=1)
    side = np.maximum(bottom - top + 1, right - left + 1)
    fill = min(1.0, float(np.median(side)) / min(height, width))

    frame_centre = np.array([(height - 1) / 2, (width - 1) / 2])  # pixel centres at integers
    box_centre = np.stack([(top + bottom) / 2, (left + right) / 2], axis=1)  # (N, 2)
    mass = x.sum(axis=(1, 2))  # (N,)
    mass_centre = np.stack(
        [x.sum(axis=2) @ np.arange(height), x.sum(axis=1) @ np.arange(width)], axis=1
    )
    mass_centre /= mass[:, None]  # (N, 2)
    box_off = np.linalg.norm(box_centre - frame_centre, axis=1).mean()
    mass_off = np.linalg.norm(mass_centre - frame_centre, axis=1).mean()
    return {
        "mode": "bbox",
        "fill": round(fill, 4),
        "center": "bbox" if box_off <= mass_off else "mass",
    }


def _to_tensors(
    images: np.ndarray, labels: np.ndarray, max_value: int, size: tuple[int, int], channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, h, w) -> float32 (N, channels, *size) in [0, 1]; labels -> int64 (N,)."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(max_value)  # (N, C, h, w), a copy
    if x.shape[1] == 3 and channels == 1:
        x = torch.einsum("nchw,c->nhw", x, torch.tensor(LUMA)).unsqueeze(1)  # (N, 1, h, w)
    if not len(x):
        x = x.new_zeros((0, x.shape[1], *size))
    elif tuple(x.shape[-2:]) != tuple(size):
        shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(
            x, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink
        )
        x = x.clamp_(0.0, 1.0)
    if x.shape[1] == 1 and channels == 3:
        x = x.repeat(1, 3, 1, 1)  # (N, 3, H, W)
    return x.contiguous(), torch.from_numpy(np.array(labels, dtype=np.int64))
