"""Digits as a person would photograph or scan them: PNG bytes with the true digit.

Dark ink on light paper, a random canvas (60-400 px a side), the digit 30-80 % of the canvas's
shorter side, off centre, rotated up to 15 degrees, sometimes blurred or noisy, in one of the fonts
this machine has. Deterministic for a given seed and set of installed fonts. Fonts are every
TrueType/OpenType file under the usual font folders; with none, Pillow's built-in scalable font
(``ImageFont.load_default(size=...)``, Pillow >= 10.1) is used.
"""

from __future__ import annotations

import functools
import io
import os
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
# Font families whose digits are not ordinary numerals (symbols, maths alphabets).
_SKIP = ("math", "symbol", "dingbat", "emoji", "wingding")


@functools.cache
def available_fonts() -> tuple[str, ...]:
    """Paths of the usable TrueType/OpenType fonts, sorted (stable across runs)."""
    found: set[str] = set()
    for root in FONT_DIRS:
        base = Path(os.path.expanduser(root))
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            if path.suffix.lower() in (".ttf", ".otf") and not any(
                s in path.name.lower() for s in _SKIP
            ):
                try:
                    ImageFont.truetype(str(path), 20).getbbox("0123456789")
                except OSError:
                    continue
                found.add(str(path))
    return tuple(sorted(found))


def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size)


def _glyph_mask(digit: int, font_path: str | None, height: int, angle: float) -> Image.Image:
    """An "L" mask (255 = ink) of the digit about ``height`` px tall, rotated by ``angle``."""
    text = str(digit)
    probe = 100
    x0, y0, x1, y1 = _font(font_path, probe).getbbox(text)
    size = max(4, round(probe * height / max(1, y1 - y0)))  # font size giving the wanted ink height
    font = _font(font_path, size)
    x0, y0, x1, y1 = font.getbbox(text)
    margin = 2
    mask = Image.new("L", (x1 - x0 + 2 * margin, y1 - y0 + 2 * margin), 0)
    ImageDraw.Draw(mask).text((margin - x0, margin - y0), text, fill=255, font=font)
    return mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)


def render_digit(digit: int, rng: random.Random, fonts: tuple[str, ...] | None = None) -> bytes:
    """One digit rendered with the randomness drawn from ``rng``; PNG bytes."""
    fonts = available_fonts() if fonts is None else fonts
    width, height = rng.randint(60, 400), rng.randint(60, 400)
    font_path = rng.choice(fonts) if fonts else None
    glyph_h = max(8, round(rng.uniform(0.3, 0.8) * min(width, height)))
    mask = _glyph_mask(digit, font_path, glyph_h, rng.uniform(-15.0, 15.0))
    if mask.width > width or mask.height > height:  # a wide rotated glyph on a narrow canvas
        f = min(width / mask.width, height / mask.height)
        mask = mask.resize(
            (max(1, int(mask.width * f)), max(1, int(mask.height * f))), Image.Resampling.BILINEAR
        )

    # Off centre: anywhere the whole digit still fits.
    left = rng.randint(0, width - mask.width)
    top = rng.randint(0, height - mask.height)
    full = Image.new("L", (width, height), 0)
    full.paste(mask, (left, top))

    paper = rng.uniform(0.75, 1.0)
    ink = rng.uniform(0.0, 0.3)
    alpha = np.asarray(full, dtype=np.float32) / 255.0
    pixels = paper * (1.0 - alpha) + ink * alpha
    if rng.random() < 0.3:  # sensor / scanner noise
        noise = np.random.default_rng(rng.getrandbits(32)).normal(
            0.0, rng.uniform(0.01, 0.04), pixels.shape
        )
        pixels = pixels + noise
    img = Image.fromarray(np.rint(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.02 * glyph_h + 0.5)))
    if rng.random() < 0.5:  # a colour photo of grey paper, slightly tinted
        tint = [rng.uniform(0.9, 1.0) for _ in range(3)]
        rgb = np.asarray(img, dtype=np.float32)[..., None] * np.asarray(tint, dtype=np.float32)
        img = Image.fromarray(np.rint(rgb).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def render_digits(n: int, seed: int = 0) -> list[tuple[bytes, int]]:
    """``n`` rendered digits as (PNG bytes, true digit); digits cycle 0-9, so any ten hold each."""
    rng = random.Random(seed)
    fonts = available_fonts()
    return [(render_digit(i % 10, rng, fonts), i % 10) for i in range(n)]
