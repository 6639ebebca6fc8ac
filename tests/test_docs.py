"""The documentation: every Python example runs, and the site builds with --strict.

Pages are discovered (docs/**/*.md, including pages added later), and the
pages generated at build time from the registries are run too.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import byzance.aggregators as agg
import byzance.attacks as attacks
from markdown_examples import python_blocks, run_python_blocks

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if python_blocks(p.read_text()))
QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}


def _reference():
    """docs/gen/reference.py, the generator of the rule and attack pages."""
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "gen" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = _reference()
GENERATED = REFERENCE.pages()


@pytest.fixture
def at_root(monkeypatch):
    """Examples run as from the repository root, plotting without a display."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MPLBACKEND", "Agg")


def test_hand_written_pages_have_examples():
    found = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"index.md", "concepts.md"} <= found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_python_blocks_run(page, at_root):
    run_python_blocks(page.read_text(), str(page))


@pytest.mark.parametrize("path", sorted(GENERATED))
def test_generated_page_python_blocks_run(path, at_root):
    text = GENERATED[path]
    if not path.endswith("index.md"):
        assert python_blocks(text), f"{path} has no example"
    run_python_blocks(text, f"docs/{path} (generated)")


def test_every_rule_and_attack_has_a_page_with_requirement_paper_and_cost():
    for rule in agg.rules():
        page = GENERATED[f"rules/{rule.name}.md"]
        assert f"| requirement | `{rule.requirement}` |" in page
        assert f"| paper | {rule.paper} |" in page
        assert f"| cost | {REFERENCE.RULE_COSTS[rule.name]} |" in page
        assert f"[{rule.name}]({rule.name}.md)" in GENERATED["rules/index.md"]
    for attack in attacks.attacks():
        page = GENERATED[f"attacks/{attack.name}.md"]
        assert f"| paper | {attack.paper} |" in page
        assert f"| cost | {REFERENCE.ATTACK_COSTS[attack.name]} |" in page
        assert f"[{attack.name}]({attack.name}.md)" in GENERATED["attacks/index.md"]


def test_rule_page_shows_docstring_parameters_and_example():
    page = GENERATED["rules/geometric_median.md"]
    assert "| `max_iter` | `100` | iteration cap. |" in page
    assert "Weiszfeld" in page
    krum = GENERATED["rules/krum.md"]
    assert "```pycon\n>>> krum(" in krum
    assert "| largest f | n = 10: f <= 3, n = 20: f <= 8, n = 50: f <= 23 |" in krum


def test_a_rule_without_a_cost_stops_the_build(monkeypatch):
    reference = _reference()
    monkeypatch.delitem(reference.RULE_COSTS, "krum")
    with pytest.raises(ValueError, match=r"add \['krum'\]"):
        reference.pages()


def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, **QUIET, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, (
        f"mkdocs build --strict failed (run `make setup` for the docs extra):\n{done.stderr[-4000:]}"
    )
    for rule in agg.names():
        assert (site / "rules" / rule / "index.html").is_file()
    for attack in attacks.names():
        assert (site / "attacks" / attack / "index.html").is_file()
    cli = (site / "cli" / "index.html").read_text()
    assert "byzance train" in cli and "byzance grid" in cli
    assert "<code>aggregator_params</code>" in cli  # the run config's keys
    assert (site / "img" / "averaging.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (site / "img" / "demo_accuracy.png").is_file()  # the results page's images
    api = (site / "api" / "aggregators" / "index.html").read_text()
    assert "compose" in api
    for page in (site / "api").rglob("*.html"):
        assert ":class:<code>" not in page.read_text()  # docstring roles read as code
