"""Seeded, batched image augmentation on tensors: random crop with padding, horizontal flip.

Every function takes images of shape (..., C, H, W) (the simulator holds a
step's batches as (n_workers, B, C, H, W)), draws one crop offset and one flip
per image from the given :class:`torch.Generator`, and returns a new tensor of
the same shape, dtype and device. No Python loop over images: the crop is two
``gather`` calls with per-image indices, the flip is folded into the column
indices. The same generator state gives the same output on the same device.

    >>> import torch
    >>> from byzance.data import augment
    >>> x = torch.randn(4, 8, 3, 32, 32)                    # 4 workers x 8 images
    >>> g = torch.Generator().manual_seed(0)                # on x's device
    >>> augment.standard_augmentation(x, g).shape
    torch.Size([4, 8, 3, 32, 32])
    >>> augment.get("crop_flip") is augment.standard_augmentation
    True

A :class:`byzance.data.Dataset` names its augmentation in ``augment``
(``"crop_flip"`` for CIFAR); ``get(name)`` returns the function, to apply to
training batches only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from byzance.errors import InvalidParameterError, UnknownNameError, did_you_mean

__all__ = ["AUGMENTATIONS", "get", "random_crop_flip", "standard_augmentation"]


def _check(x: torch.Tensor, generator: torch.Generator, padding: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidParameterError(f"augmentation needs images (..., C, H, W), got {shape}.")
    if not isinstance(generator, torch.Generator):
        raise InvalidParameterError(
            f"augmentation needs a torch.Generator, got {type(generator).__name__}."
        )
    if generator.device.type != x.device.type:
        raise InvalidParameterError(
            f"the generator is on {generator.device} but the images are on {x.device}: "
            f"make it with torch.Generator(device={str(x.device)!r})."
        )
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise InvalidParameterError(f"padding must be an integer >= 0, got {padding!r}.")


def random_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    padding: int = 4,
    flip: bool = True,
    fill: float = 0.0,
) -> torch.Tensor:
    """Each image padded by ``padding`` pixels of ``fill``, cropped back to H x W at a random
    offset, then mirrored left-right with probability 1/2 (if ``flip``).

    ``x`` (..., C, H, W), any dtype and device; ``generator`` on ``x``'s device.
    Draws, in this order, the row offsets (N,), the column offsets (N,) and the
    flips (N,) for the N = prod(...) images, offsets uniform in 0..2*padding
    (``padding`` is no shift). Output: same shape, dtype and device; output
    pixel (i, j) of an image with offsets (dy, dx) and no flip is input pixel
    (i + dy - padding, j + dx - padding), or ``fill`` outside the image; with
    the flip, output column j is the crop's column W - 1 - j. For standardized
    images ``fill = 0`` pads with the mean colour.
    """
    _check(x, generator, padding)
    *lead, c, h, w = x.shape
    images = x.reshape(-1, c, h, w)
    n, device = images.shape[0], x.device
    span = 2 * padding + 1
    dy = torch.randint(0, span, (n,), generator=generator, device=device)
    dx = torch.randint(0, span, (n,), generator=generator, device=device)
    flips = (
        torch.randint(0, 2, (n,), generator=generator, device=device).bool()
        if flip
        else torch.zeros(n, dtype=torch.bool, device=device)
    )
    rows = torch.arange(h, device=device) + (dy - padding)[:, None]  # (n, h) source rows
    cols = torch.arange(w, device=device).expand(n, w)
    cols = torch.where(flips[:, None], (w - 1) - cols, cols) + (dx - padding)[:, None]  # (n, w)
    inside = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[
        :, None, None, :
    ]
    rows_idx = rows.clamp(0, h - 1)[:, None, :, None].expand(n, c, h, w)
    cols_idx = cols.clamp(0, w - 1)[:, None, None, :].expand(n, c, h, w)
    out = images.gather(2, rows_idx).gather(3, cols_idx)
    out = torch.where(inside, out, torch.tensor(fill, dtype=x.dtype, device=device))
    return out.reshape(*lead, c, h, w)


def standard_augmentation(
    x: torch.Tensor, generator: torch.Generator, *, padding: int = 4, flip: bool = True
) -> torch.Tensor:
    """The standard CIFAR augmentation: random crop with zero padding 4 and horizontal flip.

    ``x`` (..., C, H, W) -> same shape, dtype and device; see :func:`random_crop_flip`.
    """
    return random_crop_flip(x, generator, padding=padding, flip=flip)


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "crop_flip": standard_augmentation,
}
"""Augmentations by the name a :class:`byzance.data.Dataset` gives in ``augment``."""


def get(name: str) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The augmentation ``name``: a function ``(x (..., C, H, W), generator) -> same shape``."""
    try:
        return AUGMENTATIONS[name]
    except KeyError:
        raise UnknownNameError(
            f"no augmentation named {name!r}.{did_you_mean(name, AUGMENTATIONS)} "
            f"Known: {', '.join(sorted(AUGMENTATIONS))}."
        ) from None
