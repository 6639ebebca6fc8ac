"""Shared fixtures: the devices that device-dependent tests run over."""

from __future__ import annotations

import pytest
import torch

from byzance.devices import available_devices

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each available device in turn: the CPU everywhere, CUDA where present (else skipped)."""
    return torch.device(request.param)


__all__ = ["DEVICES", "available_devices"]
