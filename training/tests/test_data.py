import gzip
import struct

import numpy as np
import pytest

from redtrain.data import load_cifar10, load_fashion_mnist, read_cifar10_batch, read_idx
from redtrain.errors import UserError


def write_idx(path, array, compress=True):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def make_fmnist(root, n=6):
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_idx_roundtrip_gz_and_plain(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b", arr, compress=False)
    assert (read_idx(tmp_path / "a.gz") == arr).all()
    assert (read_idx(tmp_path / "b") == arr).all()


def test_fashion_mnist_loader(tmp_path):
    make_fmnist(tmp_path)
    ds = load_fashion_mnist(tmp_path)
    assert ds.train.images.shape == (6, 1, 28, 28) and ds.train.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert ds.channels == "gray" and len(ds.labels) == 10


def test_missing_dataset_names_the_debian_package(tmp_path):
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_wrong_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"\x12\x34\x08\x01" + b"\0" * 8)
    with pytest.raises(UserError, match="bad magic"):
        read_idx(tmp_path / "x")


def test_truncated_idx(tmp_path):
    write_idx(tmp_path / "t", np.zeros((4, 28, 28)), compress=False)
    data = (tmp_path / "t").read_bytes()
    (tmp_path / "t").write_bytes(data[:-100])
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "t")


def test_truncated_gzip(tmp_path):
    write_idx(tmp_path / "t.gz", np.random.default_rng(0).integers(0, 256, (50, 28, 28)))
    data = (tmp_path / "t.gz").read_bytes()
    (tmp_path / "t.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError):
        read_idx(tmp_path / "t.gz")


def write_cifar(path, labels, rng):
    records = [bytes([y]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes() for y in labels]
    path.write_bytes(b"".join(records))


def test_cifar10_loader(tmp_path):
    rng = np.random.default_rng(0)
    write_cifar(tmp_path / "data_batch_1.bin", [0, 1, 2], rng)
    write_cifar(tmp_path / "data_batch_2.bin", [3, 4], rng)
    write_cifar(tmp_path / "test_batch.bin", [9], rng)
    ds = load_cifar10(tmp_path)
    assert ds.train.images.shape == (5, 3, 32, 32) and ds.train.labels.tolist() == [0, 1, 2, 3, 4]
    assert ds.test.labels.tolist() == [9] and ds.channels == "rgb"
    # channel planes: the first 1024 pixel bytes of a record are the red plane
    raw = (tmp_path / "test_batch.bin").read_bytes()
    assert ds.test.images[0, 0].flatten().tolist() == list(raw[1:1025])


def test_cifar10_bad_sizes(tmp_path):
    (tmp_path / "b.bin").write_bytes(b"\0" * 3000)
    with pytest.raises(UserError, match="multiple of 3073"):
        read_cifar10_batch(tmp_path / "b.bin")
    with pytest.raises(UserError, match="data_batch_1.bin"):
        load_cifar10(tmp_path / "empty")
