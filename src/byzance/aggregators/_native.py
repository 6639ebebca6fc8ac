"""The coordinate-wise statistics by radix descent in C, one cache-resident block at a time.

The median, trimmed mean, mean around the median and weighted median of an
(n, d) CPU matrix (float32 or float64; float16 and bfloat16 are widened to
float32, exactly) are computed by ``_native_select.c``: panels of columns
are read from memory once (a few hundred contiguous values of each row per
visit), turned into integer keys with the float order, and every order
statistic of a block of 32 columns (16 in float64; ``_native_statistics.h``)
is found by radix descent (``_native_descent.h``), one counting pass per bit over the block
while it sits in the cache, in SIMD lanes over the block's columns; float32
blocks count over the keys' 16-bit halves, twice as many lanes per
instruction. The load also reports non-finite values, so the rules need no
pass of their own to check their rows. Measured on 2 cores (float32, d x n =
1e8, against one pass ``x.sum(0)``): the median costs 2.4x-2.6x at n = 100
and 2.5x-3.7x at n = 1000, the trimmed mean 3.4x-3.9x and 3.7x-6.2x, against
18x-25x for the compiled network or counting passes, and 120x for a sort
(docs/results.md). The result is the sort's, bit for bit for order
statistics and medians (means differ only by the order of the float sum),
as the tests check. ``_native_distances.h`` gives the distances from the
rows to a point in one pass (the geometric median, centered clipping),
``_native_gram.h`` the Gram matrix of up to 24 wide rows (the
distance-based rules), where BLAS's product is slow and float32-accurate
only, and ``_native_step.h`` the weighted step v + (1/div) sum_i w_i (x_i -
v) in one pass that reports whether it is finite (the average, the weighted
average, centered clipping's clipped step).

Why C and not a library: the algorithm needs a loop nest that
``torch.compile`` does not generate (many dependent passes over one block
while it is in the cache; inductor's fused version spent 5 s on the
bit-casts), and numba's version of the same loops was not vectorized
(28x-30x one pass). The C (``_native_select.c`` and its six headers) is
about 1,350 lines with no dependency but the GCC/Clang vector
extensions (``__attribute__((vector_size))``) for its hottest loops.

Build: the first use compiles the file with the system C compiler
(``$CC``, else ``cc``) into the user's cache directory
(``$BYZANCE_CACHE_DIR``, else ``$XDG_CACHE_HOME/byzance``, else
``~/.cache/byzance``), named by a hash of the source, the flags, the
compiler's version and this CPU's feature flags (``-march=native`` code built
on one machine is never loaded on another). It takes about a second once;
later processes load the library in milliseconds. The library is checked
against ``torch.sort`` on a small input after loading. With no compiler, a
failed build, or ``BYZANCE_NATIVE=0``, :func:`available` is False and the
callers take the torch paths (the compiled network and counting passes, or
the sort), with one warning when a build was attempted and failed.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("_native_select.c")
# Every file the build reads (SOURCE includes the headers): the library's name hashes them all.
SOURCES = (
    SOURCE,
    *(
        Path(__file__).with_name(f"_native_{part}.h")
        for part in ("descent", "distances", "gram", "statistics", "step", "weighted")
    ),
)
FLAGS = (
    "-O3",
    "-march=native",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-std=c11",
)
FLAGS_SHARED = ("-shared", "-fPIC")
ABI = 2
# Columns per thread task: a multiple of both block widths (32 and 16 columns).
CHUNK_ALIGN = 32

_lock = threading.RLock()
_lib: ctypes.CDLL | None = None
_tried = False
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def enabled() -> bool:
    """False when ``BYZANCE_NATIVE`` is 0/off/false/no."""
    return os.environ.get("BYZANCE_NATIVE", "1").strip().lower() not in ("0", "off", "false", "no")


def cache_dir() -> Path:
    """Where built libraries are kept (see the module docstring)."""
    if os.environ.get("BYZANCE_CACHE_DIR"):
        return Path(os.environ["BYZANCE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "byzance"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _library_path(cc: str) -> Path:
    version = subprocess.run(
        [cc, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    digest = hashlib.sha256()
    for part in (
        *(source.read_bytes() for source in SOURCES),
        " ".join(FLAGS).encode(),
        version.encode(),
        _cpu_flags().encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    return cache_dir() / f"native_select_{digest.hexdigest()[:20]}.so"


def _build(cc: str, target: Path) -> None:
    """Compile into a temporary file beside ``target``, then rename (atomic for concurrent builders)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(fd)
    try:
        cmd = [cc, *FLAGS, *FLAGS_SHARED, str(SOURCE), "-o", tmp, "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[:500]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for suffix in ("f32", "f64"):
        # x, n, ld, rows (NULL: the first n), c0, c1, then each kernel's own
        getattr(lib, f"byz_median_{suffix}").argtypes = [ptr, i64, i64, ptr, i64, i64, ptr, ptr]
        for name in ("byz_trimmed_mean", "byz_mean_around_median"):
            getattr(lib, f"{name}_{suffix}").argtypes = [
                *(ptr, i64, i64, ptr, i64, i64),
                *(i64, ptr, ptr),
            ]
        getattr(lib, f"byz_weighted_median_{suffix}").argtypes = [
            *(ptr, i64, i64, ptr, i64, i64, ptr),
            *(ctypes.c_double, ctypes.c_double, ptr, ptr),
        ]
        getattr(lib, f"byz_sq_distances_{suffix}").argtypes = [ptr, i64, i64, i64, i64, ptr, ptr]
        getattr(lib, f"byz_gram_{suffix}").argtypes = [ptr, i64, i64, i64, i64, ptr]
        getattr(lib, f"byz_weighted_step_{suffix}").argtypes = [
            *(ptr, i64, i64, i64, i64),
            *(ptr, ctypes.c_double, ptr, ptr),
        ]
        getattr(lib, f"byz_step_distances_{suffix}").argtypes = [
            *(ptr, i64, i64, i64, i64),
            *(ptr, ctypes.c_double, ptr, ptr, ptr),
        ]
    for fn in (
        "median",
        "trimmed_mean",
        "mean_around_median",
        "weighted_median",
        "sq_distances",
        "gram",
        "weighted_step",
        "step_distances",
    ):
        for suffix in ("f32", "f64"):
            getattr(lib, f"byz_{fn}_{suffix}").restype = ctypes.c_int


def _load() -> ctypes.CDLL | None:
    cc = _compiler()
    if cc is None:
        return None
    target = _library_path(cc)
    if not target.exists():
        _build(cc, target)
    lib = ctypes.CDLL(str(target))
    if lib.byz_native_abi() != ABI:
        raise RuntimeError(f"{target} has another ABI version; delete it to rebuild")
    _declare(lib)
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded library, built on first use; None when unavailable (see the module docstring)."""
    global _lib, _tried
    if _lib is not None or _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                if enabled():
                    lib = _load()
                    if lib is not None:
                        _lib = lib
                        _self_check()
            except Exception as err:  # no usable compiler, a read-only cache, a failed check
                _lib = None
                warnings.warn(
                    f"byzance: the native coordinate-wise kernels are unavailable ({err}); "
                    "using the torch paths, which are correct but slower. "
                    "Set BYZANCE_NATIVE=0 to silence this.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            _tried = True
    return _lib


def available() -> bool:
    """Whether the native kernels can be used in this process."""
    return library() is not None


def supports(x: torch.Tensor) -> bool:
    """CPU floating-point inputs of at least 2 rows, when the library is available."""
    return (
        x.is_cpu  # not x.device.type: building the device object costs 0.3 us a call
        and x.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
        and x.dim() == 2
        and x.shape[0] >= 2
        and available()
    )


def _in_parallel(work: Callable[[int, int], int], bounds: list[tuple[int, int]]) -> list[int]:
    """``work(lo, hi)`` for every range of ``bounds``, on the thread pool when there are
    several (ctypes releases the GIL); the kernels' return codes."""
    if len(bounds) == 1:
        return [work(*bounds[0])]
    return list(_threads().map(lambda b: work(*b), bounds))


# The codes of the columns a kernel leaves to its caller (BYZ_BAD_* in _native_select.c).
BAD_TIE = 1
BAD_NONFINITE = 2


def _threads_wanted() -> int:
    return max(1, torch.get_num_threads())


def _threads() -> ThreadPoolExecutor:
    global _pool, _pool_size
    want = _threads_wanted()
    with _lock:
        if _pool is None or _pool_size != want:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=want, thread_name_prefix="byzance-native")
            _pool_size = want
        return _pool


