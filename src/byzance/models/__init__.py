"""Models: plain ``torch.nn.Module``s, built by name for a data set's input shape.

No batch normalization or dropout: the simulator computes every worker's
gradient with ``torch.func.vmap`` over ``functional_call``, which needs a pure
function of the parameters.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

from byzance.errors import InvalidParameterError
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


def names() -> list[str]:
    """Registered model names."""
    return _MODELS.names()


def build(name: str, input_shape: tuple[int, ...], num_classes: int, **params) -> nn.Module:
    """The model ``name`` for inputs of ``input_shape`` and ``num_classes`` outputs (0: regression)."""
    return _MODELS.get(name).build(tuple(input_shape), num_classes, **params)


__all__ = ["MLP", "LeNet", "LogisticRegression", "build", "names"]
