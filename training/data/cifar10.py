"""CIFAR-10, binary version (``cifar-10-binary.tar.gz``; never the pickled Python version).

Each ``.bin`` file is a run of 3,073-byte records: one label byte (0..9), then a 32x32 colour image
as 1,024 red, 1,024 green and 1,024 blue bytes, each plane row-major: exactly CHW order.
Training: ``data_batch_1.bin`` .. ``data_batch_5.bin`` (10,000 records each); test:
``test_batch.bin``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHAPE = (3, 32, 32)  # (C, H, W)
RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
SUBDIR = "cifar-10-batches-bin"  # what the official tarball unpacks to


def find_dir(root: Path) -> Path:
    """``root`` itself or its ``cifar-10-batches-bin`` folder: the first holding every batch
    file."""
    for candidate in (root, root / SUBDIR):
        if all((candidate / name).is_file() for name in TRAIN_FILES + TEST_FILES):
            return candidate
    missing = [name for name in TRAIN_FILES + TEST_FILES if not (root / name).is_file()]
    raise FileNotFoundError(
        f"{root} (nor {root / SUBDIR}) does not hold the CIFAR-10 binary batches; "
        f"missing {', '.join(missing)}"
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images (N, 3, 32, 32) uint8 and labels (N,) int64; ValueError naming the
    file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 records"
        )
    records = raw.reshape(-1, RECORD)  # (N, 1 + C*H*W)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(LABELS):
        raise ValueError(f"{path}: label {labels.max()} is outside 0..{len(LABELS) - 1}")
    return records[:, 1:].reshape(-1, *SHAPE), labels  # (N, C, H, W): the file's own order


def read_split(folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate batch files, in the order given."""
    batches = [read_batch(folder / name) for name in files]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])
