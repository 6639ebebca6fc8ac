# ruff: noqa: RUF009 (key() declares a dataclass field)
"""The config system's parts: type rules, ranges, sections, TOML writing, the one suggestion helper."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from byzance.errors import closest, did_you_mean
from byzance.runs.schema import (
    ConfigError,
    Schema,
    check_params,
    convert,
    key,
    matches,
    toml_value,
)

SRC = Path(__file__).parents[2] / "src" / "byzance"


@dataclass
class Toy:
    name: str = key("a", "main", "a name", choices=("a", "b"))
    count: int = key(2, "main", "a count", ge=1)
    rate: float = key(0.5, "main", "a rate", gt=0, lt=1)
    flag: bool = key(False, "extra", "a flag")
    sizes: list[int] = key([1], "extra", "sizes", ge=0)
    table: dict[str, Any] = key({}, "extra", "a table")
    auto: int = key(-1, "extra", "or automatic", ge=0, special={-1: "automatic"})


TOY = Schema(Toy, what="toy config")


@pytest.mark.parametrize(
    ("kind", "value", "text", "out"),
    [
        (bool, True, False, True),
        (bool, "yes", True, True),
        (bool, "No", True, False),
        (bool, "1", True, True),
        (bool, "0", True, False),
        (int, 3, False, 3),
        (int, "3", True, 3),
        (float, 3, False, 3.0),
        (float, "1e-3", True, 1e-3),
        (str, "x", False, "x"),
        (list[int], "1, 2,3", True, [1, 2, 3]),
        (list[int], "[1, 2]", True, [1, 2]),
        (list[str], "nnm", True, ["nnm"]),
        (list[list[int]], [[1], [2, 3]], False, [[1], [2, 3]]),
        (dict[str, Any], "{s = 2}", True, {"s": 2}),
        (dict[str, str], {"2": "crash@1"}, False, {"2": "crash@1"}),
        (int | None, None, False, None),
        (float | None, 2, False, 2.0),
    ],
)
def test_type_rules_accept(kind, value, text, out):
    result = convert(kind, value, text=text)
    assert result == out and type(result) is type(out)


@pytest.mark.parametrize(
    ("kind", "value", "text"),
    [
        (bool, "maybe", True),
        (bool, "yes", False),  # a TOML file has real booleans
        (bool, 1, False),
        (int, True, False),
        (int, 2.0, False),
        (int, "2.5", True),
        (int, "3", False),
        (float, "nan", True),
        (float, math.inf, False),
        (float, True, False),
        (str, 3, False),
        (list[int], [1, "2"], False),
        (list[int], "1,x", True),
        (dict[str, Any], "{s = }", True),
        (dict[str, str], {"2": 3}, False),
    ],
)
def test_type_rules_refuse(kind, value, text):
    assert matches(kind, value, text=text) is False


def test_ranges_choices_and_special_values():
    assert TOY.convert("auto", -1) == -1
    for name, value, match in [
        ("count", 0, "'count': 0 is not an integer >= 1"),
        ("rate", 1.0, r"'rate': 1.0 is not a finite number in \(0, 1\)"),
        ("sizes", [1, -1], r"'sizes': \[1, -1\] is not a list of integers >= 0 \(-1 in"),
        ("auto", -2, r"'auto': -2 is not an integer >= 0 \(or -1: automatic\)"),
        ("name", "c", "unknown value 'c'. Accepted: a, b"),
    ]:
        with pytest.raises(ConfigError, match=match):
            TOY.convert(name, value)


def test_sections_flat_mixed_and_writing(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text('count = 3\n[extra]\nflag = true\ntable = { "a b" = [1, 2.5, "x"] }\n')
    values = TOY.read(path, {"rate": "0.25", "sizes": "4,5"})
    assert values == {
        "count": 3,
        "rate": 0.25,
        "flag": True,
        "sizes": [4, 5],
        "table": {"a b": [1, 2.5, "x"]},
    }
    toy = Toy(**values)
    text = TOY.dumps(toy)
    assert "[main]" in text and "[extra]" in text and "# a rate" in text
    path.write_text(text)
    assert Toy(**TOY.read(path)) == toy


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        'quote " and \\ backslash',
        "tab\tnew\nline\x7f\x01",
        "ünïcode ✓",
        1e-300,
        -0.0,
        [],
        {},
    ],
)
def test_toml_values_read_back(value):
    assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value


def test_sections_and_keys_may_not_share_names():
    @dataclass
    class Clash:
        main: int = key(1, "main", "clashes with its section")

    with pytest.raises(TypeError, match="share names"):
        Schema(Clash, what="clash")


def test_check_params_names_and_values():
    def component(x, f, *, scale: float = 1.0, steps: int = 3, anything=None):
        return x

    check_params("p", "component 'c'", component, {"scale": 2, "anything": "ok"}, skip=2)
    with pytest.raises(
        ConfigError, match=r"'p': component 'c' has no parameter 'scal'\. Did you mean 'scale'"
    ):
        check_params("p", "component 'c'", component, {"scal": 2}, skip=2)
    with pytest.raises(ConfigError, match=r"'p': steps = 2.5 is not an integer \(a parameter of"):
        check_params("p", "component 'c'", component, {"steps": 2.5}, skip=2)
    with pytest.raises(ConfigError, match="has no parameter 'f'"):
        check_params("p", "component 'c'", component, {"f": 1}, skip=2)


def test_one_suggestion_helper():
    assert did_you_mean("krun", ["krum", "median"]) == " Did you mean 'krum'?"
    assert did_you_mean("zzz", ["krum", "median"]) == ""
    assert closest("medain", {"median", "mean"}) == "median"


def test_get_close_matches_is_called_in_exactly_one_place():
    places = [
        str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "get_close_matches" in p.read_text()
    ]
    assert places == ["errors.py"]
