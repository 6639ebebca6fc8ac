"""Residual networks for small images: ResNet-20 (CIFAR) and ResNet-18 with the CIFAR stem.

Both are pure functions of their parameters, as ``torch.func.vmap`` over
``functional_call`` needs (the simulator computes every worker's gradient in
one call): no buffer is written in ``forward`` and no op is in place.

Normalization (``norm``):

- ``"group"`` (default): GroupNorm (Wu & He 2018), ``groups`` groups per layer
  (default 2). Its statistics are per sample, so a worker's gradient does not
  depend on any other sample than its own, and there are no running
  statistics to keep. Hsieh et al. 2020 ("The non-IID data quagmire of
  decentralized machine learning") show BatchNorm failing when workers hold
  different label distributions and propose GroupNorm in its place; a small
  number of groups (2) is the usual choice in federated ResNets.
- ``"batch"``: BatchNorm with batch statistics only
  (``track_running_stats=False``): each worker normalizes with its own
  batch's mean and variance, under vmap exactly as in a loop over workers.
  No running statistics are kept, so evaluation (``model.eval()`` too) also
  normalizes each evaluated batch by its own statistics: evaluate on batches
  of reasonable size, never one sample at a time on a 1x1 feature map.
- ``"none"``: no normalization. Convolutions get a bias, and the last
  convolution of every residual branch starts at zero, so that each block is
  the identity at initialization (SkipInit, De & Smith 2020; Fixup, Zhang et
  al. 2019) and the depth does not blow up the activations.

Initialization: Kaiming normal for the convolutions (fan-out, ReLU; He et al.
2015), PyTorch's default for the final linear layer, norm weights one and
biases zero. Everything comes from torch's global generator: the same
``torch.manual_seed`` gives the same model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from byzance.errors import InvalidParameterError

NORMS = ("group", "batch", "none")


def _check_image(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``input_shape`` as (channels, height, width), or an error naming what works."""
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise InvalidParameterError(
            f"{name} needs images (channels, height, width), e.g. (3, 32, 32) for CIFAR or "
            f"(1, 28, 28) for MNIST, any height and width from 8 up; got input shape "
            f"{tuple(input_shape)}. Use 'mlp' or 'logistic' for vectors."
        )
    channels, height, width = (int(s) for s in input_shape)
    return channels, height, width


def _norm_layer(norm: str, channels: int, groups: int) -> nn.Module:
    """The normalization of ``channels`` feature maps: (B, C, H, W) -> (B, C, H, W)."""
    if norm == "group":
        return nn.GroupNorm(groups, channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    return nn.Identity()


def _conv(c_in: int, c_out: int, kernel: int, stride: int, norm: str) -> nn.Conv2d:
    """A ``kernel`` x ``kernel`` convolution, padded to keep the size at stride 1."""
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=norm == "none")


