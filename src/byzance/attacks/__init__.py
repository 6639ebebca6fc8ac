"""Attacks: what the Byzantine participants send.

Omniscient gradient attacks see the honest vectors and return what the f
Byzantine participants send::

    >>> import torch, byzance.attacks as attacks
    >>> honest = torch.randn(16, 100)
    >>> attacks.get("alie")(honest, f=4).shape
    torch.Size([4, 100])
    >>> attacks.get("hidden_vulnerability")(honest, f=4, rule="krum").shape
    torch.Size([4, 100])

``attack(honest, f, *, rule=None, generator=None, **params)``: ``honest`` has
shape (h, d), the result (f, d). ``rule`` is the aggregation rule under attack
(a name, a Rule or any ``rule(grads, f)``), for attacks that adapt to it.
Data attacks (``label_flip``) act on a worker's labels instead.
"""

from byzance.attacks._registry import (
    DataAttack,
    GradientAttack,
    as_aggregate_fn,
    attacks,
    get,
    names,
    register,
)
from byzance.attacks.adaptive import adaptive, adaptive_search
from byzance.attacks.alie import alie, alie_z
from byzance.attacks.hidden_vulnerability import hidden_vulnerability, hidden_vulnerability_search
from byzance.attacks.label_flip import label_flip
from byzance.attacks.mimic import mimic
from byzance.attacks.simple import (
    constant,
    gaussian,
    inf,
    ipm,
    large_norm,
    nan,
    sign_flip,
    zero,
)

__all__ = [
    "DataAttack",
    "GradientAttack",
    "adaptive",
    "adaptive_search",
    "alie",
    "alie_z",
    "as_aggregate_fn",
    "attacks",
    "constant",
    "gaussian",
    "get",
    "hidden_vulnerability",
    "hidden_vulnerability_search",
    "inf",
    "ipm",
    "label_flip",
    "large_norm",
    "mimic",
    "names",
    "nan",
    "register",
    "sign_flip",
    "zero",
]
