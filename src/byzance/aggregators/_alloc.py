"""Fresh result tensors for the rules that return rows, backed by huge pages on CPU.

Pre-aggregators (clipping, ARC, bucketing, NNM) return a new (m, d) tensor:
a rule never changes its caller's input. Above glibc's largest mmap
threshold (32 MiB) every such block comes fresh from the OS and is zeroed
page by page on first touch; in 4 KiB pages that costs more than the
arithmetic (n = 20, d = 1e6, float32: about 35 ms of a 45 ms product, the
product itself about 10 ms). Asking for transparent huge pages
(``madvise(MADV_HUGEPAGE)``, honoured when the kernel's THP setting is
``always`` or ``madvise``) takes 512 times fewer faults. torch's own
allocator does so only under the ``THP_MEM_ALLOC_ENABLE`` environment
variable, read once per process; here the block is an anonymous private
mapping whose lifetime the tensor holds (``torch.frombuffer``), so nothing
global changes. Elsewhere (other devices, small blocks, no THP) it is
``torch.empty``.
"""

from __future__ import annotations

import math
import mmap
import warnings

import torch

# glibc serves smaller blocks from its heap (pages already touched, reused); above it, mmap.
_HUGE_PAGE_MIN_BYTES = 32 << 20
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)
_MAP_FLAGS = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)


def empty_rows(shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """Uninitialized (or zero) tensor of ``shape`` with ``like``'s dtype and device.

    On a CPU with transparent huge pages, blocks of at least 32 MiB are
    mapped with huge pages (see the module docstring); write every element.
    """
    nbytes = math.prod(shape) * like.element_size()
    if like.device.type != "cpu" or nbytes < _HUGE_PAGE_MIN_BYTES or _MADV_HUGEPAGE is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    try:
        block = mmap.mmap(-1, nbytes, flags=_MAP_FLAGS)
        block.madvise(_MADV_HUGEPAGE)
    except (OSError, ValueError):  # no THP in this kernel, or no address space left
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    with warnings.catch_warnings():  # frombuffer warns about non-writable buffers only
        warnings.simplefilter("ignore")
        flat = torch.frombuffer(block, dtype=like.dtype, count=math.prod(shape))
    return flat.view(shape)
