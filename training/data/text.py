"""Character-level text for language models: any UTF-8 file, by default CPython's own help topics.

``load_text()`` reads ``pydoc_data.topics`` (the text behind ``help("topics")``, ~465 KB of English
about Python) with its entries joined in sorted key order, so the result is the same on every
machine with the same Python. ``load_text(path)`` reads any UTF-8 file instead. Nothing downloads.

The split is by position: the last ``val_fraction`` of the characters is the validation text (a
held-out *tail*, not a random sample, so no validation sentence leaks into training). The
vocabulary is every distinct character of the training text, sorted by code point, then ``<unk>``;
a validation or served character the training text never had maps to ``<unk>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_SOURCE = "pydoc_data.topics"
UNK = "<unk>"
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class TextData:
    name: str  # "text"
    source: str  # "pydoc_data.topics" or the file's path
    train: str
    val: str
    tokens: list[str]  # id -> token (single characters, then "<unk>")

    @property
    def unk(self) -> int:
        return len(self.tokens) - 1

    def encode(self, text: str) -> torch.Tensor:
        """int64 (len(text),) ids; unseen characters become ``<unk>``."""
        index = {t: i for i, t in enumerate(self.tokens)}
        return torch.tensor([index.get(ch, self.unk) for ch in text], dtype=torch.int64)

    def decode(self, ids) -> str:
        return "".join(self.tokens[int(i)] for i in ids)

    def splits(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val)}


def read_default() -> str:
    from pydoc_data.topics import topics  # CPython's standard library: no download

    return "".join(topics[key] for key in sorted(topics))


def load_text(path: str | Path | None = None, *, val_fraction: float = VAL_FRACTION) -> TextData:
    """The text of ``path`` (UTF-8; default: CPython's help topics), split into train and val
    tail."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if path is None:
        text, source = read_default(), DEFAULT_SOURCE
    else:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"text: {path} is not a file (expected any UTF-8 text file)")
        text, source = path.read_text(encoding="utf-8"), str(path)
    n_val = int(len(text) * val_fraction)
    if n_val < 2 or len(text) - n_val < 2:
        raise ValueError(f"text: {len(text)} characters are too few to split into train and val")
    train, val = text[:-n_val], text[-n_val:]
    tokens = sorted(set(train)) + [UNK]
    return TextData(name="text", source=source, train=train, val=val, tokens=tokens)
