"""The benchmark's models in plain torch: ResNet18/34 CIFAR style (as the reference), an MLP and a linear model.

The reference ResNets are torchvision's with the 7x7 stride-2 stem replaced by a 3x3 stride-1 convolution and the
max-pool kept. Every model takes normalised float images B x 3 x H x W and returns B x K logits.

Example:
    >>> model = build_model("mlp", num_classes=10, image_size=8)
    >>> model(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aclbuild.errors import UnknownNameError

MODELS = ("resnet34", "resnet18", "mlp", "linear")
MLP_HIDDEN = 500


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (1x1 convolution when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stride-1 stem, max-pool kept, four stages of basic blocks, global average pool."""

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        layers, in_planes = [], 64
        for stage, (count, planes) in enumerate(zip(blocks, (64, 128, 256, 512))):
            for index in range(count):
                layers.append(BasicBlock(in_planes, planes, 2 if stage > 0 and index == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def build_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    """``resnet34``, ``resnet18``, ``mlp`` (one hidden layer of 500 ReLU units) or ``linear``."""
    features = 3 * image_size * image_size
    if name == "resnet34":
        return ResNet((3, 4, 6, 3), num_classes)
    if name == "resnet18":
        return ResNet((2, 2, 2, 2), num_classes)
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(features, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, num_classes)
        )
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))
    raise UnknownNameError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
