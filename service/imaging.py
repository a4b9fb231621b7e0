"""Images in and out of the service: safe decoding, the card-driven preprocessing, PNG grids.

Only numpy and Pillow. Nothing here knows a model: :func:`to_array` follows a card's
:class:`~service.card.Preprocess` alone, in the order that class documents::

    upload -> composite alpha over `background` -> `channels` -> `resize` to `size` -> [mean/std]

where `resize` is ``frame`` (service/framing.py: `ink` polarity -> `framing` at `native_size` ->
`stretch_contrast` -> `size`), ``crop`` (cover `size` x 256/224, cut the centre) or ``stretch``.

Bad input raises only :class:`~service.errors.ClientError` subclasses (413 too large, 415 not an
allowed image format, 400 broken data), each naming the limit or the allowed values.
"""

from __future__ import annotations

import io
import logging
import math

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service import card, framing
from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

logger = logging.getLogger(__name__)

# What Pillow detects on open, not what the file name or Content-Type claim. MPO is the JPEG
# variant phones write (a JPEG with extra frames); it decodes as its first JPEG frame.
ALLOWED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP", "TIFF")
_SHOWN_FORMATS = "PNG, JPEG, BMP, GIF, WEBP, TIFF"
# First bytes of the allowed formats: such a file that Pillow cannot open is a broken file (400),
# anything else is not an image we take (415).
_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")

_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# Resize mode "crop": the picture is scaled to cover this many times the input size, then the
# centre is cut out (ImageNet's convention: 256 for a 224 input).
CROP_RATIO = 256 / 224


# --------------------------------------------------------------------------------------- decoding


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    min_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode an upload safely; the first frame of an animation, EXIF orientation applied.

    Checks, in order: the byte cap (413), the format Pillow detects (415, naming the allowed
    formats), the pixel count from the header before any pixel is decoded (413), then decodes
    (400 if broken or truncated). Pillow's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``)
    runs inside ``Image.open`` and is answered with the same 413.

    ``min_size`` (height, width) is an optional hint: a JPEG is then decoded directly at the
    smallest 1/2, 1/4 or 1/8 scale that keeps at least that size (:func:`decode_size_hint`).
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"image: upload is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data:
        raise BadRequest("image: the upload is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's guard fired before ours could
        raise PayloadTooLarge(
            f"image: {exc}; the limit is {_pixel_limit(max_pixels)} pixels"
        ) from None
    except UnidentifiedImageError:
        if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise BadRequest("image: could not decode image: the header is corrupt") from None
        raise UnsupportedMediaType(
            f"image: could not decode image: not an image in an allowed format ({_SHOWN_FORMATS})"
        ) from None
    except Exception as exc:  # a plugin tripping over a malformed header
        raise BadRequest(f"image: could not decode image: {type(exc).__name__}: {exc}") from None

    if img.format not in ALLOWED_FORMATS:
        raise UnsupportedMediaType(
            f"image: format {img.format} is not accepted; allowed formats: {_SHOWN_FORMATS}"
        )
    width, height = img.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image: {width}x{height} is {width * height} pixels; the limit is {max_pixels} pixels"
        )
    if width < 1 or height < 1:
        raise BadRequest(f"image: could not decode image: size {width}x{height}")

    if min_size is not None and img.format in ("JPEG", "MPO"):
        # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT coefficients: a phone photo then
        # costs a fraction of a full decode. Pillow keeps both sides >= the requested ones.
        img.draft(None, (max(1, min_size[1]), max(1, min_size[0])))
    try:
        img.load()  # the first frame of an animated GIF/WebP or a multi-page TIFF
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(
            f"image: {exc}; the limit is {_pixel_limit(max_pixels)} pixels"
        ) from None
    except Exception as exc:  # truncated or corrupt data: OSError, SyntaxError, ValueError...
        raise BadRequest(f"image: could not decode image: {type(exc).__name__}: {exc}") from None

    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # a malformed EXIF block does not make the picture unusable
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
    return img


def _pixel_limit(max_pixels: int) -> int:
    """The effective cap: Pillow refuses more than twice ``Image.MAX_IMAGE_PIXELS`` on its own."""
    pillow = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow is None else min(max_pixels, 2 * int(pillow))


def decode_size_hint(preprocess: card.Preprocess) -> tuple[int, int]:
    """The smallest (height, width) :func:`to_array` needs from an upload: the ``min_size`` hint."""
    pre = preprocess
    if pre.resize == "frame" and pre.framing.mode == "bbox":
        side = max(framing.BBOX_WORK_SIDE, 8 * max(framing.frame_size(pre)))
        return side, side
    h, w = framing.frame_size(pre)
    if pre.resize == "crop":
        h, w = math.ceil(h * CROP_RATIO), math.ceil(w * CROP_RATIO)
    return 2 * h, 2 * w


def preprocess_upload(
    data: bytes, preprocess: card.Preprocess, *, max_bytes: int, max_pixels: int
) -> np.ndarray:
    """:func:`decode_image` then :func:`to_array`: upload bytes to the graph's input (C, H, W)."""
    img = decode_image(
        data, max_bytes=max_bytes, max_pixels=max_pixels, min_size=decode_size_hint(preprocess)
    )
    return to_array(img, preprocess)


# ---------------------------------------------------------------------------------- preprocessing