class PadShortcut(nn.Module):
    """Option A shortcut (He et al. 2016): subsample by ``stride``, zero-pad the new channels.

    Parameter-free. (B, C_in, H, W) -> (B, C_in + extra, ceil(H / stride), ceil(W / stride)),
    the same size as a padded 3x3 convolution of that stride.
    """

    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        before = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, before, self.extra - before))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with normalization and ReLU, plus a shortcut.

    (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)). Where the
    shape changes, the shortcut is option A (``"pad"``, parameter-free) or option
    B (``"conv"``, a 1x1 convolution and normalization).
    """

    def __init__(
        self, c_in: int, c_out: int, stride: int, shortcut: str, norm: str, groups: int
    ) -> None:
        super().__init__()
        self.conv1 = _conv(c_in, c_out, 3, stride, norm)
        self.norm1 = _norm_layer(norm, c_out, groups)
        self.conv2 = _conv(c_out, c_out, 3, 1, norm)
        self.norm2 = _norm_layer(norm, c_out, groups)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            if shortcut == "pad":
                self.shortcut = PadShortcut(c_out - c_in, stride)
            else:
                self.shortcut = nn.Sequential(
                    _conv(c_in, c_out, 1, stride, norm), _norm_layer(norm, c_out, groups)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet of basic blocks: 3x3 stem (stride 1, no max-pool), stages,
    global average pooling, one linear layer.

    Input (B, C_in, H, W), output (B, num_classes) logits; for regression
    (``num_classes = 0``) one output, squeezed: (B,). Stage ``i`` has
    ``stages[i]`` channels (times ``width``) and ``blocks`` blocks; every stage
    after the first halves the height and width (stride 2).

    Args:
        input_shape: (channels, height, width) of one input.
        num_classes: number of classes (0: regression).
        stages: channels of each stage at width 1; the stem has ``stages[0]``.
        blocks: basic blocks per stage.
        shortcut: ``"pad"`` (option A) or ``"conv"`` (option B) where the shape changes.
        norm: ``"group"``, ``"batch"`` or ``"none"`` (see the module docstring).
        groups: GroupNorm groups per layer; must divide every layer's channels.
        width: multiplier of every layer's channels (0.25: a quarter as wide).
        name: the model's name in messages.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        stages: tuple[int, ...],
        blocks: int,
        shortcut: str,
        norm: str = "group",
        groups: int = 2,
        width: float = 1.0,
        name: str = "resnet",
    ) -> None:
        super().__init__()
        c_in, _, _ = _check_image(name, input_shape)
        if norm not in NORMS:
            raise InvalidParameterError(
                f"{name}: norm = {norm!r} is not known; choose one of {', '.join(NORMS)}."
            )
        if not width > 0:
            raise InvalidParameterError(f"{name}: width must be positive; got {width}.")
        channels = [max(1, round(c * width)) for c in stages]
        if norm == "group":
            if groups < 1:
                raise InvalidParameterError(f"{name}: groups must be at least 1; got {groups}.")
            bad = [c for c in channels if c % groups]
            if bad:
                raise InvalidParameterError(
                    f"{name}: groups = {groups} does not divide the channels {bad} "
                    f"(width = {width} gives stages of {channels} channels); choose groups "
                    "dividing all of them, or another width."
                )
        self.regression = num_classes == 0
        self.stem = _conv(c_in, channels[0], 3, 1, norm)
        self.stem_norm = _norm_layer(norm, channels[0], groups)
        layers: list[nn.Module] = []
        previous = channels[0]
        for i, c in enumerate(channels):
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(BasicBlock(previous, c, stride, shortcut, norm, groups))
                previous = c
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(previous, max(num_classes, 1))
        self._init(norm)

    def _init(self, norm: str) -> None:
        # Fan-out (He et al. 2015) where a normalization follows every convolution,
        # fan-in without one: it keeps the forward activations' scale.
        mode = "fan_in" if norm == "none" else "fan_out"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm | nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if norm == "none":  # every residual branch starts as zero: each block is the identity
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.stem_norm(self.stem(x)))
        out = self.layers(out)
        out = self.fc(out.mean(dim=(2, 3)))
        return out.squeeze(-1) if self.regression else out


class ResNet20(ResNet):
    """ResNet-20 for CIFAR (He et al. 2016, section 4.2): about 0.27M parameters.

    A 3x3 convolution of 16 channels, three stages of 3 basic blocks (16, 32, 64
    channels, strides 1, 2, 2), global average pooling, a linear layer. The
    shortcuts are the paper's CIFAR choice, option A: identity, or where the
    shape changes subsampling and zero-padded channels (no parameters).
    269,722 parameters for 10 classes with ``norm = "group"`` or ``"batch"``.
    (B, C_in, H, W) -> (B, num_classes).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        norm: str = "group",
        groups: int = 2,
        width: float = 1.0,
    ) -> None:
        super().__init__(
            input_shape,
            num_classes,
            stages=(16, 32, 64),
            blocks=3,
            shortcut="pad",
            norm=norm,
            groups=groups,
            width=width,
            name="resnet20",
        )


class ResNet18(ResNet):
    """ResNet-18 with the CIFAR stem: about 11.2M parameters.

    A 3x3 convolution of stride 1 and no max-pool (small images keep their
    resolution), four stages of 2 basic blocks (64, 128, 256, 512 channels,
    strides 1, 2, 2, 2) with 1x1-convolution projection shortcuts (option B)
    where the shape changes, global average pooling, a linear layer. 11,173,962
    parameters for 10 classes with ``norm = "group"`` or ``"batch"``.
    (B, C_in, H, W) -> (B, num_classes).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        norm: str = "group",
        groups: int = 2,
        width: float = 1.0,
    ) -> None:
        super().__init__(
            input_shape,
            num_classes,
            stages=(64, 128, 256, 512),
            blocks=2,
            shortcut="conv",
            norm=norm,
            groups=groups,
            width=width,
            name="resnet18",
        )


__all__ = ["NORMS", "BasicBlock", "PadShortcut", "ResNet", "ResNet18", "ResNet20"]
