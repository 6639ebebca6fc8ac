"""ResNet-20 and ResNet-18 (CIFAR) on generated fixtures, and registering a model of one's own."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

from byzance import models
from byzance.errors import InvalidParameterError
from byzance.sim.gradients import loop_gradients, worker_gradients


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [32, 16])
def test_resnet20_output_shape(size):
    torch.manual_seed(0)
    model = models.build("resnet20", (3, size, size), 10)
    assert model(_images(4, 3, size, size)).shape == (4, 10)


@pytest.mark.parametrize("size", [32, 16])
def test_resnet18_output_shape(size):
    torch.manual_seed(0)
    model = models.build("resnet18", (3, size, size), 10, width=0.125)
    assert model(_images(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 15, 9)])
def test_other_image_shapes_and_regression(shape):
    model = models.build("resnet20", shape, 0, width=0.5)
    assert model(_images(3, *shape)).shape == (3,)
    assert models.build("resnet18", shape, 7, width=0.0625)(_images(3, *shape)).shape == (3, 7)


def test_parameter_counts():
    # He et al. 2016 section 4.2: 0.27M; option A shortcuts have no parameters.
    assert _count(models.build("resnet20", (3, 32, 32), 10)) == 269_722
    assert _count(models.build("resnet20", (3, 32, 32), 10, norm="batch")) == 269_722
    # The usual CIFAR ResNet-18: 11.17M (norm weights and biases as BatchNorm's).
    assert _count(models.build("resnet18", (3, 32, 32), 10)) == 11_173_962
    # The count does not depend on the image size (global average pooling).
    assert _count(models.build("resnet20", (3, 16, 16), 10)) == 269_722


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_no_buffers(name):
    """Nothing that forward could update: vmap over functional_call sees every tensor."""
    for norm in ("group", "batch", "none"):
        model = models.build(name, (3, 16, 16), 10, norm=norm, width=0.25)
        assert list(model.buffers()) == []


@pytest.mark.parametrize("norm", ["group", "batch", "none"])
def test_deterministic_under_a_seed(norm):
    x = _images(4, 3, 16, 16)
    torch.manual_seed(7)
    a = models.build("resnet20", (3, 16, 16), 10, norm=norm)
    torch.manual_seed(7)
    b = models.build("resnet20", (3, 16, 16), 10, norm=norm)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert torch.equal(a(x), b(x))
    torch.manual_seed(8)
    c = models.build("resnet20", (3, 16, 16), 10, norm=norm)
    assert not torch.equal(a.stem.weight, c.stem.weight)


def _loss_after_steps(model: nn.Module, steps: int) -> tuple[float, float]:
    """First and last loss of ``steps`` SGD steps on 16 generated images of 4 classes.

    Each class is a fixed random 3x16x16 pattern; its images add unit noise.
    """
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(16) % 4
    x = torch.randn(4, 3, 16, 16, generator=gen)[y] + torch.randn(16, 3, 16, 16, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


@pytest.mark.parametrize("norm", ["group", "batch", "none"])
def test_resnet20_sgd_lowers_the_loss(norm):
    torch.manual_seed(0)
    first, last = _loss_after_steps(models.build("resnet20", (3, 16, 16), 4, norm=norm), 12)
    assert last < 0.8 * first


def test_resnet18_sgd_lowers_the_loss():
    torch.manual_seed(0)
    model = models.build("resnet18", (3, 16, 16), 4, width=0.125)
    first, last = _loss_after_steps(model, 12)
    assert last < 0.8 * first


@pytest.mark.parametrize(
    ("name", "norm"),
    [("resnet20", "group"), ("resnet20", "batch"), ("resnet20", "none"), ("resnet18", "group")],
)
def test_vectorized_gradients_equal_the_loop(name, norm):
    torch.manual_seed(0)
    model = models.build(
        name, (3, 16, 16), 10, norm=norm, width=1.0 if name == "resnet20" else 0.125
    )
    workers, batch = 3, 4
    x = _images(workers, batch, 3, 16, 16, seed=2)
    y = torch.randint(0, 10, (workers, batch), generator=torch.Generator().manual_seed(3))
    loss_fn = nn.functional.cross_entropy
    grads, losses = worker_gradients(model, loss_fn, x, y, l2=1e-3)
    ref_grads, ref_losses = loop_gradients(model, loss_fn, x, y, l2=1e-3)
    assert grads.shape == (workers, _count(model))
    torch.testing.assert_close(losses, ref_losses, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=1e-5)
    # Each worker's own batch: different workers, different gradients.
    assert not torch.allclose(grads[0], grads[1])


def test_vectorized_gradients_with_per_worker_parameters():
    torch.manual_seed(0)
    model = models.build("resnet20", (3, 8, 8), 10, width=0.5)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    params = flat + 0.01 * _images(2, flat.numel(), seed=4)
    x, y = _images(2, 4, 3, 8, 8, seed=5), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    grads, _ = worker_gradients(model, nn.functional.cross_entropy, x, y, params=params)
    for k in range(2):
        with torch.no_grad():
            offset = 0
            for p in model.parameters():
                p.copy_(params[k, offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        ref, _ = loop_gradients(model, nn.functional.cross_entropy, x[k : k + 1], y[k : k + 1])
        torch.testing.assert_close(grads[k], ref[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(64,), (1, 64), (2, 3, 32, 32), (3, 0, 32)])
def test_non_image_input_is_refused(shape):
    with pytest.raises(InvalidParameterError, match=r"images \(channels, height, width\)"):
        models.build("resnet20", shape, 10)
    with pytest.raises(InvalidParameterError, match="resnet18 needs images"):
        models.build("resnet18", shape, 10)


def test_bad_parameters_are_refused():
    with pytest.raises(InvalidParameterError, match="norm = 'layer' is not known"):
        models.build("resnet20", (3, 32, 32), 10, norm="layer")
    with pytest.raises(InvalidParameterError, match="groups = 3 does not divide"):
        models.build("resnet20", (3, 32, 32), 10, groups=3)
    with pytest.raises(InvalidParameterError, match="width must be positive"):
        models.build("resnet18", (3, 32, 32), 10, width=0)


@pytest.fixture
def own_registry(monkeypatch):
    """Registrations made by a test are forgotten after it."""
    monkeypatch.setattr(models._MODELS, "_items", dict(models._MODELS._items))


def test_register_a_model_of_ones_own(own_registry):
    def tiny(input_shape: tuple[int, ...], num_classes: int, hidden: int = 5) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(16, hidden), nn.Linear(hidden, num_classes))

    models.register("tiny", tiny, "two linear layers")
    assert "tiny" in models.names()
    model = models.build("tiny", (1, 4, 4), 3, hidden=2)
    assert model(torch.zeros(5, 1, 4, 4)).shape == (5, 3)
    with pytest.raises(ValueError, match="already registered"):
        models.register("tiny", tiny)
    with pytest.raises(InvalidParameterError, match="must be callable"):
        models.register("not_a_model", 42)  # type: ignore[arg-type]


def test_module_docstring_example_runs(own_registry):
    result = doctest.testmod(models, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
