"""Import ByzFL's aggregators, attacks and federated framework without torchvision.

``import byzfl`` runs ``byzfl/__init__.py``, which imports ``byzfl.benchmark``,
whose ``train`` module imports torchvision (for its MNIST/CIFAR loaders) and
whose ``evaluate_results`` module imports matplotlib and seaborn. None of the
code benchmarked here needs them: ``byzfl.aggregators``, ``byzfl.attacks``,
``byzfl.fed_framework`` and ``byzfl.utils`` import only torch, numpy and scipy.
The only torchvision build on the registry here is a CUDA one that does not
load with the CPU torch, so instead of installing it (or a fake torchvision),
the ``byzfl`` package object is created from its import spec *without running
its ``__init__``*; its subpackages then import normally from the installed
files, unmodified. ``byzfl.benchmark`` is never imported.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from types import ModuleType


class ByzFLUnavailableError(ImportError):
    """ByzFL is not installed in this environment."""


@dataclass(frozen=True)
class ByzFL:
    """The ByzFL modules the benchmark uses."""

    aggregators: ModuleType  # byzfl.aggregators.aggregators (Krum, Median, ...)
    preaggregators: ModuleType  # byzfl.aggregators.preaggregators (NNM, Bucketing, ...)
    attacks: ModuleType  # byzfl.attacks.attacks
    fed_framework: ModuleType  # Client, Server, ByzantineClient, models
    version: str


def load_byzfl() -> ByzFL:
    """ByzFL's modules, imported without ``byzfl/__init__.py`` (so without torchvision)."""
    spec = importlib.util.find_spec("byzfl")
    if spec is None or spec.submodule_search_locations is None:
        raise ByzFLUnavailableError(
            "byzfl is not installed here; run `make bench-peers`, which creates .venv-peers "
            "with byzfl==0.0.11 (installed with --no-deps, without torchvision)."
        )
    package = sys.modules.get("byzfl")
    if package is None:
        # module_from_spec sets __path__ from the spec but does not execute __init__.py.
        package = importlib.util.module_from_spec(spec)
        sys.modules["byzfl"] = package
    return ByzFL(
        aggregators=importlib.import_module("byzfl.aggregators.aggregators"),
        preaggregators=importlib.import_module("byzfl.aggregators.preaggregators"),
        attacks=importlib.import_module("byzfl.attacks.attacks"),
        fed_framework=importlib.import_module("byzfl.fed_framework"),
        version=importlib.metadata.version("byzfl"),
    )
