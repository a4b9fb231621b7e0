"""The card's resize modes and output kinds, and the schema's backward compatibility: plain
functions, no server (the imported models through HTTP: tests/test_importing.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service import imaging
from service.card import Card, Preprocess


def pre(**fields) -> Preprocess:
    base = {"size": (224, 224), "channels": 3, "mean": [0.0] * 3, "std": [1.0] * 3}
    return Preprocess(**{**base, **fields})


def picture(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    a = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(a if channels == 3 else a[..., 0], mode)


def torchvision_style_crop(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Resize(256) + CenterCrop(224) scaled to ``size`` = (h, w), written from torchvision's rules
    (the side that limits is set, the other truncated; the crop offsets rounded)."""
    h, w = size
    W, H = img.size
    if h * W <= w * H:  # the width limits: it becomes w * 256 / 224
        nw = round(w * 256 / 224)
        nh = int(nw * H / W)
    else:
        nh = round(h * 256 / 224)
        nw = int(nh * W / H)
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
    a = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [(800, 600, (224, 224)), (480, 640, (224, 224)), (300, 300, (224, 224)), (640, 480, (96, 128)),
     (500, 900, (128, 96)), (150, 100, (224, 224))],
)  # fmt: skip
def test_crop_is_torchvisions_resize_and_centre_crop(width, height, size):
    img = picture(width, height)
    got = imaging.to_array(img, pre(size=size, resize="crop"))
    np.testing.assert_array_equal(got, torchvision_style_crop(img, size))
    # the shorter side of a square input goes to 256 for 224: torchvision's ImageNet transform
    if size == (224, 224):
        assert round(224 * imaging.CROP_RATIO) == 256


def test_stretch_and_greyscale():
    img = picture(640, 480)
    got = imaging.to_array(img, pre(size=(50, 70), resize="stretch"))
    want = np.asarray(img.resize((70, 50), Image.Resampling.BILINEAR), np.float32) / 255.0
    np.testing.assert_array_equal(got, want.transpose(2, 0, 1))
    grey = pre(size=(64, 64), channels=1, mean=[0.0], std=[1.0], resize="crop")
    got = imaging.to_array(img, grey)
    np.testing.assert_array_equal(got, torchvision_style_crop(img.convert("L"), (64, 64)))
    # a greyscale upload for an RGB model: three equal channels
    got = imaging.to_array(picture(300, 200, "L"), pre(size=(32, 32), resize="stretch"))
    assert got.shape == (3, 32, 32) and np.array_equal(got[0], got[2])


def test_crop_from_upload_bytes_and_normalization_outside_the_graph():
    img = picture(1000, 750, seed=3)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    recipe = pre(resize="crop", mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    got = imaging.preprocess_upload(buf.getvalue(), recipe, max_bytes=10**8, max_pixels=10**8)
    np.testing.assert_array_equal(got, torchvision_style_crop(img, (224, 224)))  # in the graph
    outside = recipe.model_copy(update={"normalization_in_graph": False})
    got = imaging.to_array(img, outside)
    mean = np.array([0.5, 0.4, 0.3], np.float32)[:, None, None]
    std = np.array([0.2, 0.25, 0.3], np.float32)[:, None, None]
    np.testing.assert_allclose(got, (torchvision_style_crop(img, (224, 224)) - mean) / std)


def test_resize_modes_refuse_frame_fields():
    with pytest.raises(ValueError, match="ink, framing: only for resize 'frame'"):
        pre(resize="crop", ink="light", framing={"mode": "bbox"})
    assert pre().resize == "frame"  # the default: every card before imports


def _card(**changes) -> dict:
    base = {
        "schema": "dlzoo.card/1",
        "name": "m",
        "version": 1,
        "architecture": "x",
        "task": "classify",
        "created": "2026-01-01T00:00:00+00:00",
        "dataset": {"name": "d", "source": "s", "splits": {}},
        "training": {},
        "metrics": {},
        "files": {"model": {"path": "model.onnx", "sha256": "0" * 64}},
        "io": {
            "model": {
                "inputs": [{"name": "pixels", "dtype": "float32", "shape": ["batch", 1, 8, 8]}],
                "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}],
            }
        },
        "parity": {"model": {"max_abs_diff": 0.0, "tolerance": 1e-4, "batch_sizes": [1]}},
        "preprocess": {"size": [8, 8], "channels": 1, "mean": [0.1], "std": [0.3]},
        "labels": ["a", "b"],
    }
    return {**base, **changes}


def test_cards_without_the_new_fields_still_load():
    card = Card.model_validate(_card())  # a card as every export before imports wrote it
    assert card.preprocess.resize == "frame" and card.output is None
    assert card.output_kind == "logits" and card.origin is None
    again = Card.model_validate_json(card.to_json())
    assert again == card


def test_tensor_and_output_rules():
    tensor = _card(task="tensor", preprocess=None, labels=None)
    assert Card.model_validate(tensor).task == "tensor"
    with pytest.raises(ValueError, match="no preprocess and no labels"):
        Card.model_validate({**tensor, "labels": ["a", "b"]})
    with pytest.raises(ValueError, match="classifiers only"):
        Card.model_validate({**tensor, "output": "logits"})
    assert Card.model_validate(_card(output="probabilities")).output_kind == "probabilities"
