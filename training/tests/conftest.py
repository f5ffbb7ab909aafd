"""Shared fixtures: a tiny synthetic dataset and tiny configs, so no test needs the real data."""

from __future__ import annotations

import pytest
import torch

from redtrain.config import config_from_dict
from redtrain.data import Dataset, Split


def synthetic_dataset(n_train: int = 256, n_test: int = 64, seed: int = 0, channels: int = 1,
                      size: int = 28) -> Dataset:
    """Ten classes of `size`x`size` images (gray, or RGB with `channels` 3), each class a bright bar
    at its own row: learnable in seconds."""
    g = torch.Generator().manual_seed(seed)
    at = lambda v: v * size // 28  # noqa: E731 (the 28x28 layout, scaled)

    def split(n: int) -> Split:
        labels = torch.randint(0, 10, (n,), generator=g)
        images = (torch.rand(n, channels, size, size, generator=g) * 60).to(torch.uint8)
        for i, y in enumerate(labels.tolist()):
            images[i, :, at(2 + 2 * y):max(at(4 + 2 * y), at(2 + 2 * y) + 1), at(4):at(24)] = 230
        return Split(images, labels)

    return Dataset("fashion-mnist", split(n_train), split(n_test), tuple(f"class-{k}" for k in range(10)),
                   "gray" if channels == 1 else "rgb")


@pytest.fixture
def dataset() -> Dataset:
    return synthetic_dataset()


def tiny_config(**overrides) -> object:
    raw = {
        "name": "tiny",
        "method": "red",
        "members": 3,
        "seed": 0,
        "threads": 1,
        "model": {"arch": "cnn-small", "widths": [4, 8, 8], "hidden": 16},
        "optim": {"epochs": 1, "batch_size": 32, "lr": 0.01},
        "loss": {"l_sim": 0.5, "l_lip": 0.05, "lip_attack": {"eps": 0.1, "steps": 1}},
        "adversarial": {"enabled": True, "attack": {"eps": 0.1, "steps": 1}},
    }
    for key, value in overrides.items():
        raw[key] = value
    return config_from_dict(raw)
