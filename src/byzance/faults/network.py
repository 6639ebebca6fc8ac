"""A feed-forward network seen as layers of neurons: the structure the failure model needs.

A ``torch.nn.Sequential`` of affine layers (``Linear``, ``Conv1d/2d/3d``) and
element-wise modules (activations, ``Flatten``, ``Identity``, ``Dropout`` in
eval mode) is cut into *blocks*: each block is one affine layer followed by
the element-wise modules up to the next affine layer. Block ``l`` (1-based)
computes hidden layer ``l``'s neurons ``h^(l) = phi_l(W_l h^(l-1) + b_l)``;
the last block is the output layer (its neurons never fail: the output is
read by a correct observer, as in El Mhamdi & Guerraoui, IPDPS 2017). For a
convolution every output element (channel, position) is one neuron.

Element-wise modules must be Lipschitz: ``|phi(a) - phi(b)| <= K |a - b|``.
:data:`LIPSCHITZ` gives ``K`` for each supported activation (an upper bound
where the exact constant is irrational).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from byzance.errors import ByzanceError, InvalidParameterError

__all__ = [
    "AFFINE",
    "Block",
    "Network",
    "UnsupportedLayerError",
    "lipschitz_constant",
    "parse",
]

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Affine layers: their outputs (after the block's activation) are the neurons."""


class UnsupportedLayerError(ByzanceError):
    """The network holds a layer the failure model cannot handle."""


def lipschitz_constant(module: nn.Module) -> float:
    """K of an element-wise module: the largest slope of the activation.

    ReLU, ReLU6, Hardtanh, Tanh, Softplus, Identity, Flatten: 1; Sigmoid: 1/4;
    LeakyReLU: max(1, |slope|); ELU: max(1, alpha); SiLU: 1.0999 (max of
    d/dx x sigmoid(x) ~ 1.0998); GELU: 1.1290 (max of its derivative ~ 1.1289).
    Raises :class:`UnsupportedLayerError` for anything else.
    """
    if isinstance(
        module, nn.ReLU | nn.ReLU6 | nn.Hardtanh | nn.Tanh | nn.Softplus | nn.Identity | nn.Flatten
    ):
        return 1.0
    if isinstance(module, nn.Unflatten):
        return 1.0
    if isinstance(module, nn.Dropout):
        if module.training and module.p > 0:
            raise UnsupportedLayerError(
                "Dropout in training mode is random; call model.eval() before injecting failures."
            )
        return 1.0
    if isinstance(module, nn.Sigmoid):
        return 0.25
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(module.negative_slope))
    if isinstance(module, nn.ELU):
        return max(1.0, module.alpha)
    if isinstance(module, nn.SiLU):
        return 1.0999
    if isinstance(module, nn.GELU):
        return 1.1290
    raise UnsupportedLayerError(
        f"{type(module).__name__} is not supported: the failure model needs affine layers "
        "(Linear, Conv1d/2d/3d) and element-wise Lipschitz activations (ReLU, LeakyReLU, Tanh, "
        "Sigmoid, ELU, SiLU, GELU, Softplus, Hardtanh), Flatten, Identity or Dropout (eval). "
        "Pooling, normalization and softmax mix neurons; leave them out of the Sequential."
    )


@dataclass(frozen=True, eq=False)
class Block:
    """One affine layer and the element-wise modules after it.

    ``affine_index`` / ``last_index``: positions in the Sequential of the affine
    layer and of the block's last module (where the neurons' outputs appear).
    ``lipschitz``: product of the element-wise modules' K (1 with none).
    ``shape``: the neurons' shape for one input (e.g. (64,) or (6, 8, 8)).
    """

    affine: nn.Module
    elementwise: tuple[nn.Module, ...]
    affine_index: int
    last_index: int
    lipschitz: float
    shape: tuple[int, ...]

    @property
    def width(self) -> int:
        """Number of neurons N_l."""
        return math.prod(self.shape)

    @property
    def last_module(self) -> nn.Module:
        """The module whose output holds the block's neurons."""
        return self.elementwise[-1] if self.elementwise else self.affine


