"""mkdocs hooks: the docstrings' reStructuredText roles (:func:`name`) read as plain code.

The docstrings are Google style but refer to other objects the Sphinx way;
Markdown renders ``:class:`X``` as ":class:" followed by code. Drop the role
and a leading "~" inside the code.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):<code>~?")


def on_page_content(html: str, **_: object) -> str:
    return _ROLE.sub("<code>", html)
