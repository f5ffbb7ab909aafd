"""Member architectures. Every member takes pixels in [0, 1] (NCHW float32) and returns logits.

Normalisation, where an architecture wants it, lives inside the network, so attacks, eps and the
served package all share one input space.
"""

from __future__ import annotations

import torch
from torch import nn

from redtrain.config import ModelConfig


class SmallCNN(nn.Module):
    """Three conv stages (3x3 conv, ReLU, 2x2 max-pool) and a two-layer head, for 28x28 gray input."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (8, 16, 32), hidden: int = 64,
                 classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels, size = width, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * size * size, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for 32x32 RGB (He et al. 2016, CIFAR variant: 3 stages of 3 basic blocks)."""

    CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
    CIFAR_STD = (0.2470, 0.2435, 0.2616)

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(self.CIFAR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.CIFAR_STD).view(1, 3, 1, 1))
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks: list[nn.Module] = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem((x - self.mean) / self.std)))


def input_shape(arch: str) -> tuple[int, int, int]:
    return {"cnn-small": (1, 28, 28), "resnet20": (3, 32, 32)}[arch]


def build_member(cfg: ModelConfig, classes: int = 10) -> nn.Module:
    if cfg.arch == "cnn-small":
        return SmallCNN(1, tuple(cfg.widths), cfg.hidden, classes)
    if cfg.arch == "resnet20":
        return ResNet20(classes)
    raise ValueError(f"unknown arch {cfg.arch}")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