@dataclass(frozen=True, eq=False)
class Network:
    """A parsed Sequential: input preprocessing, hidden blocks, output block."""

    model: nn.Sequential
    prefix: tuple[nn.Module, ...]
    blocks: tuple[Block, ...]
    input_shape: tuple[int, ...]

    @property
    def hidden(self) -> tuple[Block, ...]:
        """Hidden layers 1..L: the blocks whose neurons may fail."""
        return self.blocks[:-1]

    @property
    def output(self) -> Block:
        """Layer L + 1: the output."""
        return self.blocks[-1]

    @property
    def widths(self) -> list[int]:
        """N_1..N_L."""
        return [b.width for b in self.hidden]

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's neurons, flattened: [x0 (B, N_0), h1 (B, N_1), ..., y (B, N_{L+1})].

        x0 is the input to the first affine layer (after the prefix).
        """
        h = x
        for m in self.prefix:
            h = m(h)
        out = [h.flatten(1)]
        for block in self.blocks:
            h = block.affine(h)
            for m in block.elementwise:
                h = m(h)
            out.append(h.flatten(1))
        return out


def parse(model: nn.Module, input_shape: tuple[int, ...]) -> Network:
    """Cut ``model`` (an ``nn.Sequential``) into blocks; ``input_shape`` is one input's shape.

    Raises :class:`UnsupportedLayerError` for a module that is not affine nor
    element-wise Lipschitz, for a network with no affine layer, and for
    anything but an ``nn.Sequential`` (a model that wraps one, like
    ``byzance.models.MLP``, is accepted through its ``net`` attribute).
    """
    if not isinstance(model, nn.Sequential) and isinstance(
        getattr(model, "net", None), nn.Sequential
    ):
        model = model.net
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayerError(
            f"faults need a torch.nn.Sequential of layers, got {type(model).__name__}; "
            "rebuild the model as nn.Sequential(...) (byzance.models.MLP: pass model.net)."
        )
    if not input_shape or any(int(s) < 1 for s in input_shape):
        raise InvalidParameterError(
            f"input_shape must be one input's shape, like (64,) or (1, 8, 8); got {input_shape}."
        )
    modules = list(model)
    prefix: list[nn.Module] = []
    groups: list[tuple[int, list[tuple[int, nn.Module]]]] = []
    if len({id(m) for m in modules}) != len(modules):
        raise UnsupportedLayerError(
            "the same module object appears twice in the Sequential; a failure hooked on it "
            "would fire at both places. Use a separate instance at each position."
        )
    for i, m in enumerate(modules):
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) and m.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"layer {i}: padding_mode={m.padding_mode!r} repeats inputs at the border; "
                "the bounds assume zero padding."
            )
        if isinstance(m, AFFINE):
            groups.append((i, [(i, m)]))
            continue
        lipschitz_constant(m)  # raises for unsupported modules
        if groups:
            groups[-1][1].append((i, m))
        else:
            prefix.append(m)
    if not groups:
        raise UnsupportedLayerError("the network has no Linear or Conv layer: nothing can fail.")
    blocks = []
    with torch.no_grad():
        first = next(model.parameters())
        h = torch.zeros(1, *input_shape, dtype=first.dtype, device=first.device)
        for m in prefix:
            h = m(h)
        for affine_index, members in groups:
            affine = members[0][1]
            elementwise = tuple(m for _, m in members[1:])
            try:
                h = affine(h)
            except RuntimeError as err:
                raise InvalidParameterError(
                    f"input_shape {tuple(input_shape)} does not fit layer {affine_index} "
                    f"({affine}): {err}"
                ) from None
            for m in elementwise:
                h = m(h)
            blocks.append(
                Block(
                    affine=affine,
                    elementwise=elementwise,
                    affine_index=affine_index,
                    last_index=members[-1][0],
                    lipschitz=math.prod(lipschitz_constant(m) for m in elementwise),
                    shape=tuple(h.shape[1:]),
                )
            )
    return Network(
        model=model, prefix=tuple(prefix), blocks=tuple(blocks), input_shape=tuple(input_shape)
    )
