"""Robust aggregation rules: pure functions from (n, d) inputs to a (d,) aggregate.

Every rule is called as ``rule(grads, f, **params)``. ``grads`` has shape
(n, d) (a tensor, a numpy array, or a list of n same-shaped vectors) and ``f``
is the number of Byzantine inputs to tolerate. Aggregation rules return shape
(d,), pre-aggregators shape (m, d); ``compose`` chains pre-aggregators with a
rule into a rule.

    >>> import torch, byzance.aggregators as agg
    >>> grads = torch.tensor([[1.0, 1.0], [1.1, 0.9], [0.9, 1.1], [1e9, -1e9], [1.0, 1.2]])
    >>> agg.median(grads, f=1)
    tensor([1.0000, 1.1000])
    >>> agg.get("nnm>trimmed_mean")(grads, f=1).shape
    torch.Size([2])

Each rule carries its metadata: ``rule.requirement`` (``n >= 2f + 3`` for
Krum), ``rule.min_n(f)``, ``rule.paper``, ``rule.doc``.
"""

from byzance.aggregators._input import finite_rows
from byzance.aggregators._order import compile_mode, set_compile_mode
from byzance.aggregators._pairwise import sq_distances
from byzance.aggregators._pipeline import Pipeline, compose
from byzance.aggregators._registry import (
    Requirement,
    Rule,
    get,
    names,
    register,
    rules,
)
from byzance.aggregators.average import average
from byzance.aggregators.bucketing import bucketing
from byzance.aggregators.bulyan import bulyan
from byzance.aggregators.centered_clipping import centered_clipping
from byzance.aggregators.clipping import arc, clipping
from byzance.aggregators.geometric_median import geometric_median
from byzance.aggregators.krum import krum, multi_krum
from byzance.aggregators.mda import mda
from byzance.aggregators.meamed import meamed
from byzance.aggregators.median import median
from byzance.aggregators.missing import aggregate_with_missing, crashed_workers, fill_with_median
from byzance.aggregators.nnm import nnm
from byzance.aggregators.skewed_geometric_median import skewed_geometric_median
from byzance.aggregators.trimmed_mean import trimmed_mean
from byzance.aggregators.weighted import weighted_average, weighted_median

__all__ = [
    "Pipeline",
    "Requirement",
    "Rule",
    "aggregate_with_missing",
    "arc",
    "average",
    "bucketing",
    "bulyan",
    "centered_clipping",
    "clipping",
    "compile_mode",
    "compose",
    "crashed_workers",
    "fill_with_median",
    "finite_rows",
    "geometric_median",
    "get",
    "krum",
    "mda",
    "meamed",
    "median",
    "multi_krum",
    "names",
    "nnm",
    "register",
    "rules",
    "set_compile_mode",
    "skewed_geometric_median",
    "sq_distances",
    "trimmed_mean",
    "weighted_average",
    "weighted_median",
]
