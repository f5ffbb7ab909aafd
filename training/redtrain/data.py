"""Datasets as in-memory tensors: Fashion-MNIST (IDX files) and CIFAR-10 (binary batches).

Images are returned as uint8 tensors [N, C, H, W]; the training loop scales them to [0, 1].
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from redtrain.errors import UserError

FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_IDX_DTYPES = {0x08: np.uint8}


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]

    def head(self, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `limit` images and labels (all of them when limit is None)."""
        if limit is None:
            return self.images, self.labels
        return self.images[:limit], self.labels[:limit]


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    labels: tuple[str, ...]
    channels: str  # "gray" | "rgb"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) holding unsigned bytes."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = data[2], data[3]
    if dtype not in _IDX_DTYPES:
        raise UserError(f"{path}: IDX element type 0x{dtype:02x} is not supported (only unsigned byte, 0x08)")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise UserError(f"{path} is truncated: the IDX header is incomplete")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise UserError(
            f"{path} is truncated or corrupt: header says {expected} bytes of data for shape {dims}, "
            f"file has {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}: install the Debian package "
        f"dataset-fashion-mnist (apt-get install dataset-fashion-mnist, files under "
        f"/usr/share/datasets/fashion-mnist), or point data.root (train) or --data-root (evaluate) at the files"
    )


def load_fashion_mnist(root: str | Path) -> Dataset:
    root = Path(root)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"Fashion-MNIST {split} files in {root} disagree: images {images.shape}, labels {labels.shape}"
            )
        if labels.max(initial=0) >= len(FASHION_MNIST_LABELS):
            raise UserError(f"Fashion-MNIST {split} labels in {root} hold a class >= 10")
        splits[split] = Split(
            images=torch.from_numpy(images.copy()).unsqueeze(1),
            labels=torch.from_numpy(labels.astype(np.int64)),
        )
    return Dataset("fashion-mnist", splits["train"], splits["test"], FASHION_MNIST_LABELS, "gray")


_CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar10_batch(path: Path) -> Split:
    """Read one CIFAR-10 binary batch: records of <1 label byte><3072 pixel bytes, RRR..GGG..BBB>."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read CIFAR-10 batch {path}: {exc}") from None
    if len(data) == 0 or len(data) % _CIFAR_RECORD != 0:
        raise UserError(
            f"{path} is not a CIFAR-10 binary batch: {len(data)} bytes is not a multiple of {_CIFAR_RECORD}"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= 10:
        raise UserError(f"{path}: label byte {labels.max()} is not a CIFAR-10 class (0..9)")
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def load_cifar10(root: str | Path) -> Dataset:
    root = Path(root)
    train_files = sorted(root.glob("data_batch_*.bin"))
    test_file = root / "test_batch.bin"
    if not train_files or not test_file.is_file():
        raise UserError(
            f"CIFAR-10 binary files not found in {root}: expected data_batch_1.bin .. data_batch_5.bin "
            f"and test_batch.bin (the 'CIFAR-10 binary version'); point data.root (train) or --data-root (evaluate) at them"
        )
    parts = [read_cifar10_batch(p) for p in train_files]
    train = Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    return Dataset("cifar10", train, read_cifar10_batch(test_file), CIFAR10_LABELS, "rgb")


def load_dataset(name: str, root: str | Path) -> Dataset:
    if name == "fashion-mnist":
        return load_fashion_mnist(root)
    if name == "cifar10":
        return load_cifar10(root)
    raise UserError(f"unknown dataset '{name}' (known: fashion-mnist, cifar10)")


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1], the space every attack and eps lives in."""
    return images.float().div_(255.0)
