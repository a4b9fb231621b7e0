"""Make the example inputs the README's commands use: ``python examples/make_examples.py [FOLDER]``.

Every file comes from data this repository already reads, nothing is downloaded:
- ``digit.png``: a handwritten 3 from scikit-learn's digits test split (seed 0, so never trained
  on), drawn as dark ink on white paper at 64x64, as a person would draw it.
- ``fashion.png``: the first ankle boot of Fashion-MNIST's test split, at 112x112, as the data set
  stores it (a light object on black). Needs Debian's ``dataset-fashion-mnist``; skipped without it.
- ``dates.txt``: one date per line, one line per format the seq2seq model was trained on.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from training.data import dates, digits, idx
from training.data.images import find_root

HERE = Path(__file__).resolve().parent
DIGIT, DIGIT_SCALE = 3, 8
ANKLE_BOOT, FASHION_SCALE = 9, 4
EXAMPLE_DATE = dt.date(2021, 3, 3)


def png(pixels: np.ndarray) -> bytes:
    """(H, W) uint8 -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def digit_png() -> bytes:
    images, labels = digits.read_splits(seed=0)["test"]
    ink = images[int(np.flatnonzero(labels == DIGIT)[0]), 0].astype(np.float32) / digits.MAX_VALUE
    paper = np.rint(255 * (1 - ink)).astype(np.uint8)  # (8, 8): dark ink on white
    return png(np.kron(paper, np.ones((DIGIT_SCALE, DIGIT_SCALE), np.uint8)))


def fashion_png() -> bytes | None:
    try:
        images, labels = idx.read_split(find_root("fashion-mnist", None), "test")
    except FileNotFoundError:
        return None
    item = images[int(np.flatnonzero(labels == ANKLE_BOOT)[0]), 0]  # (28, 28)
    return png(np.kron(item, np.ones((FASHION_SCALE, FASHION_SCALE), np.uint8)))


def dates_txt() -> str:
    return "".join(dates.format_date(EXAMPLE_DATE, fmt) + "\n" for fmt in dates.FORMATS)


def make(folder: Path) -> list[Path]:
    """Write the examples into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "digit.png": digit_png(),
        "fashion.png": fashion_png(),
        "dates.txt": dates_txt().encode(),
    }
    written = []
    for name, data in files.items():
        if data is None:
            print(f"{name}: skipped (its data set is not on this machine)", file=sys.stderr)
            continue
        (folder / name).write_bytes(data)
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in make(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
