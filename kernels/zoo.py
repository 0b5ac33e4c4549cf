"""Model architectures that augserve ships: importable, so weights-only state_dicts can name them.

- `resnet20`: the CIFAR ResNet-20 (3 stages x 3 basic blocks, widths 16/32/64, 32x32 input).
- `resnet18`: the ImageNet-style ResNet-18 (4 stages x 2 basic blocks, widths 64..512, 224x224).
- `digits_cnn`: a small CNN for scikit-learn's 8x8 digits, the demo repository's classifier.
- `faces_cnn`: a small strided CNN for 64x64 RGB images, the demo's faces vs non-faces model.

They are plain torch modules, so the kernels, their tests and their benches build them without
the server. A model repository's config names one as "augserve.kernels.zoo:resnet20" (or by
its older name, "augserve.server.zoo:resnet20").

Example:
    >>> model = resnet20(num_classes=10)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])

"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-bn layers with a residual connection (projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A stem, stages of basic blocks, global average pooling and a linear head."""

    def __init__(
        self,
        widths: tuple[int, ...],
        blocks_per_stage: int,
        num_classes: int,
        stem: nn.Module,
        stem_channels: int,
    ) -> None:
        super().__init__()
        self.stem = stem
        stages = []
        in_channels = stem_channels
        for index, width in enumerate(widths):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(in_channels, width, stride))
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector (N, C) before the head."""
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.fc(self.features(x))


def resnet20(num_classes: int = 10) -> ResNet:
    """CIFAR ResNet-20: 3 stages x 3 basic blocks, widths 16/32/64, for 32x32 inputs."""
    stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True))
    return ResNet((16, 32, 64), 3, num_classes, stem, 16)


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18: 4 stages x 2 basic blocks, widths 64..512, for 224x224 inputs."""
    stem = nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(True),
        nn.MaxPool2d(3, 2, 1),
    )
    return ResNet((64, 128, 256, 512), 2, num_classes, stem, 64)


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 digits (scikit-learn's `load_digits`).

    conv-bn-relu x2, max-pool, conv-bn-relu, global average pooling, then the head: one
    Linear, or Linear-ReLU-Linear when `hidden` > 0.

    Attributes:
        features: the backbone, (N, in_channels, 8, 8) -> (N, 2 * width).
        fc: the head.
    """

    def __init__(
        self, num_classes: int = 10, width: int = 32, hidden: int = 0, in_channels: int = 1
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc: nn.Module
        if hidden:
            self.fc = nn.Sequential(
                nn.Linear(2 * width, hidden), nn.ReLU(True), nn.Linear(hidden, num_classes)
            )
        else:
            self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for inputs (N, in_channels, 8, 8) scaled to [0, 1]."""
        return self.fc(self.features(x))


def digits_cnn(num_classes: int = 10, width: int = 32) -> DigitsCNN:
    """The demo repository's digits classifier (one grey channel)."""
    return DigitsCNN(num_classes, width)


class FacesCNN(nn.Module):
    """A small CNN for 64x64 RGB images: three stride-2 conv-bn-relu, global pooling, Linear.

    Widths `width`, 2x and 4x; about 25k parameters at width 16, so that it trains in
    seconds on two cores (the demo's `faces` model, `server/inference/demo_faces.py`).
    """

    def __init__(self, num_classes: int = 2, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, 2, 1), nn.BatchNorm2d(out), nn.ReLU(True)]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for normalized inputs (N, 3, H, W)."""
        return self.fc(self.features(x))


def faces_cnn(num_classes: int = 2, width: int = 16) -> FacesCNN:
    """The demo repository's faces vs non-faces classifier."""
    return FacesCNN(num_classes, width)
