"""Every worker's gradient in one vectorized call (torch.func), and the loop it replaces."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def flatten_params(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one flat vector (d,), in ``named_parameters`` order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def set_flat_grad(model: nn.Module, flat: torch.Tensor) -> None:
    """Write the flat vector ``flat`` (d,) into the parameters' ``.grad``."""
    offset = 0
    for p in model.parameters():
        k = p.numel()
        p.grad = flat[offset : offset + k].view_as(p).to(device=p.device, dtype=p.dtype, copy=True)
        offset += k


def unflatten_params(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row parameter dict of ``model`` from flat rows (k, d): each entry (k, *shape)."""
    out, offset = {}, 0
    for name, p in model.named_parameters():
        size = p.numel()
        out[name] = flat[:, offset : offset + size].reshape(flat.shape[0], *p.shape)
        offset += size
    return out


def worker_gradients(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    l2: float = 0.0,
    params: torch.Tensor | dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients and losses of k workers on their own batches, in one vmap call.

    Args:
        model: the model (its current parameters are used, not modified, unless
            ``params`` gives each worker its own).
        loss_fn: mean loss of a batch, ``loss_fn(outputs, targets)``.
        x: the workers' batches, shape (k, B, *input_shape).
        y: their targets, shape (k, B).
        l2: each worker's objective adds (l2 / 2) |theta|^2 (part of what is
            aggregated, unlike the server optimizer's weight decay).
        params: each worker's own flat parameters, shape (k, d), or per-parameter
            tensors ``{name: (k, *shape)}``; None: the model's.

    Returns:
        Flat gradients (k, d) in ``named_parameters`` order, and losses (k,).
        With ``params`` given per parameter, the gradients come the same way,
        ``{name: (k, *shape)}``: a caller stepping them (federated local
        steps) then never concatenates the (k, d) matrix.
    """
    if params is None:
        shared, in_dims = {name: p.detach() for name, p in model.named_parameters()}, None
    elif isinstance(params, dict):
        shared, in_dims = params, 0
    else:
        shared, in_dims = unflatten_params(model, params), 0

    def batch_loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(functional_call(model, p, (xb,)), yb)
        if l2:
            loss = loss + 0.5 * l2 * sum(t.square().sum() for t in p.values())
        return loss

    grads, losses = vmap(grad_and_value(batch_loss), in_dims=(in_dims, 0, 0))(shared, x, y)
    if isinstance(params, dict):
        return grads, losses
    k = x.shape[0]
    return torch.cat([g.reshape(k, -1) for g in grads.values()], dim=1), losses


def loop_gradients(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, l2: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same as :func:`worker_gradients` with a Python loop over workers (reference and benchmark)."""
    grads, losses = [], []
    params = list(model.parameters())
    for xb, yb in zip(x, y, strict=True):
        loss = loss_fn(model(xb), yb)
        if l2:
            loss = loss + 0.5 * l2 * sum(t.square().sum() for t in params)
        g = torch.autograd.grad(loss, params)
        grads.append(torch.cat([t.reshape(-1) for t in g]))
        losses.append(loss.detach())
    return torch.stack(grads), torch.stack(losses)
