"""Models: plain ``torch.nn.Module``s, built by name for a data set's input shape.

Registered: ``logistic``, ``mlp``, ``lenet``, ``resnet20`` (He et al. 2016's
CIFAR ResNet) and ``resnet18`` (CIFAR stem); :func:`names` lists them and
:func:`build` builds one, its own parameters (a run's ``model_params``) as
keywords: ``build("resnet20", (3, 32, 32), 10, norm="group", width=1)``.

The simulator computes every worker's gradient with ``torch.func.vmap`` over
``functional_call``, which needs a pure function of the parameters: no buffer
updated in ``forward`` (so no BatchNorm running statistics: the ResNets use
GroupNorm by default, see :mod:`byzance.models.resnet`), no dropout, nothing in
place.

Your own model: register a factory ``(input_shape, num_classes, **params) ->
nn.Module`` under a new name, then use the name anywhere a model is named (a
run's ``model = "tiny_cnn"``, once the module that registers it is imported):

>>> import torch
>>> from torch import nn
>>> from byzance import models
>>> def tiny_cnn(input_shape, num_classes, channels: int = 8):
...     return nn.Sequential(
...         nn.Conv2d(input_shape[0], channels, 3, padding=1), nn.ReLU(),
...         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
>>> models.register("tiny_cnn", tiny_cnn, "one conv layer, average pooled")
>>> models.build("tiny_cnn", (1, 8, 8), 10, channels=4)(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

from byzance.errors import InvalidParameterError
from byzance.models.resnet import ResNet18, ResNet20
from byzance.registry import Registry


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: flatten, then one linear layer (C logits).

    Input (B, *input_shape), output (B, C). For regression (C = 0) one output,
    squeezed: (B,).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.regression = num_classes == 0
        self.linear = nn.Linear(math.prod(input_shape), 1 if self.regression else num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x.flatten(start_dim=1))
        return out.squeeze(-1) if self.regression else out


class MLP(nn.Module):
    """Fully connected network: flatten, hidden ReLU layers, C logits. (B, *input_shape) -> (B, C)."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (128, 64)
    ) -> None:
        super().__init__()
        sizes = (math.prod(input_shape), *hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], max(num_classes, 1)))
        self.net = nn.Sequential(*layers)
        self.regression = num_classes == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.squeeze(-1) if self.regression else out


class LeNet(nn.Module):
    """LeNet-5 style CNN (LeCun et al. 1998): two 5x5 conv + max-pool stages, three dense layers.

    Padding keeps small images (8x8 digits) valid. (B, C_in, H, W) -> (B, C).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise InvalidParameterError(
                f"lenet needs images (channels, height, width); got input shape {input_shape}. "
                "Use 'mlp' or 'logistic' for vectors."
            )
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = 16 * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _Entry:
    def __init__(self, name: str, build: Callable[..., nn.Module], summary: str) -> None:
        self.name, self.build, self.summary = name, build, summary


_MODELS: Registry[_Entry] = Registry("model")
_MODELS.register(_Entry("logistic", LogisticRegression, "logistic (or linear) regression"))
_MODELS.register(_Entry("mlp", MLP, "two hidden ReLU layers (128, 64)"))
_MODELS.register(_Entry("lenet", LeNet, "LeNet-5 style CNN"))
_MODELS.register(_Entry("resnet20", ResNet20, "ResNet-20 for CIFAR, GroupNorm (0.27M)"))
_MODELS.register(_Entry("resnet18", ResNet18, "ResNet-18, CIFAR stem, GroupNorm (11.2M)"))


def register(name: str, factory: Callable[..., nn.Module], summary: str = "") -> None:
    """Make ``factory`` buildable as model ``name`` (by :func:`build`, configs, grids).

    ``factory(input_shape, num_classes, **params)`` returns an ``nn.Module`` that
    maps (B, *input_shape) to (B, num_classes) logits, or (B,) for regression
    (``num_classes = 0``); ``params`` are the model's own keyword parameters (a
    run's ``model_params``), checked against the factory's signature. For the
    simulator's vectorized gradients the module must be a pure function of its
    parameters (no buffers updated in ``forward``). A name already taken is an
    error.
    """
    if not callable(factory):
        raise InvalidParameterError(
            f"model {name!r}: the factory must be callable "
            f"(input_shape, num_classes, **params) -> nn.Module; got {factory!r}."
        )
    _MODELS.register(_Entry(name, factory, summary or name))


def names() -> list[str]:
    """Registered model names."""
    return _MODELS.names()


def build(name: str, input_shape: tuple[int, ...], num_classes: int, **params) -> nn.Module:
    """The model ``name`` for inputs of ``input_shape`` and ``num_classes`` outputs (0: regression)."""
    return _MODELS.get(name).build(tuple(input_shape), num_classes, **params)


__all__ = [
    "MLP",
    "LeNet",
    "LogisticRegression",
    "ResNet18",
    "ResNet20",
    "build",
    "names",
    "register",
]
