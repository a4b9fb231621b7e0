"""The ``frame`` resize mode of a card's preprocessing: the zoo's own image classifiers.

A picture of one object (a digit, a garment) is brought to the data set's canonical form: the
object's ``ink`` polarity, its bounding box fitted into the frame as ``framing`` says (or the whole
picture resized to the frame), the contrast stretched if the card asks. Only numpy and Pillow;
called by :func:`service.imaging.to_array`, which has already decoded and converted the picture.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from service import card

# Cheap downscaling before any float work: keep at least this many pixels on the shorter side
# when looking for an object (framing "bbox"), and twice the target size for framing "none".
BBOX_WORK_SIDE = 384
# Object detection (framing "bbox"): below this contrast (on [0, 1]) the picture is blank.
_MIN_CONTRAST = 0.05
# A pixel belongs to the object when its smoothed difference from the background exceeds this
# fraction of the largest smoothed difference: high enough to drop JPEG ringing, paper texture
# and sensor noise, low enough to keep blurred stroke edges.
_OBJECT_THRESHOLD = 0.25


def frame(x: np.ndarray, pre: card.Preprocess) -> np.ndarray:
    """``x`` (C, h, w) in [0, 1] -> (C, *pre.size): polarity, framing, contrast, final resize."""
    bg = _border_level(x)  # (C,) background level per channel
    if pre.ink is not None and _ink_polarity(x, bg) != pre.ink:
        x = 1.0 - x  # bring the object to the card's polarity
        bg = 1.0 - bg

    native = frame_size(pre)
    framed = _frame_bbox(x, bg, pre, native) if pre.framing.mode == "bbox" else None
    if framed is None:  # framing "none", or nothing stands out of the background
        framed = resize(x, native, Image.Resampling.BILINEAR)  # antialiased when shrinking
    x = framed

    if pre.stretch_contrast:
        x = _stretch(x, float(bg.mean()), pre.ink)
    if x.shape[1:] != tuple(pre.size):
        # Training upsamples native-resolution data with bilinear, align_corners=False. Pillow's
        # bilinear samples the same pixel centres ((i + 0.5) * scale - 0.5) when enlarging: checked
        # against PyTorch's interpolate (8->32, 28->32, 32->224: max diff 3e-6).
        x = resize(x, pre.size, Image.Resampling.BILINEAR)
    return x


def frame_size(pre: card.Preprocess) -> tuple[int, int]:
    """(height, width) at which the object is framed: the dataset's native resolution."""
    size = pre.native_size if pre.native_size is not None else pre.size
    return int(size[0]), int(size[1])


def _border_level(x: np.ndarray) -> np.ndarray:
    """The background level per channel: the median of a thin ring along the image's border.

    The border of a photo of one object is mostly background, even when the object touches it.
    """
    _, h, w = x.shape
    k = max(1, round(0.02 * min(h, w)))
    ring = np.concatenate(
        [
            x[:, :k, :].reshape(x.shape[0], -1),
            x[:, -k:, :].reshape(x.shape[0], -1),
            x[:, :, :k].reshape(x.shape[0], -1),
            x[:, :, -k:].reshape(x.shape[0], -1),
        ],
        axis=1,
    )
    return np.median(ring, axis=1).astype(np.float32)


