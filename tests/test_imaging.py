"""service.imaging: safe decoding (every error path), every pixel mode, the card-driven
preprocessing (polarity, framing, contrast, 16-bit depth) and PNG grids."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile, ImageFont, ImageOps

from service import imaging
from service.card import Framing, Preprocess
from service.errors import BadRequest, ClientError, PayloadTooLarge, UnsupportedMediaType

try:  # tests/ is a plain folder today; keep working if it becomes a package
    from tests.digit_images import render_digits
except ImportError:
    from digit_images import render_digits

MAX_BYTES = 10_000_000
MAX_PIXELS = 40_000_000

DIGITS = (
    Preprocess(  # like sklearn's digits: 8x8 blocks of counted ink, light on dark, served at 32
        size=(32, 32),
        channels=1,
        native_size=(8, 8),
        ink="light",
        framing=Framing(mode="bbox", fill=1.0, center="bbox"),
        stretch_contrast=True,
        mean=[0.5],
        std=[0.5],
    )
)
MNIST = Preprocess(  # a 20x20 box in a 28x28 frame, placed by centre of mass
    size=(28, 28),
    channels=1,
    native_size=(28, 28),
    ink="light",
    framing=Framing(mode="bbox", fill=20 / 28, center="mass"),
    stretch_contrast=True,
    mean=[0.1307],
    std=[0.3081],
)
CIFAR = Preprocess(
    size=(32, 32),
    channels=3,
    framing=Framing(mode="none"),
    mean=[0.49, 0.48, 0.45],
    std=[0.25, 0.24, 0.26],
)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def decode(data: bytes, **kw) -> Image.Image:
    return imaging.decode_image(
        data, max_bytes=kw.pop("max_bytes", MAX_BYTES), max_pixels=kw.pop("max_pixels", MAX_PIXELS)
    )


def photo(size=(64, 48), seed=0) -> Image.Image:
    """A smooth colour picture with some texture."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 5.0)], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0, 1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def digit_on_paper(
    canvas=(300, 300), at=(20, 20), height=40, digit="7", ink=20, paper=235
) -> Image.Image:
    img = Image.new("L", canvas, paper)
    font = ImageFont.load_default(size=height)
    x0, y0, x1, y1 = font.getbbox(digit)
    scale = height / (y1 - y0)
    font = ImageFont.load_default(size=max(4, round(height * scale)))
    x0, y0, _, _ = font.getbbox(digit)
    ImageDraw.Draw(img).text((at[0] - x0, at[1] - y0), digit, fill=ink, font=font)
    return img


