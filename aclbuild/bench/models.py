"""The benchmark's models in plain torch: ResNet18/34 CIFAR style and DenseNet (as libcll), an MLP, a linear model.

The reference ResNets are torchvision's with the 7x7 stride-2 stem replaced by a 3x3 stride-1 convolution and the
max-pool kept. Every model takes normalised float images B x 3 x H x W and returns B x K logits.

Initialisation (``init``): ``kaiming`` (the default) draws every convolution's weights as libcll's models do
(torchvision's ResNet init, and libcll's DenseNet's own): normal with std sqrt(2 / (k * k * out_channels)), i.e.
kaiming_normal with fan_out and relu (0.059 for the ResNet stem); batch norm 1 and 0; linear layers PyTorch's
default. ``pytorch`` keeps PyTorch's default for the convolutions too (std 1 / sqrt(3 fan_in): 0.111 for the stem).
The MLP's hidden width defaults to 256, what libcll trains with (its base.yaml overrides its argparse's 500).

Example:
    >>> model = build_model("mlp", num_classes=10, image_size=8)
    >>> model(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 10])
    >>> model[1].out_features   # the hidden width
    256
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aclbuild.errors import InputError, UnknownNameError

MODELS = ("resnet34", "resnet18", "densenet", "mlp", "linear")
INITS = ("kaiming", "pytorch")
MLP_HIDDEN = 256  # libcll's effective width (base.yaml's hidden_dim); 500 is its argparse default, never used


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


def kaiming_init(model: nn.Module) -> nn.Module:
    """Every convolution kaiming_normal (fan_out, relu), every batch norm weight 1 and bias 0; returns ``model``."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def build_model(
    name: str, num_classes: int, image_size: int, hidden_dim: int = MLP_HIDDEN, init: str = "kaiming"
) -> nn.Module:
    """``resnet34``, ``resnet18``, ``densenet``, ``mlp`` (one hidden layer of ``hidden_dim`` ReLU units), ``linear``.

    ``init`` is ``kaiming`` (libcll's convolution init) or ``pytorch`` (PyTorch's defaults); it only concerns the
    convolutional models.
    """
    from aclbuild.bench.densenet import DenseNet

    if init not in INITS:
        raise UnknownNameError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
    if hidden_dim < 1:
        raise InputError(f"--hidden-dim must be at least 1, got {hidden_dim}")
    features = 3 * image_size * image_size
    conv_models = {
        "resnet34": lambda: ResNet((3, 4, 6, 3), num_classes),
        "resnet18": lambda: ResNet((2, 2, 2, 2), num_classes),
        "densenet": lambda: DenseNet(num_classes),
    }
    if name in conv_models:
        model = conv_models[name]()
        return kaiming_init(model) if init == "kaiming" else model
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(features, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_classes)
        )
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))
    raise UnknownNameError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
