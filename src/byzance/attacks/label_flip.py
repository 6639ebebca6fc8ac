"""Label flipping, a data attack."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from byzance.attacks._registry import DataAttack, register
from byzance.errors import InvalidParameterError


def _label_flip(
    labels: torch.Tensor, num_classes: int, *, permutation: Sequence[int] | None = None
) -> torch.Tensor:
    """Relabel y as C - 1 - y, or as ``permutation[y]``.

    The data-poisoning baseline of Biggio, Nelson, Laskov, "Poisoning Attacks
    against Support Vector Machines", ICML 2012, and of the Byzantine-ML
    benchmarks (e.g. Allouah et al., AISTATS 2023). The worker computes honest
    gradients on the flipped labels.

    Args:
        labels: integer class indices, any shape.
        num_classes: C.
        permutation: a permutation of range(C); C - 1 - y when None.

    Returns:
        The new labels, same shape and dtype.
    """
    if permutation is None:
        return num_classes - 1 - labels
    perm = torch.as_tensor(permutation, dtype=labels.dtype, device=labels.device)
    if perm.shape != (num_classes,) or sorted(perm.tolist()) != list(range(num_classes)):
        raise InvalidParameterError(
            f"label_flip: permutation must be a permutation of range({num_classes}); "
            f"got {perm.tolist()}."
        )
    return perm[labels]


label_flip = register(
    DataAttack(
        name="label_flip",
        impl=_label_flip,
        paper="Biggio, Nelson, Laskov, Poisoning Attacks against Support Vector Machines, ICML 2012",
        summary="labels y -> C - 1 - y, or a given permutation",
    )
)