def _ink_polarity(x: np.ndarray, bg: np.ndarray) -> str:
    """Whether the object is "light" (lighter than the background) or "dark".

    The object is the pixels that differ most from the background level; their mean difference's
    sign is the polarity. A blank picture counts as dark ink on its background's side of 0.5.
    """
    dev = x.mean(axis=0) - float(bg.mean())
    peak = float(np.abs(dev).max()) if dev.size else 0.0
    if peak < _MIN_CONTRAST:
        return "dark" if bg.mean() >= 0.5 else "light"
    strong = dev[np.abs(dev) >= 0.5 * peak]
    return "light" if float(strong.sum()) > 0 else "dark"


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 mean filter (edges replicated): isolated noisy pixels drop to a ninth."""
    p = _pad_edge(a)
    h, w = a.shape
    return sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


# np.pad gives the same arrays as the two helpers below, at ~30 us of Python per call: per request
# that was ~10% of the preprocessing of a small upload, all of it holding the GIL of a front worker.
def _pad_edge(a: np.ndarray) -> np.ndarray:
    """``np.pad(a, 1, mode="edge")`` for a 2-D array."""
    h, w = a.shape
    p = np.empty((h + 2, w + 2), dtype=a.dtype)
    p[1:-1, 1:-1] = a
    p[0, 1:-1], p[-1, 1:-1] = a[0], a[-1]
    p[:, 0], p[:, -1] = p[:, 1], p[:, -2]
    return p


def _pad_constant(
    x: np.ndarray, top: int, bottom: int, left: int, right: int, values: np.ndarray
) -> np.ndarray:
    """Each channel of (C, H, W) ``x`` padded with its own constant (``values[c]``)."""
    c, h, w = x.shape
    out = np.empty((c, h + top + bottom, w + left + right), dtype=x.dtype)
    out[...] = np.asarray(values, dtype=x.dtype)[:, None, None]
    out[:, top : top + h, left : left + w] = x
    return out


def _frame_bbox(
    x: np.ndarray, bg: np.ndarray, pre: card.Preprocess, frame: tuple[int, int]
) -> np.ndarray | None:
    """Crop the object, scale its box to ``fill`` of the frame, centre it; None if no object."""
    lum, level = x.mean(axis=0), float(bg.mean())
    if pre.ink == "light":
        dev = np.maximum(lum - level, 0.0)
    elif pre.ink == "dark":
        dev = np.maximum(level - lum, 0.0)
    else:
        dev = np.abs(lum - level)
    smooth = _box3(dev)
    peak = float(smooth.max())
    if peak < _MIN_CONTRAST:
        return None
    mask = smooth > _OBJECT_THRESHOLD * peak
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1 = float(rows[0]), float(rows[-1] + 1)  # box edges in pixel units
    x0, x1 = float(cols[0]), float(cols[-1] + 1)

    if pre.framing.center == "mass":
        w = np.where(mask, dev, 0.0)[int(y0) : int(y1), int(x0) : int(x1)]
        total = float(w.sum())
        ys = np.arange(int(y0), int(y1), dtype=np.float64) + 0.5  # pixel centres
        xs = np.arange(int(x0), int(x1), dtype=np.float64) + 0.5
        cy = float(w.sum(axis=1) @ ys) / total
        cx = float(w.sum(axis=0) @ xs) / total
    else:
        cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0

    fh, fw = frame
    scale = pre.framing.fill * min(fh / (y1 - y0), fw / (x1 - x0))  # frame pixels per source pixel
    half_h, half_w = fh / (2.0 * scale), fw / (2.0 * scale)
    window = [cx - half_w, cy - half_h, cx + half_w, cy + half_h]  # source coords of the frame

    # The frame may reach past the picture: pad with the background level so that it lies inside.
    _, h, w_ = x.shape
    left = max(0, math.ceil(-window[0]) + 1)
    top = max(0, math.ceil(-window[1]) + 1)
    right = max(0, math.ceil(window[2] - w_) + 1)
    bottom = max(0, math.ceil(window[3] - h) + 1)
    if left or top or right or bottom:
        x = _pad_constant(x, top, bottom, left, right, bg)
    box = (window[0] + left, window[1] + top, window[2] + left, window[3] + top)
    # Shrinking averages areas, as low-resolution datasets were made (sklearn's 8x8 digits count
    # the ink pixels of 4x4 blocks); enlarging a small upload interpolates instead.
    resample = Image.Resampling.BOX if scale < 1.0 else Image.Resampling.BILINEAR
    return resize(x, frame, resample, box=box)


def _stretch(x: np.ndarray, level: float, ink: str | None) -> np.ndarray:
    """Map the background to 0 and the strongest ink to 1 (dark ink: ink 0, background 1)."""
    if ink == "light":
        lo, hi = level, float(x.max())
    elif ink == "dark":
        lo, hi = float(x.min()), level
    else:
        lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-6:
        return x
    return (x - lo) / (hi - lo)


def resize(
    x: np.ndarray,
    size: tuple[int, int],
    resample: Image.Resampling,
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Resize float32 (C, H, W) to ``size`` (height, width), channel by channel in Pillow's "F"."""
    h, w = int(size[0]), int(size[1])
    out = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(c, dtype=np.float32)).resize(
                (w, h), resample, box=box
            ),
            dtype=np.float32,
        )
        for c in x
    ]
    return np.stack(out)
