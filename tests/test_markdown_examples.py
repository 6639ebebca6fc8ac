"""The helper that runs documentation examples: which blocks run, in what namespace, where."""

from __future__ import annotations

import traceback

import pytest

from markdown_examples import python_blocks, run_python_blocks

PAGE = """# Page

```sh
make test
```

```python
x = 2
```

Text.

- a list item with an example:

    ```python
    y = x * 3
    ```

```text
not = run
```

```python
z = x + y
```
"""


def test_only_python_blocks_are_found_with_their_lines():
    blocks = python_blocks(PAGE)
    assert [code for _, code in blocks] == ["x = 2\n", "y = x * 3\n", "z = x + y\n"]
    lines = PAGE.splitlines()
    for line, code in blocks:
        assert lines[line - 1].strip() == code.strip()


def test_blocks_share_one_namespace_in_order():
    namespace = run_python_blocks(PAGE, "page.md")
    assert (namespace["x"], namespace["y"], namespace["z"]) == (2, 6, 8)


def test_a_failing_block_points_to_its_line_of_the_page():
    page = "# P\n\n```python\nok = 1\nraise ValueError('boom')\n```\n"
    with pytest.raises(ValueError, match="boom") as info:
        run_python_blocks(page, "docs/p.md")
    last = traceback.extract_tb(info.tb)[-1]
    assert (last.filename, last.lineno) == ("docs/p.md", 5)
