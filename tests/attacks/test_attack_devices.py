"""Every gradient attack on every available device and float dtype.

The result has shape (f, d), on the honest vectors' device and dtype, with a
generator on that device (``tests/conftest.py``'s ``device`` fixture: the CPU
everywhere, CUDA where present). On the CPU, half-precision results of the
deterministic attacks are compared with float32 on the same (rounded) values.
"""

from __future__ import annotations

import pytest
import torch

from byzance import attacks

F = 3
H = 9
D = 50
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
# Parameters for the test: large_norm's default norm (1e9) is beyond float16's range
# (65504), where it becomes inf (see test_large_norm_default_overflows_float16).
PARAMS = {"large_norm": {"scale": 1e4}, "adaptive": {"span": 10.0}}
NEEDS_RULE = {"adaptive", "hidden_vulnerability"}
NONFINITE = {"nan", "inf"}
# Searched strengths may land elsewhere at another precision: not compared across dtypes.
SEARCHED = {"adaptive", "hidden_vulnerability"}


def _honest(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(H, D, generator=torch.Generator().manual_seed(0)) + 0.5
    return x.to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).removeprefix("torch."))
@pytest.mark.parametrize("name", attacks.names("gradient"))
def test_attack_keeps_device_and_dtype(device, name, dtype):
    attack = attacks.get(name, **PARAMS.get(name, {}))
    honest = _honest(device, dtype)
    rule = "median" if name in NEEDS_RULE else None

    def run(x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator(device=x.device).manual_seed(1)
        return attack(x, F, rule=rule, generator=gen)

    out = run(honest)
    assert out.shape == (F, D)
    assert out.device == honest.device
    assert out.dtype == dtype
    if name not in NONFINITE:
        assert bool(torch.isfinite(out).all())
    if device.type == "cpu" and dtype != torch.float32 and name not in NONFINITE | SEARCHED:
        want = run(honest.float())  # float32 on the very same (rounded) values
        tol = TOLERANCE[dtype]
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(out.float(), want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("direction", ["random", "fixed"])
def test_large_norm_directions_on_the_device(device, direction):
    honest = _honest(device, torch.float32)
    gen = torch.Generator(device=device).manual_seed(0)
    out = attacks.get("large_norm", direction=direction)(honest, F, generator=gen)
    assert out.device == honest.device
    torch.testing.assert_close(
        torch.linalg.vector_norm(out.double(), dim=1),
        torch.full((F,), 1e9, dtype=torch.float64, device=device),
    )


def test_gaussian_without_a_generator_draws_on_the_device(device):
    honest = _honest(device, torch.float32)
    out = attacks.get("gaussian")(honest, F)
    assert out.device == honest.device and bool(torch.isfinite(out).all())


def test_a_cpu_generator_serves_any_device(device):
    # A CPU generator draws on the CPU, and the draw moves: the same vectors everywhere.
    honest = _honest(device, torch.float32)
    out = attacks.get("gaussian")(honest, F, generator=torch.Generator().manual_seed(5))
    want = attacks.get("gaussian")(honest.cpu(), F, generator=torch.Generator().manual_seed(5))
    assert out.device == honest.device
    torch.testing.assert_close(out.cpu(), want)


def test_large_norm_default_saturates_in_float16():
    # A norm of 1e9 is not representable in float16 (max 65504): the vectors saturate at
    # the largest finite value (they used to become inf, silently the inf attack).
    # bfloat16 (max 3e38) keeps the norm.
    honest = _honest(torch.device("cpu"), torch.float16)
    out = attacks.get("large_norm")(honest, F)
    assert bool(torch.isfinite(out).all())
    assert float(out.abs().max()) == torch.finfo(torch.float16).max
    bf16 = attacks.get("large_norm")(honest.bfloat16(), F)
    assert bool(torch.isfinite(bf16).all())
