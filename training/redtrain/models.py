"""Member architectures. Every member takes pixels in [0, 1] (NCHW float32) and returns logits.

Normalisation, where an architecture wants it, lives inside the network, so attacks, eps and the
served package all share one input space.
"""

from __future__ import annotations

import typing

import torch
from torch import nn

from redtrain.config import ModelConfig


class _StagesAndHead(nn.Module):
    """Conv stages (`features`), each halving the resolution, then a two-layer head (`head`). The
    parameter names (features.K, head.1, head.3) are what the stacked trainer and PS-RED read."""

    def __init__(self, stage: typing.Callable[[int, int], list[nn.Module]], in_channels: int,
                 widths: tuple[int, ...], hidden: int, classes: int, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for width in widths:
            layers += stage(channels, width)
            channels, size = width, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * size * size, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(_StagesAndHead):
    """Three conv stages (3x3 conv, ReLU, 2x2 max-pool) and a two-layer head, for 28x28 gray input."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (8, 16, 32), hidden: int = 64,
                 classes: int = 10, image_size: int = 28) -> None:
        super().__init__(lambda cin, cout: [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)],
                         in_channels, widths, hidden, classes, image_size)


class StridedCNN(_StagesAndHead):
    """Conv layers of 4x4 kernels with stride 2 and padding 1 (each halves the resolution, no pooling),
    then one hidden layer: with widths (16, 32) and hidden 100 on 28x28 gray input this is the small
    CNN of Croce, Andriushchenko and Hein (AISTATS 2019), about 166k parameters, the published
    single-model reference for PGD adversarial training on Fashion-MNIST."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32), hidden: int = 100,
                 classes: int = 10, image_size: int = 28) -> None:
        super().__init__(lambda cin, cout: [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()],
                         in_channels, widths, hidden, classes, image_size)


class _BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and a residual; `shortcut` names the 1x1 projection where the
    shape changes (torchvision calls it `downsample`, which checkpoints of its layout need)."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str = "shortcut") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self._shortcut = shortcut
        projection: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            projection = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        setattr(self, shortcut, projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + getattr(self, self._shortcut)(x))


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _standardisation(in_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std applied inside the network: CIFAR-10's for RGB input; other input
    is left in [0, 1], since no dataset's statistics apply to it."""
    if in_channels == 3:
        mean, std = CIFAR_MEAN, CIFAR_STD
    else:
        mean, std = (0.0,) * in_channels, (1.0,) * in_channels
    return torch.tensor(mean).view(1, in_channels, 1, 1), torch.tensor(std).view(1, in_channels, 1, 1)


def _stages(cin: int, stages: tuple[tuple[int, int, int], ...], shortcut: str = "shortcut") -> nn.Sequential:
    """Basic blocks, stage by stage: (width, blocks, stride of the stage's first block)."""
    blocks: list[nn.Module] = []
    for cout, count, stride in stages:
        for i in range(count):
            blocks.append(_BasicBlock(cin, cout, stride if i == 0 else 1, shortcut))
            cin = cout
    return nn.Sequential(*blocks)


class _CifarResNet(nn.Module):
    """Basic-block ResNet for 32x32 inputs: a 3x3 stem without max-pool, `stages` of basic blocks
    (width, blocks, stride of the first block), global average pooling, one linear layer."""

    def __init__(self, classes: int, in_channels: int, stages: tuple[tuple[int, int, int], ...]) -> None:
        super().__init__()
        mean, std = _standardisation(in_channels)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        width = stages[0][0]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = _stages(width, stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(stages[-1][0], classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem((x - self.mean) / self.std)))


class ResNet20(_CifarResNet):
    """ResNet-20 for 32x32 RGB (He et al. 2016, CIFAR variant: 3 stages of 3 basic blocks)."""

    CIFAR_MEAN = CIFAR_MEAN
    CIFAR_STD = CIFAR_STD

    def __init__(self, classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(classes, in_channels, ((16, 3, 1), (32, 3, 2), (64, 3, 2)))


class ResNet18(_CifarResNet):
    """ResNet-18, CIFAR variant (the paper's member): a 3x3 stem without max-pool, then four stages of
    two basic blocks at 64, 128, 256 and 512 channels, the last three halving the resolution."""

    def __init__(self, classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(classes, in_channels, ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)))


class _Normalise(nn.Module):
    """(x - mean[c]) / std[c], the statistics held as buffers `mean` and `std` of shape [C]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


class _TorchvisionCifarResNet18(nn.Module):
    """torchvision's resnet18 parameter names (conv1, bn1, layer1..layer4, fc) with the CIFAR stem
    the public RED code puts in: a 3x3 stride-1 conv with a bias, no max-pool."""

    def __init__(self, classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(64)
        widths = (64, 128, 256, 512)
        for k, width in enumerate(widths):
            cin = widths[max(k - 1, 0)]
            setattr(self, f"layer{k + 1}", _stages(cin, ((width, 2, 1 if k == 0 else 2),), shortcut="downsample"))
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class RedResNet18(nn.Module):
    """A member of the public RED code's CIFAR-10 ensembles, in its state-dict layout, to load its
    checkpoints (`redtrain import --preset red-resnet18`, docs/import.md): `data_norm.mean` and
    `data_norm.std` normalise [0, 1] input inside the network, then `base_model.` holds the ResNet-18.
    The normalisation defaults are replaced by the checkpoint's own buffers."""

    def __init__(self, classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        mean, std = _standardisation(in_channels)
        self.data_norm = _Normalise(tuple(mean.flatten().tolist()), tuple(std.flatten().tolist()))
        self.base_model = _TorchvisionCifarResNet18(classes, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_model(self.data_norm(x))


def input_shape(arch: str) -> tuple[int, int, int]:
    return {"cnn-small": (1, 28, 28), "cnn-strided": (1, 28, 28), "resnet20": (3, 32, 32)}[arch]


def build_member(cfg: ModelConfig, classes: int = 10) -> nn.Module:
    if cfg.arch == "cnn-small":
        return SmallCNN(1, tuple(cfg.widths), cfg.hidden, classes)
    if cfg.arch == "cnn-strided":
        return StridedCNN(1, tuple(cfg.widths), cfg.hidden, classes)
    if cfg.arch == "resnet20":
        return ResNet20(classes)
    raise ValueError(f"unknown arch {cfg.arch}")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
