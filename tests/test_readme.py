"""The README's Python examples run, in order, as a reader would paste them."""

from __future__ import annotations

from pathlib import Path

from markdown_examples import python_blocks, run_python_blocks

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_blocks_run():
    text = README.read_text()
    assert len(python_blocks(text)) >= 2
    run_python_blocks(text, str(README))
