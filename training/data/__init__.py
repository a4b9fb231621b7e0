"""Data sets for training. Images: ``load_images(name, ...)`` -> :class:`ImageData`, and
``augment``; text for language models: ``load_text`` -> :class:`TextData`; date pairs for seq2seq:
``load_dates`` -> :class:`DatesData`."""

from training.data.augment import augment
from training.data.dates import DatesData, load_dates
from training.data.images import DATASETS, ImageData, load_images
from training.data.text import TextData, load_text

__all__ = [
    "DATASETS",
    "ImageData",
    "augment",
    "load_images",
    "DatesData",
    "load_dates",
    "TextData",
    "load_text",
]
