"""byzance: Byzantine-robust distributed learning on PyTorch.

Importing the package loads nothing heavy: ``byzance.aggregators`` (torch) and
``byzance.errors`` load on first use, and the command-line tool, plotting and
data loaders live in modules imported on demand. (A process that only
supervises another, like each rank's supervisor under torchrun, never imports
torch.)
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["aggregators", "errors"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"byzance.{name}")
    raise AttributeError(f"module 'byzance' has no attribute {name!r}")