def png_header_only(width: int, height: int) -> bytes:
    """A real, valid 1-bit PNG of width x height: all zeros compress to almost nothing."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def assert_canonical(x: np.ndarray, pre: Preprocess) -> None:
    assert x.dtype == np.float32
    assert x.shape == (pre.channels, *pre.size)
    assert np.isfinite(x).all()
    assert x.min() >= 0.0 and x.max() <= 1.0


# -------------------------------------------------------------------------------------- errors


def test_over_byte_cap_is_413_naming_the_limit():
    data = encode(photo(), "PNG")
    with pytest.raises(PayloadTooLarge) as e:
        decode(data, max_bytes=len(data) - 1)
    assert e.value.status == 413
    assert str(len(data) - 1) in str(e.value)


def test_over_pixel_cap_is_413_from_the_header_without_decoding(monkeypatch):
    data = png_header_only(8000, 8000)  # 64 Mpx; a few kB
    assert len(data) < 100_000

    def refuse(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    with pytest.raises(PayloadTooLarge) as e:
        decode(data)
    assert e.value.status == 413
    assert "8000x8000" in str(e.value) and str(MAX_PIXELS) in str(e.value)


def test_decompression_bomb_is_413():
    t = time.perf_counter()
    data = png_header_only(20000, 20000)  # 400 Mpx: Pillow's own guard fires inside Image.open
    with pytest.raises(PayloadTooLarge) as e:
        decode(data)
    assert e.value.status == 413
    assert str(MAX_PIXELS) in str(e.value)
    assert time.perf_counter() - t < 5


@pytest.mark.parametrize(
    "data", [b"hello, this is not an image", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj"]
)
def test_not_an_image_is_4xx_could_not_decode(data):
    with pytest.raises(ClientError) as e:
        decode(data)
    assert 400 <= e.value.status < 500
    assert "could not decode image" in str(e.value)
    assert "PNG" in str(e.value)  # names what is accepted


def test_empty_upload_is_400():
    with pytest.raises(BadRequest):
        decode(b"")


@pytest.mark.parametrize(
    ("fmt", "mode", "detected"),
    [
        ("PPM", "RGB", "PPM"),
        ("ICO", "RGBA", "ICO"),
        ("TGA", "RGB", "TGA"),
        ("PCX", "RGB", "PCX"),
        ("EPS", "RGB", "EPS"),
    ],
)
def test_disallowed_format_is_415_naming_it(fmt, mode, detected):
    data = encode(photo().convert(mode), fmt)
    with pytest.raises(UnsupportedMediaType) as e:
        decode(data)
    assert e.value.status == 415
    assert detected in str(e.value) and "PNG, JPEG" in str(e.value)


def test_truncated_png_is_400():
    data = encode(photo((128, 128)), "PNG")
    with pytest.raises(BadRequest) as e:
        decode(data[: len(data) // 2])
    assert e.value.status == 400
    assert "could not decode image" in str(e.value)


def test_corrupt_png_header_is_400():
    with pytest.raises(BadRequest):
        decode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)


def test_truncated_jpeg_is_400():
    data = encode(photo((256, 256)), "JPEG")
    with pytest.raises(BadRequest):
        decode(data[: len(data) // 3])


# ----------------------------------------------------------------------------------- pixel modes


def _mode_images() -> dict[str, bytes]:
    rgb = photo()
    p = rgb.quantize(16)
    p_transparent = p.copy()
    p_transparent.info["transparency"] = 0
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    gray16 = Image.fromarray(
        (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    )
    i32 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.int32) * 200)
    f32 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.float32) / 255.0)
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [rgb.quantize(8), ImageOps.invert(rgb).quantize(8)]
    return {
        "1": encode(rgb.convert("1"), "PNG"),
        "L": encode(rgb.convert("L"), "PNG"),
        "LA": encode(rgba.convert("LA"), "PNG"),
        "P": encode(p, "PNG"),
        "P+transparency": encode(p_transparent, "PNG", transparency=0),
        "GIF+transparency": encode(p_transparent, "GIF", transparency=0),
        "animated GIF": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "RGB JPEG": encode(rgb, "JPEG"),
        "RGBA PNG": encode(rgba, "PNG"),
        "RGBA WEBP": encode(rgba, "WEBP"),
        "CMYK JPEG": encode(rgb.convert("CMYK"), "JPEG"),
        "I;16 PNG": encode(gray16, "PNG"),
        "I TIFF": encode(i32, "TIFF"),
        "F TIFF": encode(f32, "TIFF"),
        "BMP": encode(rgb, "BMP"),
        "EXIF-rotated JPEG": encode(rgb, "JPEG", exif=exif.tobytes()),
    }


MODE_IMAGES = _mode_images()


@pytest.mark.parametrize("name", list(MODE_IMAGES))
@pytest.mark.parametrize("pre", [DIGITS, CIFAR], ids=["digits", "cifar"])
def test_every_mode_gives_the_canonical_array(name, pre):
    x = imaging.to_array(decode(MODE_IMAGES[name]), pre)
    assert_canonical(x, pre)


def test_decoded_modes_are_the_ones_meant():
    modes = {name: decode(data).mode for name, data in MODE_IMAGES.items()}
    assert modes["1"] == "1" and modes["LA"] == "LA" and modes["P"] == "P"
    assert modes["CMYK JPEG"] == "CMYK" and modes["I;16 PNG"] in ("I;16", "I")
    assert modes["I TIFF"] == "I" and modes["F TIFF"] == "F"


def test_exif_orientation_is_applied():
    img = Image.new("L", (40, 20), 255)
    img.paste(0, (0, 0, 10, 20))  # a dark band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: show it turned 90 degrees clockwise
    out = decode(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    a = np.asarray(out.convert("L"), dtype=np.float32)
    assert a[:10].mean() < 60 and a[10:].mean() > 200  # the left band is now on top


def test_animated_gif_gives_the_first_frame():
    black, white = Image.new("L", (16, 16), 0), Image.new("L", (16, 16), 255)
    data = encode(black, "GIF", save_all=True, append_images=[white], duration=100)
    x = imaging.to_array(decode(data), CIFAR)
    assert x.max() < 0.05


def test_alpha_is_composited_over_the_card_background():
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # black, fully transparent
    data = encode(clear, "PNG")
    on_white = imaging.to_array(decode(data), CIFAR)  # background defaults to white
    assert np.allclose(on_white, 1.0)
    on_red = imaging.to_array(
        decode(data), CIFAR.model_copy(update={"background": (1.0, 0.0, 0.0)})
    )
    assert np.allclose(on_red[0], 1.0) and np.allclose(on_red[1:], 0.0)


def test_16_bit_values_are_scaled_not_clipped():
    level = 30000
    img = Image.fromarray(np.full((24, 24), level, dtype=np.uint16))
    x = imaging.to_array(decode(encode(img, "PNG")), CIFAR)
    assert np.allclose(x, level / 65535, atol=2e-3)
    ramp = Image.fromarray(
        (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    )
    y = imaging.to_array(
        decode(encode(ramp, "PNG")),
        CIFAR.model_copy(update={"channels": 1, "mean": [0.0], "std": [1.0]}),
    )
    assert y.max() > 0.9 and y.min() < 0.1
    assert len(np.unique(np.round(y * 1000))) > 200  # a ramp, not a saturated block


def test_normalization_applied_only_when_not_in_graph():
    img = decode(encode(photo(), "PNG"))
    plain = imaging.to_array(img, CIFAR)
    normed = imaging.to_array(img, CIFAR.model_copy(update={"normalization_in_graph": False}))
    mean = np.asarray(CIFAR.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(CIFAR.std, dtype=np.float32)[:, None, None]
    assert np.allclose(normed, (plain - mean) / std, atol=1e-5)


def test_framing_none_resizes_the_whole_picture():
    img = Image.new("RGB", (100, 50), (255, 0, 0))
    img.paste((0, 0, 255), (50, 0, 100, 50))  # left red, right blue
    x = imaging.to_array(img, CIFAR)
    assert x.shape == (3, 32, 32)
    assert x[0, :, :14].min() > 0.95 and x[2, :, :14].max() < 0.05
    assert x[2, :, 18:].min() > 0.95 and x[0, :, 18:].max() < 0.05


def bilinear_align_corners_false(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """What training's F.interpolate(mode="bilinear", align_corners=False) computes, in numpy."""

    def taps(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, wy = taps(a.shape[0], out_h)
    x0, x1, wx = taps(a.shape[1], out_w)
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bottom = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def test_final_resize_matches_trainings_bilinear():
    native = np.random.default_rng(1).random((8, 8)).astype(np.float32)
    pre = Preprocess(size=(32, 32), channels=1, native_size=(8, 8), mean=[0.0], std=[1.0])
    x = imaging.to_array(Image.fromarray(native), pre)[0]
    assert np.abs(x - bilinear_align_corners_false(native, 32, 32)).max() < 1e-5


# --------------------------------------------------------------------------- polarity and framing


def test_dark_and_light_ink_give_the_same_array():
    for data, _ in render_digits(8, seed=3):
        img = decode(data)
        dark = imaging.to_array(img, DIGITS)
        light = imaging.to_array(ImageOps.invert(img.convert("RGB")), DIGITS)
        assert np.abs(dark - light).mean() < 0.02
        assert np.abs(dark - light).max() < 0.15


def test_output_has_the_card_polarity():
    # at the native size, before the bilinear enlargement; with a margin so the border is background
    native = DIGITS.model_copy(update={"size": (8, 8), "framing": Framing(mode="bbox", fill=0.75)})
    for data, _ in render_digits(6, seed=5):
        x = imaging.to_array(decode(data), native)
        border = np.concatenate([x[0, 0], x[0, -1], x[0, :, 0], x[0, :, -1]])
        assert np.median(border) < 0.05  # dark background
        assert x.max() > 0.99  # stretched: the strongest ink is 1


def test_small_off_centre_digit_is_centred_and_fills_the_height():
    img = digit_on_paper(canvas=(300, 240), at=(12, 15), height=40, digit="1")
    x = imaging.to_array(img, DIGITS)[0]
    rows = np.flatnonzero(x.max(axis=1) > 0.3)
    cols = np.flatnonzero(x.max(axis=0) > 0.3)
    assert rows[0] <= 2 and rows[-1] >= 29  # fill 1.0: the box's longer side spans the frame
    assert abs((cols[0] + cols[-1]) / 2 - 15.5) <= 2.5  # horizontally centred


def test_mass_centring_and_fill():
    img = digit_on_paper(canvas=(320, 200), at=(230, 130), height=50, digit="4")
    x = imaging.to_array(img, MNIST)[0]
    w = np.clip(x, 0, None)
    ys, xs = np.mgrid[0:28, 0:28] + 0.5
    cy, cx = (w * ys).sum() / w.sum(), (w * xs).sum() / w.sum()
    assert abs(cy - 14) < 1.0 and abs(cx - 14) < 1.0
    rows = np.flatnonzero(x.max(axis=1) > 0.3)
    assert 17 <= rows[-1] - rows[0] + 1 <= 23  # a 20-pixel box


def test_noise_and_jpeg_artifacts_do_not_grow_the_box():
    clean = digit_on_paper(canvas=(260, 260), at=(100, 60), height=70, digit="3")
    rng = np.random.default_rng(0)
    noisy = np.asarray(clean, dtype=np.float32) + rng.normal(0, 12, (260, 260))
    noisy = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    a = imaging.to_array(clean, DIGITS)
    b = imaging.to_array(decode(encode(noisy, "JPEG", quality=40)), DIGITS)
    assert np.abs(a - b).mean() < 0.06


def test_blank_picture_does_not_fail():
    x = imaging.to_array(Image.new("L", (50, 50), 255), DIGITS)
    assert_canonical(x, DIGITS)
    assert x.max() < 0.05  # a blank page, in the card's polarity: all background


def test_rendered_digits_are_deterministic_and_varied():
    a, b = render_digits(12, seed=7), render_digits(12, seed=7)
    assert a == b
    assert [d for _, d in a] == [i % 10 for i in range(12)]
    sizes = {Image.open(io.BytesIO(png)).size for png, _ in a}
    assert len(sizes) > 6
    for png, _ in a:
        assert_canonical(imaging.to_array(decode(png), DIGITS), DIGITS)


def test_large_photo_is_fast():
    big = digit_on_paper(canvas=(4000, 3000), at=(1500, 900), height=900, digit="5").convert("RGB")
    data = encode(big, "JPEG", quality=90)
    for pre in (DIGITS, CIFAR):
        t = time.perf_counter()
        x = imaging.preprocess_upload(data, pre, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        elapsed = time.perf_counter() - t
        assert_canonical(x, pre)
        assert elapsed < 0.5, f"{elapsed:.3f}s for a 12 Mpx JPEG"


def test_jpeg_draft_does_not_change_the_result_much():
    big = digit_on_paper(canvas=(2000, 1600), at=(700, 500), height=500, digit="2").convert("RGB")
    data = encode(big, "JPEG", quality=92)
    full = imaging.to_array(decode(data), DIGITS)
    drafted = imaging.preprocess_upload(data, DIGITS, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert np.abs(full - drafted).mean() < 0.02


# ------------------------------------------------------------------------------------ PNG grids


def test_images_to_png_grid_size_and_values():
    arrays = np.zeros((5, 1, 8, 8), dtype=np.float32)
    arrays[0] = 1.0
    png = imaging.images_to_png(arrays, columns=3, scale=2, pad=1)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "L"
    assert img.size == (3 * (16 + 1) + 1, 2 * (16 + 1) + 1)
    a = np.asarray(img)
    assert (a[1:17, 1:17] == 255).all() and (a[1:17, 18:34] == 0).all()
    assert png == imaging.images_to_png(arrays, columns=3, scale=2, pad=1)  # deterministic


def test_images_to_png_rgb_and_three_dimensional_input():
    rgb = np.random.default_rng(0).random((4, 3, 5, 6)).astype(np.float32)
    img = Image.open(io.BytesIO(imaging.images_to_png(rgb, columns=4, pad=0)))
    assert img.mode == "RGB" and img.size == (24, 5)
    assert (
        np.abs(np.asarray(img)[:, :6].transpose(2, 0, 1) / 255.0 - rgb[0]).max() <= 0.5 / 255 + 1e-6
    )
    gray = Image.open(io.BytesIO(imaging.images_to_png(rgb[:, 0], columns=2, pad=2)))
    assert gray.mode == "L" and gray.size == (2 * 6 + 3 * 2, 2 * 5 + 3 * 2)


def test_images_to_png_rejects_bad_shapes():
    with pytest.raises(ValueError):
        imaging.images_to_png(np.zeros((2, 2, 4, 4)), columns=1)
    with pytest.raises(ValueError):
        imaging.images_to_png(np.zeros((2, 1, 4, 4)), columns=0)