def _run(
    name: str, x: torch.Tensor, *params: Any, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run kernel ``name`` over the columns of ``x`` (n, d), split across torch's thread count.

    ``rows``: indices (m,) of the rows to take (the statistic of ``x[rows]``,
    read in place: no gathered (m, d) copy), or None for all of them.

    Returns:
        ``(out, bad)``: the (d,) statistic in the accumulation dtype, and (d,)
        uint8 codes, nonzero for the columns the caller must compute another
        way: ``BAD_NONFINITE`` for a NaN or an infinity, ``BAD_TIE`` for an
        undecidable tie (both bits may be set).
    """
    lib = library()
    assert lib is not None
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if rows is not None and (x.dtype != acc or x.stride(-1) != 1):
        x, rows = x.index_select(0, rows.to(x.device)), None  # widened anyway: only those rows
    v = x.to(acc)
    if v.stride(-1) != 1:  # the kernels read rows ld = stride(0) apart, each value by value
        v = v.contiguous()
    if rows is not None:
        rows = rows.to(device="cpu", dtype=torch.int64).contiguous()
    n = v.shape[0] if rows is None else rows.numel()
    d = v.shape[1]
    out = torch.empty(d, dtype=acc)
    bad = torch.zeros(d, dtype=torch.uint8)
    fn = getattr(lib, f"byz_{name}_{'f64' if acc == torch.float64 else 'f32'}")
    args = (v.data_ptr(), n, v.stride(0), None if rows is None else rows.data_ptr())
    tasks = min(_threads_wanted(), max(1, d // CHUNK_ALIGN))
    step = -(-d // tasks)
    step = -(-step // CHUNK_ALIGN) * CHUNK_ALIGN
    bounds = [(c, min(c + step, d)) for c in range(0, d, step)]

    def work(c0: int, c1: int) -> int:
        return fn(*args, c0, c1, *params, out.data_ptr(), bad.data_ptr())

    if any(_in_parallel(work, bounds)):
        raise MemoryError("byzance: the native kernel could not allocate its block buffer")
    return out, bad


def median(x: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinate-wise median of ``x`` (n, d) (of its ``rows`` if given) and the (d,) mask of
    columns left to the caller."""
    return _run("median", x, rows=rows)


def trimmed_mean(
    x: torch.Tensor, trim: int, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ranks ``trim + 1 .. n - trim`` of every column of ``x`` (n, d) (of its ``rows``
    if given), and the mask."""
    return _run("trimmed_mean", x, trim, rows=rows)


def mean_around_median(
    x: torch.Tensor, k: int, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the ``k`` values of every column of ``x`` (n, d) (of its ``rows`` if given)
    nearest its median, and the mask."""
    return _run("mean_around_median", x, k, rows=rows)


def weighted_median(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted median of every column of ``x`` (n, d) with row weights (n,), and the mask.

    The same definition and tolerance as
    :func:`byzance.aggregators.weighted.weighted_median_of_columns`: the
    cumulative weights are float64 and the half total W/2 is widened by
    1e-12 W on each side.
    """
    w = weights.to(device="cpu", dtype=torch.float64).contiguous()
    total = float(w.sum())
    half, slack = total / 2, 1e-12 * total
    return _run("weighted_median", x, w.data_ptr(), half - slack, half + slack)


def _self_check() -> None:
    """The loaded library against torch.sort on a small input with ties and signed zeros."""
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for n in (7, 8):
            x = torch.randint(-3, 4, (n, 40), generator=gen).to(dtype)
            x[:, 20:] = torch.randn(n, 20, generator=gen, dtype=dtype)
            x[0, 3] = -0.0
            srt = torch.sort(x, dim=0).values
            want = srt[n // 2] if n % 2 else srt[n // 2 - 1] * 0.5 + srt[n // 2] * 0.5
            got, bad = median(x)
            if bad.any() or not torch.equal(got, want):
                raise RuntimeError("the built library's median disagrees with torch.sort")
