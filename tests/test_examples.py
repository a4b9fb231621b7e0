"""The committed example inputs are what examples/make_examples.py makes (code and files cannot
drift)."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _maker():
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_committed_examples_are_what_the_code_makes(tmp_path):
    made = {p.name: p.read_bytes() for p in _maker().make(tmp_path)}
    assert {"digit.png", "dates.txt"} <= set(
        made
    )  # fashion.png needs Debian's dataset-fashion-mnist
    for name, data in made.items():
        committed = (EXAMPLES / name).read_bytes()
        if name.endswith(".png"):
            np.testing.assert_array_equal(_pixels(data), _pixels(committed), err_msg=name)
        else:
            assert data == committed, name
    digit = _pixels(made["digit.png"])
    assert (
        digit.shape == (64, 64) and digit.min() < 64 and np.median(digit) > 200
    )  # dark ink on white
