"""The layers of the design (shared/design.md): data flows down, nothing imports upward.

Every ``import`` in ``src/byzance`` (module level or inside a function) is
read with ``ast``; an import of a package on a higher layer, or of a sibling
on the same layer, fails with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "byzance"

# Lowest first. Packages on one layer must not import each other.
LAYERS: list[set[str]] = [
    {"errors"},
    {"registry", "devices"},
    {"data", "models"},
    {"aggregators"},
    {"attacks"},
    {"sim"},
    {"runs"},
    {"distributed", "voting", "faults", "flower"},
    {"experiments"},
    {"cli", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _package(path: Path) -> str:
    part = path.relative_to(SRC).parts[0]
    return part.removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported byzance package) for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "byzance":  # from byzance import aggregators, attacks
                names = [f"byzance.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "byzance" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def _violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        if path.parent == SRC and path.name == "__init__.py":
            continue
        own = _package(path)
        for line, target in _imports(path):
            if target == own:
                continue
            if target not in RANK or own not in RANK:
                bad.append(f"{path.relative_to(SRC)}:{line}: {own} -> {target} (unknown layer)")
            elif RANK[target] >= RANK[own]:
                bad.append(f"{path.relative_to(SRC)}:{line}: {own} -> {target} (not downward)")
    return bad


def test_every_package_has_a_layer() -> None:
    packages = {_package(p) for p in SRC.iterdir() if p.name != "__init__.py"}
    packages -= {"__pycache__", "py.typed"}
    assert packages <= set(RANK), sorted(packages - set(RANK))


def test_nothing_imports_upward_or_sideways() -> None:
    assert _violations() == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from byzance.experiments import grid\n")
    assert _imports(bad) == [(2, "experiments")]


@pytest.mark.parametrize("old", ["dist"])
def test_no_package_is_named_like_a_build_output(old: str) -> None:
    assert not (SRC / old).exists()
