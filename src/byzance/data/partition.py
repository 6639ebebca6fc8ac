"""Split a training set among workers: i.i.d., or with label skew (non-i.i.d.).

    >>> import torch
    >>> from byzance.data import partition
    >>> labels = torch.arange(100) % 10
    >>> shards = partition(labels, 4, "dirichlet", alpha=0.5, seed=0)
    >>> sum(len(s) for s in shards)
    100

Schemes:

* ``"iid"``: a seeded random permutation cut into ``num_workers`` equal parts
  (sizes differ by at most one). Works for any labels, regression included.
* ``"dirichlet"``: for each class, proportions ``p ~ Dirichlet(alpha * 1)``
  over the workers and the class's samples (in random order) are cut at
  ``round(cumsum(p) * n_c)`` (Hsu et al. 2019, "Measuring the effects of
  non-identical data distribution"). Small ``alpha`` gives each worker few
  classes; large ``alpha`` approaches i.i.d. A worker left with no sample is
  then given one: a random sample of the currently largest worker moves to it,
  one empty worker at a time (always possible as num_workers <= N; it moves at
  most num_workers - 1 samples and never leaves a worker empty). Resampling
  until no worker is empty, the other usual fix, may never end for tiny alpha.
* ``"extreme"``: pathological non-i.i.d. (McMahan et al. 2017): each worker
  holds at most ``classes_per_worker`` classes. Cutting the label-sorted data
  into equal shards, as in the paper, lets a shard straddle two classes, so
  here the ``num_workers * classes_per_worker`` slots are dealt to classes
  round-robin in a random class order (worker w gets the consecutive slots
  w*k .. w*k + k - 1, hence k distinct classes) and each class's samples are
  divided equally among its slots. Every class is held by someone, which needs
  ``num_workers * classes_per_worker >= num_classes``; when that product is not
  a multiple of the number of classes, some classes have one slot more than
  others, and the workers holding the latter get more samples.
* ``"shards"``: label-sorted shards, as in the papers (McMahan et al. 2017;
  Karimireddy, He, Jaggi, "Byzantine-robust learning on heterogeneous
  datasets via bucketing", ICLR 2022): the indices sorted by label (stable:
  within a class, in index order) are cut into ``num_workers *
  shards_per_worker`` contiguous shards of equal size (differing by at most
  one), and the shards are dealt to the workers at random, ``shards_per_worker``
  each. A shard may straddle a class boundary: a worker holds at most
  ``shards_per_worker`` classes when every class size is a multiple of the
  shard size (60000 MNIST samples, 6000 a class, 100 workers of 2 shards:
  shards of 300, each worker 1 or 2 classes), at most twice that when every
  class is at least as large as a shard. With fewer samples than shards, a
  worker dealt only empty shards is given one sample, as for ``"dirichlet"``.

Each shard is an int64 tensor of training-set indices, sorted ascending; the
shards are disjoint and cover every index. Deterministic given ``seed``
(numpy's PCG64), independent of torch's global random state.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from byzance.errors import InvalidParameterError, ShapeError

__all__ = ["SCHEMES", "partition"]

SCHEMES = ("iid", "dirichlet", "extreme", "shards")


def partition(
    labels: torch.Tensor,
    num_workers: int,
    scheme: str = "iid",
    *,
    alpha: float = 1.0,
    classes_per_worker: int = 2,
    shards_per_worker: int = 2,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Split the indices of ``labels`` (N,) among ``num_workers`` workers.

    Returns ``num_workers`` non-empty int64 index tensors (each sorted) that
    are disjoint and together cover ``range(N)``. ``alpha`` is the Dirichlet
    concentration (``"dirichlet"`` only); ``classes_per_worker`` the number of
    classes each worker holds (``"extreme"`` only); ``shards_per_worker`` the
    number of label-sorted shards each worker is dealt (``"shards"`` only). Label-skewed schemes need
    integer class labels; regression targets (floating point) only allow ``"iid"``.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ShapeError(f"labels must be 1-D, shape (N,), got shape {tuple(labels.shape)}.")
    n = labels.numel()
    if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral):
        raise InvalidParameterError(f"num_workers must be an integer, got {num_workers!r}.")
    if not 1 <= num_workers <= n:
        raise InvalidParameterError(
            f"num_workers must lie between 1 and the {n} training samples (every worker needs "
            f"at least one), got {num_workers}."
        )
    if scheme not in SCHEMES:
        raise InvalidParameterError(
            f"unknown partition scheme {scheme!r}; use one of {', '.join(SCHEMES)}."
        )
    rng = np.random.default_rng(seed)
    k = int(num_workers)
    if scheme == "iid":
        owner = np.empty(n, dtype=np.int64)
        owner[rng.permutation(n)] = np.arange(n) * k // n  # k near-equal consecutive blocks
        return _shards(owner, k)

    if labels.is_floating_point() or labels.is_complex():
        raise InvalidParameterError(
            f"partition scheme {scheme!r} skews the label distribution and needs integer class "
            f"labels; these are {labels.dtype} (a regression task?): use scheme='iid'."
        )
    y = labels.detach().cpu().numpy()
    if scheme == "shards":
        return _label_sorted_shards(y, k, shards_per_worker, rng)
    _, y_class = np.unique(y, return_inverse=True)
    num_classes = int(y_class.max()) + 1
    # Every class's indices, each class in random order: by_class[start[c]:start[c + 1]].
    shuffled = rng.permutation(n)
    by_class = shuffled[np.argsort(y_class[shuffled], kind="stable")]
    start = np.concatenate([[0], np.cumsum(np.bincount(y_class, minlength=num_classes))])

    owner = np.empty(n, dtype=np.int64)
    if scheme == "dirichlet":
        if not (isinstance(alpha, numbers.Real) and math.isfinite(alpha) and alpha > 0):
            raise InvalidParameterError(
                f"alpha (the Dirichlet concentration) must be a finite number > 0, got {alpha!r}; "
                "small values (0.1) give strong label skew, large ones (100) nearly i.i.d. data."
            )
        props = rng.dirichlet(np.full(k, float(alpha)), size=num_classes)  # (C, k)
        for c in range(num_classes):
            n_c = start[c + 1] - start[c]
            cuts = np.round(np.cumsum(props[c])[:-1] * n_c).astype(np.int64)
            counts = np.diff(np.concatenate([[0], np.clip(cuts, 0, n_c), [n_c]]))
            owner[by_class[start[c] : start[c + 1]]] = np.repeat(np.arange(k), counts)
    else:  # extreme
        per = classes_per_worker
        if isinstance(per, bool) or not isinstance(per, numbers.Integral) or per < 1:
            raise InvalidParameterError(
                f"classes_per_worker must be a positive integer, got {per!r}."
            )
        if per > num_classes:
            raise InvalidParameterError(
                f"classes_per_worker={per} exceeds the {num_classes} classes present."
            )
        if k * per < num_classes:
            raise InvalidParameterError(
                f"scheme 'extreme' with {k} workers of {per} classes each covers only {k * per} "
                f"of the {num_classes} classes; use num_workers * classes_per_worker >= "
                f"{num_classes}."
            )
        slot_class = rng.permutation(num_classes)[np.arange(k * per) % num_classes]
        for c in range(num_classes):
            slots = np.flatnonzero(slot_class == c)  # >= 1 since k * per >= num_classes
            n_c = start[c + 1] - start[c]
            chunk = np.arange(n_c) * len(slots) // n_c  # equal parts, in order
            owner[by_class[start[c] : start[c + 1]]] = slots[chunk] // per

    _fill_empty(owner, k, rng)
    return _shards(owner, k)


def _label_sorted_shards(
    y: np.ndarray, k: int, per: int, rng: np.random.Generator
) -> list[torch.Tensor]:
    """Scheme ``"shards"``: k * per contiguous shards of the label-sorted indices, dealt at random."""
    if isinstance(per, bool) or not isinstance(per, numbers.Integral) or per < 1:
        raise InvalidParameterError(f"shards_per_worker must be a positive integer, got {per!r}.")
    n, count = len(y), k * int(per)
    order = np.argsort(y, kind="stable")  # by label; within a class, by index
    bounds = np.arange(count + 1) * n // count  # shard j is order[bounds[j]:bounds[j + 1]]
    dealt = rng.permutation(count)  # worker w gets shards dealt[w * per : (w + 1) * per]
    owner = np.empty(n, dtype=np.int64)
    for slot, shard in enumerate(dealt):
        owner[order[bounds[shard] : bounds[shard + 1]]] = slot // per
    _fill_empty(owner, k, rng)
    return _shards(owner, k)


def _fill_empty(owner: np.ndarray, k: int, rng: np.random.Generator) -> None:
    """Give each empty worker one random sample of the currently largest worker (in place)."""
    sizes = np.bincount(owner, minlength=k)
    for w in np.flatnonzero(sizes == 0):
        donor = int(np.argmax(sizes))  # holds >= 2 while a worker is empty, as N >= k
        candidates = np.flatnonzero(owner == donor)
        owner[candidates[rng.integers(len(candidates))]] = w
        sizes[donor] -= 1
        sizes[w] += 1


def _shards(owner: np.ndarray, k: int) -> list[torch.Tensor]:
    """Indices grouped by ``owner`` (N,) in [0, k): k int64 tensors, each sorted."""
    order = torch.from_numpy(np.argsort(owner, kind="stable"))
    sizes = np.bincount(owner, minlength=k).tolist()
    return [s.clone() for s in torch.split(order, sizes)]
