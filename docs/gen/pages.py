"""mkdocs-gen-files script: the pages generated from the code when the site is built.

- rules/ and attacks/: one page per registered rule and attack (reference.py);
- cli.md: the command line reference, by typer's own ``typer ... utils docs``, and
  the run config's keys;
- img/averaging.png: the concepts page's picture (averaging_picture.py).

Nothing here is committed: every build writes it anew from the code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).parent))

import averaging_picture
import reference

for path, text in reference.pages().items():
    with mkdocs_gen_files.open(path, "w") as page:
        page.write(text)

cli = subprocess.run(
    [sys.executable, "-m", "typer", "byzance.cli", "utils", "docs", "--name", "byzance"],
    check=True,
    capture_output=True,
    text=True,
).stdout
_, rest = cli.split("\n", 1)  # typer's title is the program name
with mkdocs_gen_files.open("cli.md", "w") as page:
    page.write(
        f"# Command line\n\nEvery command and option of `byzance`, generated from the typer app "
        f"(`typer byzance.cli utils docs`) when the site is built.\n{rest}\n{reference.config_keys()}"
    )

with mkdocs_gen_files.open("img/averaging.png", "wb") as image:
    averaging_picture.draw(image)
