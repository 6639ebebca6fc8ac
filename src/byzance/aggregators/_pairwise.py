"""Pairwise squared Euclidean distances from one Gram product.

``|x_i - x_j|^2 = |x_i|^2 + |x_j|^2 - 2 <x_i, x_j>`` costs one (n x d) by
(d x n) product instead of an (n, n, d) tensor. When the vectors share a large
common offset the subtraction cancels: its absolute error is about
``eps * sqrt(d) * (|x_i|^2 + |x_j|^2)``. We detect that case (a
nearest-neighbour distance within that error of zero) and recompute after
subtracting the coordinate-wise median, a translation that leaves distances
unchanged and that a minority of huge inputs cannot drag away; rows still
suspect after that (several distant clusters) get their distances directly.

With at most 24 rows of at least 65,536 values on the CPU, the Gram matrix
comes from the C kernel of :func:`._native_rows.gram` (float64 sums, faster than
BLAS at that shape), else from ``x @ x.T``.

Half-precision inputs are computed in float32; squared norms that overflow
are recomputed in float64, and distances beyond that range are +inf, never NaN.
Everything runs on the input's device; :func:`sq_distances` synchronizes with
the host once on the common path (whether a fallback is needed), and more
only in the rare fallbacks.
"""

from __future__ import annotations

import math

import torch

from byzance.aggregators import _native_rows
from byzance.aggregators._input import first_pass
from byzance.aggregators._shard import any_block, norms, whole

# A distance within this many ulps (times sqrt(d)) of the squared norms involved is not trusted.
_CANCELLATION_ULPS = 64.0
# distances_to subtracts blocks of rows of at most this many values (8 MiB in float32).
_BLOCK_ELEMENTS = 1 << 21


