"""Image data sets: digits from scikit-learn, IDX (MNIST-style) and CIFAR-10 binary files written
here with numpy, augmentation, and Fashion-MNIST from Debian's package when it is installed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from service.card import Preprocess
from training.data import DATASETS, ImageData, augment, load_images
from training.data.images import FASHION_LABELS

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


def _preprocess(data: ImageData, size: tuple[int, int], channels: int) -> Preprocess:
    return Preprocess(
        size=size, channels=channels, mean=[0.5] * channels, std=[0.25] * channels, **data.canonical
    )


# ---- digits -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_images("digits")


def test_datasets_lists_every_loader():
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "cifar10")
    with pytest.raises(ValueError, match="unknown data set"):
        load_images("imagenet")


def test_digits_shapes_range_and_splits(digits):
    assert digits.name == "digits" and digits.source == "sklearn.datasets.load_digits"
    assert digits.labels == [str(d) for d in range(10)]
    sizes = digits.splits()
    assert sum(sizes.values()) == 1797
    assert sizes == {"train": 1257, "val": 180, "test": 360}  # 70/10/20
    for split in ("train", "val", "test"):
        x, y = getattr(digits, split)
        assert x.shape == (sizes[split], 1, 32, 32) and x.dtype == torch.float32
        assert y.shape == (sizes[split],) and y.dtype == torch.int64
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0


def test_digits_split_is_stratified(digits):
    for split in ("train", "val", "test"):
        counts = torch.bincount(getattr(digits, split)[1], minlength=10)
        assert (counts > 0).all(), f"{split} lacks a class: {counts.tolist()}"
        share = counts / counts.sum()
        assert (share - 0.1).abs().max() < 0.02  # digits' classes are balanced; so is each split


def test_digits_deterministic_per_seed(digits):
    again = load_images("digits")
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(again, split)[0], getattr(digits, split)[0])
        assert torch.equal(getattr(again, split)[1], getattr(digits, split)[1])
    other = load_images("digits", seed=1)
    assert not torch.equal(other.train[1], digits.train[1])


def test_digits_native_size_is_exact_sixteenths():
    data = load_images("digits", size=(8, 8))
    x = data.train[0] * 16
    assert torch.equal(x, x.round())  # no resampling at native size: values are k/16


def test_digits_size_and_channels(digits):
    data = load_images("digits", size=(28, 28), channels=3)
    x = data.train[0]
    assert x.shape == (1257, 3, 28, 28)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert torch.equal(data.train[1], digits.train[1])  # same split, different form
    small = load_images("digits", size=(4, 4))  # downsampling (antialiased)
    assert (
        small.train[0].shape == (1257, 1, 4, 4)
        and 0 <= small.train[0].min()
        and small.train[0].max() <= 1
    )


def test_digits_canonical(digits):
    c = digits.canonical
    assert c["native_size"] == (8, 8) and c["ink"] == "light" and c["stretch_contrast"] is True
    assert c["framing"] == {"mode": "bbox", "fill": 1.0, "center": "bbox"}
    assert c["background"] == (1.0, 1.0, 1.0)
    p = _preprocess(digits, (32, 32), 1)
    assert p.framing.fill == 1.0 and p.native_size == (8, 8)
    _preprocess(digits, (28, 28), 3)


def test_limit_takes_the_first_examples(digits):
    small = load_images("digits", limit=10)
    assert small.splits() == {"train": 10, "val": 10, "test": 10}
    assert torch.equal(small.test[0], digits.test[0][:10])
    assert small.canonical == digits.canonical  # measured on the whole training split
    with pytest.raises(ValueError):
        load_images("digits", limit=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="channels"):
        load_images("digits", channels=2)
    with pytest.raises(ValueError, match="root"):
        load_images("digits", root="/tmp")


# ---- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    assert array.dtype == np.uint8
    return (
        bytes([0, 0, 0x08, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def _write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _write_idx_set(
    root: Path, n_train: int = 20, n_test: int = 5, seed: int = 0
) -> dict[str, np.ndarray]:
    """Train files gzipped, test files plain: both forms are read."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        _write(root / name, _idx_bytes(array), gz=name.startswith("train"))
    return arrays


def test_idx_round_trip(tmp_path):
    arrays = _write_idx_set(tmp_path)
    data = load_images("mnist", root=str(tmp_path), size=(28, 28))
    assert data.source == str(tmp_path) and data.labels == [str(d) for d in range(10)]
    assert data.splits() == {"train": 18, "val": 2, "test": 5}  # val: the last 10% of train
    images, labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    expected = {
        "train": (images[:18], labels[:18]),
        "val": (images[18:], labels[18:]),
        "test": (arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]),
    }
    for split, (x_ref, y_ref) in expected.items():
        x, y = getattr(data, split)
        assert x.shape == (len(y_ref), 1, 28, 28)
        assert np.array_equal((x[:, 0] * 255).round().numpy().astype(np.uint8), x_ref)
        assert np.array_equal(y.numpy(), y_ref)
    c = data.canonical
    assert c["native_size"] == (28, 28) and c["ink"] == "light" and c["stretch_contrast"] is True
    assert c["framing"] == {"mode": "bbox", "fill": 20 / 28, "center": "mass"}
    _preprocess(data, (32, 32), 1)


