"""The SPML benchmark's models: ResNet-50 in plain torch (VLPL's backbone) and a linear head on frozen features.

The ResNet-50 has torchvision's modules and state-dict key names (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer1.0.downsample.0``, ``fc``; bottleneck blocks with the stride on the 3x3 convolution, "ResNet v1.5"), so
torchvision's ImageNet checkpoint loads into it with :func:`load_init` (the ``--init`` file: none can be downloaded
here). Global average pooling, then a K-class linear layer, as VLPL's ``ImageClassifier`` on a torchvision ResNet-50.

Example:
    >>> model = resnet50(num_classes=1000)
    >>> sum(p.numel() for p in model.parameters()), tuple(model.state_dict()["layer2.0.downsample.0.weight"].shape)
    (25557032, (512, 256, 1, 1))
    >>> tuple(resnet50(3)(torch.zeros(2, 3, 64, 64)).shape)
    (2, 3)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from aclbuild.errors import InputError, SourceError

SPML_MODELS = ("resnet50", "clip-linear")
RESNET50_LAYERS = (3, 4, 6, 3)
EXPANSION = 4  # a bottleneck block's output channels over its width


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (with the block's stride), 1x1 expand, each with batch norm; identity or projected shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + shortcut)


class ResNet(nn.Module):
    """A bottleneck ResNet with torchvision's names; ``layers`` blocks per stage."""

    def __init__(self, layers: tuple[int, ...], num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for stage, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            stride = 1 if stage == 1 else 2
            stage_blocks = []
            for i in range(blocks):
                stage_blocks.append(Bottleneck(channels, width, stride if i == 0 else 1))
                channels = width * EXPANSION
            setattr(self, f"layer{stage}", nn.Sequential(*stage_blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(num_classes: int) -> ResNet:
    """ResNet-50 with a ``num_classes`` head (25,557,032 parameters with 1000 classes, as torchvision's)."""
    return ResNet(RESNET50_LAYERS, num_classes)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file or a torch file (a bare state dict or ``{"state_dict": ...}``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--init {path}: no such file; give a safetensors or torch file of ImageNet ResNet-50 weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch and safetensors raise many types for a foreign file
        raise SourceError(f"--init {path}: cannot read it as a safetensors or torch file "
                          f"({' '.join(str(exc).split())[:200]})") from None  # fmt: skip
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SourceError(f"--init {path}: holds no state dict of tensors (name -> tensor)")
    return state


def load_init(model: nn.Module, path: str | Path) -> None:
    """Load the weights of ``path`` into ``model``, all but its classifier (``fc.*``, which keeps its own).

    A file whose keys or shapes differ from the model's is refused in one line naming the first differences.
    """
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]  # fmt: skip
    found = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
    problems = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for label, keys in found if keys]
    if problems:
        raise SourceError(f"--init {path} does not fit a torchvision ResNet-50: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)


def build_spml_model(name: str, num_classes: int, feature_dim: int | None = None, init: str | None = None) -> nn.Module:
    """The model ``name`` for ``num_classes``; a linear head on ``feature_dim`` features when that is given.

    Example:
        >>> build_spml_model("clip-linear", 3, feature_dim=8)
        Linear(in_features=8, out_features=3, bias=True)
    """
    if name not in SPML_MODELS:
        raise InputError(f"unknown SPML model {name!r}; choose from: {', '.join(SPML_MODELS)}")
    if feature_dim is not None:
        if init is not None:
            raise InputError("--init loads ResNet-50 weights; the linear head on CLIP features takes none")
        return nn.Linear(feature_dim, num_classes)
    if name == "clip-linear":
        raise InputError("the clip-linear model needs CLIP image features (pass --clip-model)")
    model = resnet50(num_classes)
    if init is not None:
        load_init(model, init)
    return model
