"""Augmentation: the random crop with padding and the horizontal flip, seeded and batched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from byzance.data import augment
from byzance.data.augment import random_crop_flip, standard_augmentation
from byzance.errors import InvalidParameterError, UnknownNameError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference(x: torch.Tensor, seed: int, padding: int, flip: bool = True) -> torch.Tensor:
    """One image at a time, by padding and slicing, with the documented draws (order: dy, dx, flip)."""
    *_, c, h, w = x.shape
    images = x.reshape(-1, c, h, w)
    n, g = len(images), gen(seed)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    flips = torch.randint(0, 2, (n,), generator=g).bool() if flip else torch.zeros(n, dtype=bool)
    out = []
    for i in range(n):
        padded = F.pad(images[i], (padding,) * 4)
        crop = padded[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out.append(crop.flip(-1) if flips[i] else crop)
    return torch.stack(out).reshape(x.shape)


@pytest.mark.parametrize("shape", [(6, 3, 8, 8), (4, 5, 3, 8, 8), (2, 1, 5, 7)])
def test_matches_pad_slice_flip_reference(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    for padding in (0, 1, 4):
        got = random_crop_flip(x, gen(3), padding=padding)
        assert torch.equal(got, reference(x, 3, padding))


def test_shape_dtype_device_kept_and_input_untouched() -> None:
    x = torch.randint(0, 256, (3, 4, 3, 32, 32), dtype=torch.uint8)
    before = x.clone()
    out = standard_augmentation(x, gen(0))
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    assert torch.equal(x, before)


def test_deterministic_under_a_seed_and_seeds_differ() -> None:
    x = torch.randn(32, 3, 16, 16)
    a, b = standard_augmentation(x, gen(7)), standard_augmentation(x, gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, standard_augmentation(x, gen(8)))
    g = gen(7)  # the generator advances: two calls in a row give two augmentations
    assert torch.equal(standard_augmentation(x, g), a)
    assert not torch.equal(standard_augmentation(x, g), a)


def test_no_padding_no_flip_is_the_identity() -> None:
    x = torch.randn(5, 3, 8, 8)
    assert torch.equal(random_crop_flip(x, gen(0), padding=0, flip=False), x)


def test_flip_only_mirrors_each_image_independently() -> None:
    x = torch.arange(64 * 2 * 3, dtype=torch.float32).reshape(64, 1, 2, 3)
    out = random_crop_flip(x, gen(1), padding=0)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0 < int(mirrored.sum()) < 64  # some images flipped, not all


def test_crop_by_hand() -> None:
    # One 3x3 image, padding 1: every output is the image shifted by (dy - 1, dx - 1), zeros
    # coming in, possibly mirrored; shifted (+1, +1) unflipped it is [[0,0,0],[0,1,2],[0,4,5]].
    image = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    x = image.expand(400, 1, 3, 3)
    out = random_crop_flip(x, gen(2), padding=1)
    shifted = torch.tensor([[0.0, 0, 0], [0, 1, 2], [0, 4, 5]])
    assert any(torch.equal(o[0], shifted) for o in out)
    assert any(torch.equal(o[0], shifted.flip(-1)) for o in out)
    candidates = {
        (torch.flip(c, [-1]) if f else c).flatten().tolist().__repr__()
        for dy in range(3)
        for dx in range(3)
        for f in (False, True)
        for c in [F.pad(image[0, 0], (1, 1, 1, 1))[dy : dy + 3, dx : dx + 3]]
    }
    seen = {o[0].flatten().tolist().__repr__() for o in out}
    assert seen == candidates  # all 18 crops and flips occur, nothing else


def test_fill_value_pads() -> None:
    x = torch.ones(200, 1, 2, 2)
    out = random_crop_flip(x, gen(0), padding=1, flip=False, fill=-3.0)
    assert set(out.unique().tolist()) == {-3.0, 1.0}


def test_ten_thousand_images_in_one_call() -> None:
    # Vectorized: 10,000 CIFAR-sized images in one call (a Python loop would be slow; no timing).
    x = torch.randint(0, 256, (10, 1000, 3, 32, 32), dtype=torch.uint8)
    out = standard_augmentation(x, gen(0))
    assert out.shape == x.shape
    # Every offset in 0..8 in both directions and both flips are drawn.
    g = gen(0)
    dy = torch.randint(0, 9, (10_000,), generator=g)
    assert torch.bincount(dy, minlength=9).min() > 900


def test_registry_and_errors() -> None:
    assert augment.get("crop_flip") is standard_augmentation
    assert set(augment.AUGMENTATIONS) == {"crop_flip"}
    with pytest.raises(UnknownNameError, match="crop_flip"):
        augment.get("crop_flp")
    with pytest.raises(InvalidParameterError, match=r"\(\.\.\., C, H, W\)"):
        standard_augmentation(torch.zeros(4, 8), gen(0))
    with pytest.raises(InvalidParameterError, match="padding"):
        random_crop_flip(torch.zeros(1, 1, 4, 4), gen(0), padding=-1)
    with pytest.raises(InvalidParameterError, match="Generator"):
        standard_augmentation(torch.zeros(1, 1, 4, 4), 0)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_the_gpu_with_a_device_generator() -> None:
    x = torch.randn(4, 8, 3, 32, 32, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    out = standard_augmentation(x, g)
    assert out.device == x.device and out.shape == x.shape
    g2 = torch.Generator(device="cuda").manual_seed(0)
    assert torch.equal(out, standard_augmentation(x, g2))
    with pytest.raises(InvalidParameterError, match="generator is on"):
        standard_augmentation(x, gen(0))