def test_idx_root_from_environment_and_resizing(tmp_path, monkeypatch):
    _write_idx_set(tmp_path)
    monkeypatch.setenv("DLZOO_MNIST", str(tmp_path))
    data = load_images("mnist", channels=3)
    assert data.train[0].shape == (18, 3, 32, 32)
    assert 0 <= data.train[0].min() and data.train[0].max() <= 1


def test_fashion_from_folder(tmp_path):
    _write_idx_set(tmp_path)
    data = load_images("fashion-mnist", root=str(tmp_path), limit=3)
    assert data.labels == list(FASHION_LABELS) and data.labels[0] == "T-shirt/top"
    assert data.splits() == {"train": 3, "val": 2, "test": 3}
    assert data.canonical["framing"]["center"] in ("bbox", "mass")
    _preprocess(data, (28, 28), 1)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("magic", [b"\x00\x00\x08\x01", b"\xde\xad\xbe\xef", b"\x00\x00\x0d\x03"])
def test_idx_bad_magic_names_the_file(tmp_path, gz, magic):
    _write_idx_set(tmp_path)
    for old in tmp_path.glob("t10k-images-idx3-ubyte*"):
        old.unlink()
    images = np.zeros((5, 28, 28), dtype=np.uint8)
    bad = _write(tmp_path / "t10k-images-idx3-ubyte", magic + _idx_bytes(images)[4:], gz=gz)
    with pytest.raises(ValueError, match=bad.name):
        load_images("mnist", root=str(tmp_path))


