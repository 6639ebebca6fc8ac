"""Mimic: copy the honest worker that skews the aggregate most."""

from __future__ import annotations

import torch

from byzance.attacks._registry import GradientAttack, register


def _mimic(honest: torch.Tensor, f: int, *, rule=None, generator=None) -> torch.Tensor:
    """All f copy the honest vector that lies furthest along the honest vectors' main axis.

    Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous
    Datasets via Bucketing", ICLR 2022 (mimic attack). The main axis is the top
    principal direction z of the centered honest vectors; the copied worker is
    argmax_i |<z, x_i - mean>|, which over-represents one worker's data under
    heterogeneity without ever sending an outlier. Costs one (h x h) eigen
    decomposition of the centered Gram matrix.

    Returns:
        Shape (f, d).
    """
    centered = honest - honest.mean(dim=0)
    if centered.dtype in (torch.float16, torch.bfloat16):
        centered = centered.float()  # the Gram's sums overflow float16
    gram = (centered @ centered.T).double()
    _, vectors = torch.linalg.eigh(gram)  # top eigenvector of the Gram = projections on z
    chosen = torch.argmax(vectors[:, -1].abs()).reshape(1)  # a device index: no host sync
    return honest.index_select(0, chosen).expand(f, -1).clone()


mimic = register(
    GradientAttack(
        name="mimic",
        impl=_mimic,
        paper="Karimireddy, He, Jaggi, Byzantine-Robust Learning on Heterogeneous Datasets "
        "via Bucketing, ICLR 2022",
        summary="copy the honest worker furthest along the main axis of the honest vectors",
    )
)
