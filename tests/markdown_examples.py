"""Run the ```python blocks of a Markdown page, in order, in one namespace, as a reader would.

Shared by the README test and the docs tests. Blocks fenced as ```sh, ```text,
```toml, ```pycon, ... are not run.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block in ``text``."""
    return [
        (text.count("\n", 0, m.start("body")) + 1, textwrap.dedent(m.group("body")))
        for m in _BLOCK.finditer(text)
    ]


def run_python_blocks(text: str, where: str) -> dict[str, Any]:
    """Execute the blocks of ``text`` in one namespace; return it.

    Each block is compiled at its own line of the page, so that a traceback
    points to the page's line (``where`` names the page).
    """
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for line, code in python_blocks(text):
        exec(compile("\n" * (line - 1) + code, where, "exec"), namespace)
    return namespace