def to_array(img: Image.Image, preprocess: card.Preprocess) -> np.ndarray:
    """Bring any picture to the card's canonical form: float32 (channels, H, W).

    Values are in [0, 1], or normalized with the card's mean/std when ``normalization_in_graph``
    is false. See :class:`~service.card.Preprocess` for the meaning of each field.
    """
    pre = preprocess
    img = _to_working_mode(img, pre)  # "L", "RGB" or "F" (one channel, [0, 1])
    if pre.resize == "frame":
        img = _cheap_downscale(img, decode_size_hint(pre))
        x = framing.frame(_as_float(img, pre.channels), pre)  # (C, H, W)
    else:
        x = _as_float(_fit(img, pre), pre.channels)  # (C, H, W) in [0, 1]
    x = np.clip(x, 0.0, 1.0, out=x)

    if not pre.normalization_in_graph:
        mean = np.asarray(pre.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(pre.std, dtype=np.float32)[:, None, None]
        x = (x - mean) / std
    return np.ascontiguousarray(x, dtype=np.float32)


def _fit(img: Image.Image, pre: card.Preprocess) -> Image.Image:
    """Resize modes ``crop`` and ``stretch``, on the 8-bit picture as torchvision does on a PIL
    image (Pillow's bilinear, antialiased when shrinking), so pixels match its transforms."""
    h, w = (int(s) for s in pre.size)
    if pre.resize == "stretch":
        return img.resize((w, h), Image.Resampling.BILINEAR)
    # Cover size x CROP_RATIO keeping the aspect ratio: the limiting side is rounded, the other
    # truncated, as torchvision's Resize(256) sizes a picture's shorter and longer sides.
    if h * img.width <= w * img.height:  # width limits
        new_w = round(w * CROP_RATIO)
        new_h = int(new_w * img.height / img.width)
    else:
        new_h = round(h * CROP_RATIO)
        new_w = int(new_h * img.width / img.height)
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = int(round((new_h - h) / 2.0)), int(round((new_w - w) / 2.0))
    return img.crop((left, top, left + w, top + h))


def _to_working_mode(img: Image.Image, pre: card.Preprocess) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB" (8 bits) or "F" (one channel scaled to [0, 1])."""
    mode = img.mode
    if mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_scale_high_depth(np.asarray(img), mode))
    try:
        if mode == "1":
            img = img.convert("L")
        elif mode in _ALPHA_MODES or img.has_transparency_data:
            if mode in ("La", "RGBa"):  # premultiplied alpha: undo it first
                img = img.convert(mode.upper())
            img = _composite(img.convert("RGBA"), pre.background)
        elif mode not in ("L", "RGB"):  # P, CMYK, YCbCr, LAB, HSV, RGBX...
            img = img.convert("RGB")
        if pre.channels == 1 and img.mode == "RGB":
            img = img.convert("L")  # ITU-R 601 luma
    except (ValueError, OSError) as exc:
        raise UnsupportedMediaType(f"image: pixel mode {mode} is not supported ({exc})") from None
    return img


def _scale_high_depth(a: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit integer and float pixels -> float32 in [0, 1], by the data's nominal range."""
    a = a.astype(np.float32)
    if mode.startswith("I;16"):
        return a / 65535.0
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        return a  # already [0, 1]
    if lo >= 0.0 and hi <= (255.0 if mode == "F" else 65535.0):
        # "I" is how older Pillow (and TIFF) deliver 16-bit samples; float images in [0, 255]
        # are 8-bit data stored as floats.
        return a / (255.0 if mode == "F" else 65535.0)
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)  # arbitrary range: min-max


def _composite(rgba: Image.Image, background: tuple[float, float, float]) -> Image.Image:
    """Flatten an RGBA picture over the card's background colour -> "RGB"."""
    color = tuple(int(round(255 * min(1.0, max(0.0, c)))) for c in background)
    out = Image.new("RGB", rgba.size, color)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _cheap_downscale(img: Image.Image, min_size: tuple[int, int]) -> Image.Image:
    """Integer box reduction (fast, in C) while both sides stay >= ``min_size`` (height, width)."""
    factor = min(img.height // max(1, min_size[0]), img.width // max(1, min_size[1]))
    return img.reduce(factor) if factor >= 2 else img


def _as_float(img: Image.Image, channels: int) -> np.ndarray:
    """An "L", "RGB" or "F" image -> float32 (channels, H, W) in [0, 1]."""
    a = np.asarray(img, dtype=np.float32)
    if img.mode != "F":
        a = a / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)
    if channels == 3 and a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    return np.ascontiguousarray(a)


# --------------------------------------------------------------------------------------- output


def images_to_png(
    arrays: np.ndarray,
    *,
    columns: int,
    scale: int = 1,
    pad: int = 1,
    pad_value: float = 0.5,
) -> bytes:
    """A grid of images as PNG bytes; same input, same bytes.

    ``arrays``: (N, C, H, W) with C 1 or 3, or (N, H, W), values in [0, 1] (clipped; NaN -> 0).
    Images fill rows of ``columns`` left to right; each is enlarged ``scale`` times by pixel
    repetition (nearest neighbour); ``pad`` pixels of ``pad_value`` grey separate and surround them.
    """
    a = np.asarray(arrays, dtype=np.float32)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] not in (1, 3) or a.shape[0] < 1:
        raise ValueError(
            f"images_to_png needs (N, C, H, W) with C in (1, 3) or (N, H, W); got {a.shape}"
        )
    if columns < 1 or scale < 1 or pad < 0:
        raise ValueError(
            f"columns and scale must be >= 1 and pad >= 0; got {columns}, {scale}, {pad}"
        )
    n, c, h, w = a.shape
    if scale > 1:
        a = a.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    grid = np.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), pad_value, dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = a[i]
    pixels = np.rint(np.clip(np.nan_to_num(grid, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    img = Image.fromarray(pixels[0] if c == 1 else pixels.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
