"""Data sets for training. Images: ``load_images(name, ...)`` -> :class:`ImageData`, and ``augment``."""

from training.data.augment import augment
from training.data.images import DATASETS, ImageData, load_images

__all__ = ["DATASETS", "ImageData", "augment", "load_images"]
