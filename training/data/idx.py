"""IDX files: the format of LeCun's MNIST distribution, also used by Fashion-MNIST.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values, big-endian, row-major. Distributions ship them
gzip-compressed or not; compression is detected from the content, not the file name.

Images are ``idx3`` (magic 2051: unsigned bytes, 3 dims N x H x W), labels ``idx1`` (magic 2049:
unsigned bytes, 1 dim N). Every problem with a file raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

# type code -> big-endian numpy dtype (the IDX spec's six types)
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dims
LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dim

# split -> (images stem, labels stem); each may carry a ".gz" suffix on disk
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Parse one IDX file (plain or gzip) into an array of its declared type and shape.

    ``magic``, if given, is the magic number the file must have (``IMAGES_MAGIC``,
    ``LABELS_MAGIC``).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip's own magic
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: damaged gzip data ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise ValueError(f"{path}: not an IDX file (magic number 0x{raw[:4].hex() or 'empty'})")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise ValueError(f"{path}: magic number {found} where {magic} was expected")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions declared)"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_TYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: {len(raw)} bytes, but its header ({dims} x {dtype.name}) needs {expected}"
        )
    values = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return values.astype(dtype.newbyteorder("="), copy=False)


def find_file(root: Path, stem: str) -> Path:
    """``root/stem`` or ``root/stem.gz``; FileNotFoundError saying where it looked."""
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"neither {root / stem} nor {root / stem}.gz exists")


def read_split(root: Path, split: str, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One split's images (N, 1, H, W) uint8 and labels (N,) int64, checked against each other."""
    images_path, labels_path = (find_file(root, stem) for stem in FILES[split])
    images = read_idx(images_path, IMAGES_MAGIC)  # (N, H, W)
    labels = read_idx(labels_path, LABELS_MAGIC)  # (N,)
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"{labels_path}: label {labels.max()} is outside 0..{num_classes - 1}")
    return images[:, None], labels.astype(np.int64)  # (N, 1, H, W), (N,)