def test_idx_truncated_or_inconsistent_files(tmp_path):
    arrays = _write_idx_set(tmp_path)
    plain = tmp_path / "t10k-images-idx3-ubyte"
    plain.write_bytes(_idx_bytes(arrays["t10k-images-idx3-ubyte"])[:-7])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        load_images("mnist", root=str(tmp_path))
    plain.write_bytes(_idx_bytes(arrays["t10k-images-idx3-ubyte"][:4]))  # 4 images, 5 labels
    with pytest.raises(ValueError, match="4 images"):
        load_images("mnist", root=str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        load_images("mnist", root=str(tmp_path))


def test_idx_missing_data(tmp_path, monkeypatch):
    monkeypatch.delenv("DLZOO_MNIST", raising=False)
    with pytest.raises(FileNotFoundError, match="DLZOO_MNIST"):
        load_images("mnist")
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_images("mnist", root=str(missing))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_images("fashion-mnist", root=str(missing))
    _write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_images("mnist", root=str(tmp_path))


@pytest.mark.skipif(
    not FASHION_ROOT.is_dir(),
    reason=f"{FASHION_ROOT} absent: apt-get install dataset-fashion-mnist",
)
def test_fashion_mnist_installed():
    data = load_images("fashion-mnist", limit=100)
    assert data.source == str(FASHION_ROOT)
    assert data.splits() == {"train": 100, "val": 100, "test": 100}
    assert data.train[0].shape == (100, 1, 32, 32)
    assert set(data.train[1].tolist()) == set(range(10))
    c = data.canonical
    assert c["framing"] == {"mode": "bbox", "fill": 1.0, "center": "bbox"} and c["native_size"] == (
        28,
        28,
    )
    _preprocess(data, (28, 28), 1)


# ---- CIFAR-10 binary ----------------------------------------------------------------------------


def _cifar_record(label: int, red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> bytes:
    """The documented layout: label byte, then the red, green and blue planes, each row-major."""
    return bytes([label]) + red.tobytes() + green.tobytes() + blue.tobytes()


def _write_cifar(
    folder: Path, per_batch: int = 4, n_test: int = 3, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    images, labels = {}, {}
    for name in names:
        n = n_test if name == "test_batch.bin" else per_batch
        planes = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / name).write_bytes(
            b"".join(_cifar_record(int(y[i]), *planes[i]) for i in range(n))
        )
        images[name], labels[name] = planes, y
    train = [f"data_batch_{i}.bin" for i in range(1, 6)]
    return {
        "train_x": np.concatenate([images[n] for n in train]),
        "train_y": np.concatenate([labels[n] for n in train]),
        "test_x": images["test_batch.bin"],
        "test_y": labels["test_batch.bin"],
    }


def test_cifar_round_trip(tmp_path):
    ref = _write_cifar(tmp_path)
    data = load_images("cifar10", root=str(tmp_path), channels=3)
    assert data.labels[0] == "airplane" and data.labels[9] == "truck" and len(data.labels) == 10
    assert data.splits() == {
        "train": 18,
        "val": 2,
        "test": 3,
    }  # val: the last 10% (5,000 of 50,000)
    x = (torch.cat([data.train[0], data.val[0]]) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(x, ref["train_x"])  # (N, C, H, W), plane by plane
    assert np.array_equal(torch.cat([data.train[1], data.val[1]]).numpy(), ref["train_y"])
    assert np.array_equal((data.test[0] * 255).round().to(torch.uint8).numpy(), ref["test_x"])
    assert np.array_equal(data.test[1].numpy(), ref["test_y"])
    c = data.canonical
    assert c["native_size"] is None and c["ink"] is None and c["framing"] == {"mode": "none"}
    assert c["stretch_contrast"] is False
    _preprocess(data, (32, 32), 3)


def test_cifar_pixel_order(tmp_path):
    """A record whose red plane varies by row, green by column, blue is constant."""
    _write_cifar(tmp_path)
    rows, cols = np.mgrid[0:32, 0:32].astype(np.uint8)
    record = _cifar_record(7, rows * 3, cols * 5, np.full((32, 32), 200, np.uint8))
    (tmp_path / "test_batch.bin").write_bytes(record)
    data = load_images("cifar10", root=str(tmp_path), channels=3)
    x = (data.test[0][0] * 255).round()
    assert data.test[1].tolist() == [7]
    assert x[0, 5, 9] == 15 and x[1, 5, 9] == 45 and x[2, 5, 9] == 200
    assert torch.equal(x[0], torch.from_numpy(rows * 3).float())
    gray = load_images("cifar10", root=str(tmp_path), channels=1).test[0][0, 0] * 255  # luma
    assert torch.allclose(
        gray[5, 9], torch.tensor(0.299 * 15 + 0.587 * 45 + 0.114 * 200), atol=1e-3
    )


def test_cifar_layouts_and_errors(tmp_path, monkeypatch):
    _write_cifar(tmp_path / "cifar-10-batches-bin")  # as the official tarball unpacks
    monkeypatch.setenv("DLZOO_CIFAR10", str(tmp_path))
    data = load_images("cifar10", size=(16, 16), limit=5)
    assert data.train[0].shape == (5, 1, 16, 16) and data.source == str(
        tmp_path / "cifar-10-batches-bin"
    )
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(ValueError, match="data_batch_3.bin"):
        load_images("cifar10")
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch.bin"):
        load_images("cifar10")
    monkeypatch.delenv("DLZOO_CIFAR10")
    with pytest.raises(FileNotFoundError, match="DLZOO_CIFAR10"):
        load_images("cifar10")


# ---- augmentation -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(digits) -> torch.Tensor:
    return digits.train[0][:16].repeat(1, 3, 1, 1)  # (16, 3, 32, 32)


@pytest.mark.parametrize("kind", ["digits", "cifar", "none"])
def test_augment_shape_range_and_determinism(batch, kind):
    out = augment(batch, kind, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert 0.0 <= out.min() and out.max() <= 1.0
    again = augment(batch, kind, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    if kind == "none":
        assert torch.equal(out, batch)
    else:
        assert not torch.equal(out, batch)
        assert not torch.equal(out, augment(batch, kind, torch.Generator().manual_seed(2)))
        changed = (out != batch).flatten(1).any(dim=1)
        assert changed.float().mean() > 0.5  # per image, not once per batch


def test_augment_cifar_is_flip_plus_shift():
    """A white image, padded and cropped, is a white rectangle with at most 4 black rows/columns."""
    x = torch.ones(64, 3, 32, 32)
    out = augment(x, "cifar", torch.Generator().manual_seed(0))
    black_rows = (out[:, 0].amax(dim=2) == 0).sum(dim=1)  # (N,)
    black_cols = (out[:, 0].amax(dim=1) == 0).sum(dim=1)
    assert (black_rows <= 4).all() and (black_cols <= 4).all()
    assert ((out == 0) | (out == 1)).all()  # whole-pixel shifts: no interpolation
    white = out[:, 0].sum(dim=(1, 2))
    assert torch.equal(white, ((32 - black_rows) * (32 - black_cols)).float())
    assert (black_rows > 0).any() and (black_cols > 0).any()


def test_augment_keeps_digits_recognisable(batch):
    out = augment(batch, "digits", torch.Generator().manual_seed(0))
    ink_before, ink_after = batch.sum(dim=(1, 2, 3)), out.sum(dim=(1, 2, 3))
    assert ((ink_after / ink_before) > 0.6).all() and ((ink_after / ink_before) < 1.4).all()


def test_augment_unknown_kind(batch):
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(batch, "mixup", torch.Generator())
