"""scikit-learn's copy of the UCI optical digits: 1,797 8x8 images, values 0..16, ten classes.

The data ship inside scikit-learn (``sklearn/datasets/data/digits.csv.gz``): nothing is downloaded.
It has no official split, so one is made here: stratified 70/10/20 train/val/test, fixed by the
seed.
"""

from __future__ import annotations

import numpy as np

SOURCE = "sklearn.datasets.load_digits"
LABELS = tuple(str(d) for d in range(10))
MAX_VALUE = 16  # pixel values are counts 0..16 from the original 32x32 bitmaps' 4x4 blocks
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def read_splits(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (images (N, 1, 8, 8) uint8 in 0..16, labels (N,) int64), stratified by class."""
    # Imported here: scikit-learn is slow to import and only this data set needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8); the values are whole numbers
    labels = bunch.target.astype(np.int64)
    index = np.arange(len(labels))
    rest, test = train_test_split(
        index, test_size=FRACTIONS["test"], stratify=labels, random_state=seed
    )
    val_of_rest = FRACTIONS["val"] / (FRACTIONS["train"] + FRACTIONS["val"])
    train, val = train_test_split(
        rest, test_size=val_of_rest, stratify=labels[rest], random_state=seed
    )
    return {
        name: (images[i], labels[i]) for name, i in (("train", train), ("val", val), ("test", test))
    }
