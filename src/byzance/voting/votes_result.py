"""What a ``byzance votes`` run gives back: its rows, its tables in markdown, where they went."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Progress", "VotesResult"]


@dataclass
class VotesResult:
    """Rows of one run (one dict per measurement), its tables in markdown, and where they were written."""

    kind: str
    rows: list[dict[str, Any]]
    tables: list[tuple[str, list[str], list[list[str]]]]  # (title, header, rows)
    out_dir: Path
    plots: list[Path]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = []
        for title, header, body in self.tables:
            lines = [
                f"### {title}",
                "",
                "| " + " | ".join(header) + " |",
                "|" + " --- |" * len(header),
            ]
            lines += ["| " + " | ".join(row) + " |" for row in body]
            parts.append("\n".join(lines))
        parts += self.notes
        return "\n\n".join(parts) + "\n"


Progress = Callable[[str], None]
