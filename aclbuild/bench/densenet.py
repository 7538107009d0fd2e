"""libcll's DenseNet for 32x32 images, in plain torch: 3 dense blocks of 16 bottleneck layers, growth 12.

Architecture (libcll's ``DenseNet()``, the DenseNet-BC-100 layout at k = 12): a 3x3 stem to 2k = 24 channels; each
dense layer is BN-ReLU-1x1 conv (to 4k) - BN-ReLU-3x3 conv (to k), its output concatenated to its input; between
blocks a transition BN-ReLU-1x1 conv halving the channels, then 2x2 average pooling; at the end BN-ReLU, average
pooling to 1x1 and a linear layer. 769,162 parameters at K = 10. libcll pools with a fixed 8x8 window, which is the
global average at 32x32 inputs (and breaks at other sizes); here the pooling is global at every size, so the same
model also runs on 8x8 digits and 64x64 MicroImageNet.

Example:
    >>> model = DenseNet(num_classes=10)
    >>> sum(p.numel() for p in model.parameters())
    769162
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

GROWTH = 12
LAYERS_PER_BLOCK = (16, 16, 16)
BOTTLENECK = 4  # the 1x1 convolution widens to BOTTLENECK * GROWTH channels


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv - BN-ReLU-3x3 conv; returns its input with the GROWTH new channels appended."""

    def __init__(self, in_channels: int):
        super().__init__()
        width = BOTTLENECK * GROWTH
        self.layers = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Conv2d(width, GROWTH, 3, padding=1, bias=False),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.layers(x)], dim=1)


def transition(in_channels: int, out_channels: int) -> nn.Sequential:
    """BN-ReLU-1x1 conv to ``out_channels``, then 2x2 average pooling (halves the resolution)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.AvgPool2d(2),
    )  # fmt: skip


class DenseNet(nn.Module):
    """libcll's DenseNet (see the module docstring); takes normalised B x 3 x H x W images, returns B x K logits."""

    def __init__(self, num_classes: int):
        super().__init__()
        channels = 2 * GROWTH
        stages: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
        for index, count in enumerate(LAYERS_PER_BLOCK):
            stages += [DenseLayer(channels + i * GROWTH) for i in range(count)]
            channels += count * GROWTH
            if index < len(LAYERS_PER_BLOCK) - 1:  # compression 2 between blocks, none after the last
                stages.append(transition(channels, channels // 2))
                channels //= 2
        stages += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
