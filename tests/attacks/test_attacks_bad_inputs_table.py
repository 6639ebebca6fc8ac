"""Bad inputs to the attacks, one row each: a clear error, or a finite output ("survived")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from byzance import attacks
from byzance.errors import InvalidParameterError, ShapeError


def _honest(h: int = 7, d: int = 4, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(h, d, generator=torch.Generator().manual_seed(0)).to(dtype)


@dataclass(frozen=True)
class Row:
    id: str
    call: Callable[[], Any]
    error: type[Exception] | None = None  # None: "survived" (a finite result)
    match: str = ""


def _attack(name: str, rule: str | None = None, **params: Any) -> Callable[[], Any]:
    return lambda: attacks.get(name)(_honest(), 2, rule=rule, **params)


def _bind(name: str, **params: Any) -> Callable[[], Any]:
    return lambda: attacks.get(name, **params)


def _labels(**params: Any) -> Callable[[], Any]:
    return lambda: attacks.get("label_flip")(torch.tensor([0, 1, 1, 0]), **params)


ROWS = [
    # -- label_flip --------------------------------------------------------------
    Row(
        "label_flip num_classes=2.5",
        _labels(num_classes=2.5),
        InvalidParameterError,
        "num_classes must be an integer",
    ),
    Row(
        "label_flip num_classes=True",
        _labels(num_classes=True),
        InvalidParameterError,
        "num_classes",
    ),
    Row(
        "label_flip num_classes='3'", _labels(num_classes="3"), InvalidParameterError, "num_classes"
    ),
    Row(
        "label_flip permutation='abc'",
        _labels(num_classes=3, permutation="abc"),
        InvalidParameterError,
        "parameter permutation",
    ),
    Row(
        "label_flip permutation=5",
        _labels(num_classes=3, permutation=5),
        InvalidParameterError,
        "parameter permutation",
    ),
    Row(
        "label_flip bogus parameter",
        _labels(num_classes=3, bogus=1),
        InvalidParameterError,
        "no parameter 'bogus'",
    ),
    Row(
        "get label_flip permutation=5",
        _bind("label_flip", permutation=5),
        InvalidParameterError,
        "parameter permutation",
    ),
    # -- gradient attacks' parameters of the wrong type ---------------------------
    Row(
        "sign_flip scale='a'",
        _attack("sign_flip", scale="a"),
        InvalidParameterError,
        "sign_flip: parameter scale",
    ),
    Row("ipm epsilon='x'", _attack("ipm", epsilon="x"), InvalidParameterError, "parameter epsilon"),
    Row(
        "gaussian sigma='a'",
        _attack("gaussian", sigma="a"),
        InvalidParameterError,
        "parameter sigma",
    ),
    Row("gaussian mu=None", _attack("gaussian", mu=None), InvalidParameterError, "parameter mu"),
    Row("inf sign='a'", _attack("inf", sign="a"), InvalidParameterError, "parameter sign"),
    Row(
        "constant value='a'",
        _attack("constant", value="a"),
        InvalidParameterError,
        "parameter value",
    ),
    Row(
        "constant value=nan",
        _attack("constant", value=float("nan")),
        InvalidParameterError,
        "parameter value",
    ),
    Row("alie z='a'", _attack("alie", z="a"), InvalidParameterError, "parameter z"),
    Row(
        "hidden_vulnerability E='a'",
        _attack("hidden_vulnerability", E="a"),
        InvalidParameterError,
        "parameter E",
    ),
    Row(
        "hidden_vulnerability coordinates='a'",
        _attack("hidden_vulnerability", E=1.0, coordinates="a"),
        InvalidParameterError,
        "parameter coordinates",
    ),
    Row(
        "hidden_vulnerability coordinates=[0.5]",
        _attack("hidden_vulnerability", E=1.0, coordinates=[0.5]),
        InvalidParameterError,
        "parameter coordinates",
    ),
    Row(
        "adaptive base=5",
        _attack("adaptive", rule="median", base=5),
        InvalidParameterError,
        "parameter base",
    ),
    Row(
        "adaptive span='a'",
        _attack("adaptive", rule="median", span="a"),
        InvalidParameterError,
        "parameter span",
    ),
    Row(
        "large_norm direction=5",
        _attack("large_norm", direction=5),
        InvalidParameterError,
        "parameter direction",
    ),
    Row(
        "large_norm seed='a'",
        _attack("large_norm", seed="a"),
        InvalidParameterError,
        "parameter seed",
    ),
    Row(
        "large_norm scale=nan",
        _attack("large_norm", scale=float("nan")),
        InvalidParameterError,
        "parameter scale",
    ),
    Row(
        "get sign_flip scale='a'",
        _bind("sign_flip", scale="a"),
        InvalidParameterError,
        "parameter scale",
    ),
    Row("sign_flip scale=2 (int for a float)", _attack("sign_flip", scale=2)),
    Row(
        "inf sign=-1.0 (integral float)",
        lambda: attacks.get("inf")(_honest(), 2, sign=-1.0).isinf().all(),
    ),
    # -- parameters out of range, refused where they are bound -----------------------
    Row(
        "get large_norm scale=-1",
        _bind("large_norm", scale=-1.0),
        InvalidParameterError,
        "need scale >= 0",
    ),
    Row(
        "get large_norm seed=-1",
        _bind("large_norm", seed=-1),
        InvalidParameterError,
        "need seed >= 0",
    ),
    Row(
        "get gaussian sigma=-1",
        _bind("gaussian", sigma=-1.0),
        InvalidParameterError,
        "need sigma >= 0",
    ),
    # -- large_norm saturates in small dtypes --------------------------------------
    *(
        Row(
            f"large_norm scale=1e9 in {dtype}",
            (lambda dtype=dtype: attacks.get("large_norm")(_honest(dtype=dtype), 2)),
        )
        for dtype in (torch.float16, torch.bfloat16, torch.float32)
    ),
    Row("large_norm scale=1e300 in float32", _attack("large_norm", scale=1e300)),
    Row(
        "adaptive large_norm in float16",
        lambda: attacks.get("adaptive", base="large_norm")(
            _honest(dtype=torch.float16), 2, rule="median"
        ),
    ),
    # -- the meta device -------------------------------------------------------------
    Row(
        "sign_flip on the meta device",
        lambda: attacks.get("sign_flip")(torch.zeros(5, 3, device="meta"), 1),
        ShapeError,
        "meta device",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row) -> None:
    if row.error is None:
        out = row.call()
        if isinstance(out, torch.Tensor):
            assert bool(torch.isfinite(out).all()) or out.dtype == torch.bool
            if out.dtype == torch.bool:
                assert bool(out.all())
    else:
        with pytest.raises(row.error, match=row.match) as info:
            row.call()
        assert "\n" not in str(info.value)


def test_label_flip_keeps_integer_labels() -> None:
    out = attacks.get("label_flip")(torch.tensor([0, 1, 2]), num_classes=3)
    assert out.dtype == torch.int64
    assert out.tolist() == [2, 1, 0]


def test_large_norm_saturates_along_its_direction() -> None:
    dtype = torch.float16  # largest 65504: a norm of 1e9 does not fit
    honest = _honest(dtype=dtype)
    out = attacks.get("large_norm")(honest, 1)[0].double()
    assert float(out.abs().max()) == torch.finfo(dtype).max
    # Still against the honest mean.
    assert float(out @ honest.double().mean(dim=0)) < 0
