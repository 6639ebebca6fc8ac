"""byzance: Byzantine-robust distributed learning on PyTorch.

Importing the package loads only what the aggregation rules need (torch); the
command-line tool, plotting and data loaders live in modules imported on demand.
"""

from byzance import aggregators, errors

__all__ = ["aggregators", "errors"]
__version__ = "0.1.0"