def _gram_sq_distances(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances (n, n) and squared norms (n,) from the Gram matrix of ``x`` (n, d).

    Squared norms that overflow are recomputed in float64.
    """
    dist, sq = _gram(x)
    if not bool(torch.isfinite(sq).all()) and x.dtype != torch.float64:
        return _gram_sq_distances(x.double())
    return dist, sq


def _gram(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_gram_sq_distances` without the overflow check (no host synchronization)."""
    gram = whole(_gram_product, x)
    sq = gram.diagonal().clone()
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    dist = (dist + dist.T) * 0.5  # BLAS need not return an exactly symmetric Gram matrix
    dist = torch.nan_to_num(dist, nan=math.inf)  # inf - inf: beyond float64's range
    dist.clamp_(min=0.0)
    dist.fill_diagonal_(0.0)
    return dist, sq


def _gram_product(x: torch.Tensor) -> torch.Tensor:
    """``x @ x.T`` (n, n) in x's dtype: the C kernel for a few wide rows (float64 sums,
    faster than BLAS there; see :func:`._native_rows.gram`), else the matrix product."""
    n, d = x.shape
    if (
        n <= _native_rows.GRAM_FASTER_UP_TO
        and d >= _native_rows.GRAM_MIN_COLUMNS
        and _native_rows.takes(x)
    ):
        return _native_rows.gram(x).to(x.dtype)
    return x @ x.T


def _near_zero(dist: torch.Tensor, sq: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (n,) whose nearest-neighbour distance is within rounding error of zero, and
    each row's nearest neighbour (n,); on the device, no host synchronization."""
    if dist.shape[0] < 2:
        empty = torch.zeros(dist.shape[0], dtype=torch.bool, device=dist.device)
        return empty, empty.long()
    off = dist.clone()
    off.fill_diagonal_(math.inf)
    nearest, j = off.min(dim=1)
    ulps = _CANCELLATION_ULPS * max(1.0, math.sqrt(d))
    bound = ulps * torch.finfo(dist.dtype).eps * (sq + sq[j])
    return nearest <= bound, j


def _suspect_rows(
    dist: torch.Tensor,
    sq: torch.Tensor,
    x: torch.Tensor,
    near: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[int]:
    """Rows whose nearest-neighbour distance is within rounding error of zero.

    Exact duplicates (common: Byzantine workers sending the same vector) are
    set to distance zero and are not suspect. ``near``: :func:`_near_zero`'s
    result, when the caller has it.
    """
    close, j = _near_zero(dist, sq, x.shape[1]) if near is None else near
    suspect = []
    for i in close.nonzero().flatten().tolist():
        k = int(j[i])
        if not any_block(not torch.equal(x[i], x[k])):
            dist[i, k] = dist[k, i] = 0.0
        else:
            suspect.append(i)
    return suspect


def sq_distances(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``x`` (n, d), shape (n, n).

    Symmetric, zero on the diagonal, non-negative, +inf where out of range;
    accurate relative to the spread of the vectors rather than to their norms
    (see the module docstring). float16/bfloat16 inputs give float32 distances.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    dist, sq = _gram(x)
    near = _near_zero(dist, sq, x.shape[1])
    # One host synchronization on the common path: did a squared norm overflow, and is
    # any nearest-neighbour distance within rounding error of zero?
    overflow, any_near = torch.stack([~torch.isfinite(sq).all(), near[0].any()]).tolist()
    first_pass(
        not overflow
    )  # the squared norms: finite exactly when the rows are, barring overflow
    if overflow and x.dtype != torch.float64:
        dist, sq = _gram_sq_distances(x.double())
        near, any_near = None, True
    if not any_near or not _suspect_rows(dist, sq, x, near):
        return dist
    from byzance.aggregators._order import coordinate_median

    centered = x - coordinate_median(x)
    dist, sq = _gram_sq_distances(centered)
    for i in _suspect_rows(dist, sq, centered):  # distinct clusters: direct distances, row by row
        row = whole(lambda c, ci: (c - ci).square().sum(-1), centered, centered[i]).to(dist.dtype)
        dist[i, :] = row
        dist[:, i] = row
        dist[i, i] = 0.0
    return dist


def distances_to(
    x: torch.Tensor, z: torch.Tensor, *, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Euclidean distances (n,) from the rows of ``x`` (n, d) to the point ``z`` (d,).

    Direct differences (no cancellation, unlike the Gram form), summed by
    torch's pairwise (cascade) reduction: relative error about 1e-7 in
    float32 at d = 1e6, where ``torch.cdist`` (a running sum) reaches 3e-4
    and ``torch.linalg.vector_norm`` 1e-5. The differences go through one
    reused buffer of at most ``_BLOCK_ELEMENTS`` values (a block of rows), so
    no (n, d) temporary is allocated and the block stays in cache between the
    subtraction and the sum. Rows whose squared distance overflows are redone
    in float64. float16/bfloat16 inputs are computed in float32; the result is
    in ``out_dtype`` (default: ``x``'s dtype; float32 keeps the distances of
    half-precision rows whose norms exceed float16's range finite). On the
    CPU with the C kernels (:mod:`._native`), float32 and float64 rows take
    one pass in C instead: runs of 16 squared differences per SIMD lane summed
    in float64 (error below the pairwise sum's), z read from cache.
    """
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    z = z.to(dtype)
    n, d = x.shape
    if _native_rows.takes(x):  # one pass in C, summed in float64
        sq = whole(_native_rows.sq_distances, x, z)
        return distances_from_squares(sq, x, z, out_dtype=out_dtype)
    rows = max(1, min(n, _BLOCK_ELEMENTS // max(d, 1)))
    buffer = torch.empty(rows, d, dtype=dtype, device=x.device)

    def sq_sums(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        sq = torch.empty(n, dtype=dtype, device=x.device)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            diff = buffer[: stop - start, : x.shape[1]]
            torch.sub(x[start:stop], z, out=diff)
            torch.sum(diff.square_(), dim=1, out=sq[start:stop])
        return sq

    dist = whole(sq_sums, x, z).sqrt_()
    overflow = torch.isinf(dist)
    if dtype != torch.float64 and bool(overflow.any()):
        idx = overflow.nonzero().flatten()
        dist[idx] = norms(x[idx].double() - z.double()).to(dtype)
    return dist.to(x.dtype if out_dtype is None else out_dtype)


def distances_from_squares(
    sq: torch.Tensor, x: torch.Tensor, z: torch.Tensor, *, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Distances (n,) from the C kernels' squared distances ``sq`` (n,), float64, of the rows
    of ``x`` (n, d) to ``z`` (d,) (:func:`._native_rows.sq_distances`, or the one-pass
    :func:`._native_rows.step_and_sq_distances`), in ``out_dtype`` (default: ``x``'s).

    float32 squares beyond float32's range (values above 1e19) overflow the kernels'
    float32 runs: those rows again in float64, found by one sum in the common case.
    """
    dist = sq.sqrt_()
    if x.dtype != torch.float64 and not math.isfinite(float(dist.sum())):
        idx = torch.isinf(dist).nonzero().flatten()
        if idx.numel():  # none: a NaN row, which stays NaN (the same on every block)
            dist[idx] = norms(x[idx].double() - z.double())
    return dist.to(x.dtype if out_dtype is None else out_dtype)


# central_point: up to this many rows one Gram product of all rows costs a few passes
# (about n / 16 multiply-adds per value read, on one core); above it, groups of rows.
_ALL_ROWS_MAX = 32


def central_point(x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """A robust starting point (d,) for the geometric median of the rows of ``x`` (n, d).

    See :func:`central_point_and_distances`, which also returns the rows' distances to it.
    """
    return central_point_and_distances(x, weights)[0]


def central_point_and_distances(
    x: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A robust starting point z (d,) for the geometric median of the rows of ``x`` (n, d),
    and the distances (n,) from the rows to it (None when they could not be had cheaply).

    Candidates are scored by ``F(z) = sum_i w_i |x_i - z|`` (``weights`` (n,),
    non-negative, ones by default): the weighted mean, and rows: every row
    when n <= 32 (one Gram product), else the medoid of each group of k
    consecutive rows, k = sqrt(n) rounded up to a multiple of 16 (a batched
    Gram product), each then scored against all n rows (one (n / k + 1, d) by
    (d, n) product). The start is
    the average of the candidates whose F is within rounding error of the
    smallest (usually one; several when equally central, e.g. the two middle
    values in one dimension, whose average keeps the start equivariant). About
    k + n / k multiply-adds per input value and three reads of it (measured
    with float32 on one core: about 3 passes' time at n = 20 and n = 100,
    7 at n = 1000), no sort, no (n, d) temporary.

    Robust: with fewer than half of the rows Byzantine (in weight, with
    weights), some group has more honest rows than Byzantine ones, so its
    medoid's F is at most that of a point near that group's honest rows; and
    by the triangle inequality any z with F(z) <= F(c) for an honest row c
    satisfies ``(h - f) |z - c| <= 2 sum_{i honest} |x_i - c|``: each
    candidate kept, and their average (F is convex), stays within a distance
    set by the honest rows' spread (and rounding), however far Byzantine rows
    lie. The mean, a good start when nothing lies far, is kept only when its
    F is among the smallest. Distances come from Gram products, whose
    rounding errs on the scale of the rows' squared norms (see the module
    docstring); that error is what "within rounding error" allows for.
    Squared norms that overflow are recomputed in float64. z is a new tensor
    in ``x``'s dtype, on its device.

    The distances |x_i - z| come from the same products (z is a combination
    of the candidates, whose products with every row are known), saving the
    geometric median its first distance pass; rows whose squared distance
    the Gram form's rounding bound could move by 1% (z itself, duplicates of
    it, rows sharing a large offset) get theirs directly, or, when more than
    a quarter of the rows do, None. They are in ``x``'s dtype (float32 for
    half precision).
    """
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    n, d = x.shape
    w = torch.ones(n, dtype=x.dtype, device=x.device) if weights is None else weights.to(x.dtype)
    w = w / w.sum()
    if n <= _ALL_ROWS_MAX:
        mean = None  # its products come from the Gram matrix: x_i . mean = (G w)_i
        gram = whole(lambda a: a @ a.T, x)
        sq, picks, gw = gram.diagonal(), torch.arange(n, device=x.device), gram @ w
        cross = torch.cat([gram, gw[:, None]], dim=1)  # (n, n + 1)
        mean_sq = w @ gw
    else:
        # Groups of about sqrt(n) rows, rounded up to a multiple of 16: BLAS runs Gram
        # products of 16 or 32 rows near its peak, of 10 rows several times slower.
        k = 16 * -(-(math.isqrt(n - 1) + 1) // 16)
        sq, picks = _group_medoids(x, w, k)
        mean = w @ x
        # (groups + 1, d) by (d, n), transposed: several times faster than x @ C.T
        # when there are few candidates (BLAS's blocking favours a long second operand).
        candidates = torch.cat([x.index_select(0, picks), mean[None]])
        cross = whole(lambda c, a: (c @ a.T).T, candidates, x)  # (n, groups + 1)
        mean_sq = whole(lambda m: m @ m, mean)
    finite = bool(torch.isfinite(sq).all())
    first_pass(finite)  # the squared norms: finite exactly when the rows are, barring overflow
    if not finite:
        return _central_point_scaled(x, w).to(dtype), None
    cand_sq = torch.cat([sq[picks], mean_sq[None]])
    dist = torch.nan_to_num(sq[:, None] + cand_sq[None, :] - 2.0 * cross, nan=math.inf)
    score = w @ dist.clamp_(min=0.0).sqrt_()  # F of each candidate (m,)
    # Rounding of the Gram form: |error in dist^2| <~ ulps (|x_i| + r_c)^2, where r_c bounds
    # the norms of the terms the products of candidate c sum: |c| for a row, but sum_j w_j
    # |x_j| for the mean, whose own norm can be tiny where huge rows cancel in it (two
    # opposite rows of norm 2^40 leave every honest row's distance to the mean in the
    # rounding of 2^80). |error in dist| <= sqrt of that; a candidate is kept when its F
    # could be the least.
    ulps = _CANCELLATION_ULPS * max(1.0, math.sqrt(d)) * torch.finfo(x.dtype).eps
    norms = sq.sqrt()
    cand_norms = torch.cat([norms[picks], (w @ norms)[None]])  # r_c (m,)
    scale = (norms[:, None] + cand_norms[None, :]).square_()  # (n, m)
    slack = w @ (ulps * scale).sqrt_()
    score = torch.nan_to_num(score, nan=math.inf)
    best = (score + slack).min()
    keep = (score - slack <= best) & torch.isfinite(score)
    keep |= score == score.min()  # the least one, even where rounding makes F infinite
    kept = keep.nonzero().flatten().tolist()  # the one host synchronization of the choice
    if len(kept) == 1 and kept[0] == len(picks):
        z = w @ x if mean is None else mean
    elif len(kept) == 1:
        z = x[int(picks[kept[0]])].clone()
    else:  # several equally central candidates: their average, as one product with x
        coef = torch.zeros(n, dtype=x.dtype, device=x.device)
        rows = [c for c in kept if c < len(picks)]
        coef.index_add_(0, picks[rows], torch.ones(len(rows), dtype=x.dtype, device=x.device))
        if len(picks) in kept:
            coef += w
        z = (coef / len(kept)) @ x
    # z = sum_c a_c cand_c: |x_i - z|^2 = |x_i|^2 - 2 (cross a)_i + a^T K a, where K, the
    # candidates' products, are cross's rows at the picked rows and w @ cross for the mean.
    a = torch.zeros(cross.shape[1], dtype=x.dtype, device=x.device)
    a[kept] = 1.0 / len(kept)
    products = torch.cat([cross[picks], (w @ cross)[None]])  # (m, m)
    zz = a @ products @ a
    sq_dist = (sq - 2.0 * (cross @ a) + zz).clamp_(min=0.0)
    # Rows whose squared distance the rounding bound ulps (|x_i| + sum_c a_c r_c)^2 could
    # move by 1% or more (z itself, its duplicates, rows sharing a large offset, rows near
    # a mean in which huge rows cancel): their distances directly, or every row's (None)
    # when they are many (a (rows, d) copy would cost more than a pass).
    reach = (norms + a @ cand_norms).square_()
    idx = (sq_dist <= 100.0 * ulps * reach).nonzero().flatten()
    if 4 * idx.numel() > n:
        return z.to(dtype), None
    dist = sq_dist.sqrt_()
    if idx.numel():
        dist[idx] = distances_to(x.index_select(0, idx), z)
    return z.to(dtype), dist


def _central_point_scaled(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """:func:`central_point` of rows whose squared norms overflow: in float64, scaled by a
    power of two (exact) so that every value is at most 1 in magnitude, then scaled back."""
    y = x.double()
    top = float(whole(lambda t: t.abs().amax(), y, op="max"))
    shift = math.frexp(top)[1]  # top < 2**shift
    z = central_point(torch.ldexp(y, torch.tensor(-shift)), w)
    return torch.ldexp(z, torch.tensor(shift))


def _group_medoids(x: torch.Tensor, w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared norms (n,) of the rows of ``x`` (n, d), and the index (into x) of the
    weighted medoid of each group of ``k`` consecutive rows (the last one shorter)."""
    n = x.shape[0]
    full = (n // k) * k
    groups = x[:full].reshape(n // k, k, -1)  # a view of contiguous rows
    gram = whole(lambda g: torch.bmm(g, g.transpose(1, 2)), groups)  # (groups, k, k)
    sq = gram.diagonal(dim1=1, dim2=2)  # (groups, k)
    dist = (sq[:, :, None] + sq[:, None, :] - 2.0 * gram).clamp_(min=0.0)
    dist = torch.nan_to_num(dist, nan=math.inf).sqrt_()
    scores = torch.nan_to_num((dist * w[:full].view(n // k, 1, k)).sum(dim=2), nan=math.inf)
    picks = scores.argmin(dim=1) + torch.arange(0, full, k, device=x.device)
    sq = sq.reshape(-1)
    if full < n:
        rest = whole(lambda a: a @ a.T, x[full:])
        rest_sq = rest.diagonal()
        rest_dist = (rest_sq[:, None] + rest_sq[None, :] - 2.0 * rest).clamp_(min=0.0)
        picks = torch.cat([picks, full + _best(rest_dist, w[full:]).reshape(1)])
        sq = torch.cat([sq, rest_sq])
    return sq, picks


def _best(dist: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Column (0-d) of squared distances ``dist`` (n, m) of least weighted sum of distances
    (weights ``w`` (n,)); a distance out of range (inf, or inf - inf) counts as infinite."""
    total = w @ torch.nan_to_num(dist, nan=math.inf).sqrt()
    return torch.nan_to_num(total, nan=math.inf).argmin()
