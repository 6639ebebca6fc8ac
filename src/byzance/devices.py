"""Which torch device a run uses: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

A leaf module (no torch import until a device is resolved), used by the
config's validation, the simulator's builder, the benchmarks and the
distributed ranks. ``"auto"`` is CUDA when it is available, else the CPU.
Under torchrun each rank of a CUDA run takes its ``LOCAL_RANK`` device.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from byzance.errors import InvalidParameterError

if TYPE_CHECKING:
    import torch

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_spec(spec: str) -> str:
    """``spec`` if it is a device byzance accepts here; else one clear error."""
    if not isinstance(spec, str) or not DEVICE_PATTERN.match(spec):
        raise InvalidParameterError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {spec!r}."
        )
    if spec.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InvalidParameterError(
                f"device {spec!r}: no CUDA device is available here (torch "
                f"{torch.__version__}, torch.cuda.is_available() is False); use device = 'cpu', "
                "or 'auto' (CUDA where there is one, else the CPU)."
            )
        index = int(spec.split(":")[1]) if ":" in spec else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise InvalidParameterError(
                f"device {spec!r}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}."
            )
    return spec


def resolve_device(spec: str = "auto") -> torch.device:
    """The ``torch.device`` for ``spec`` (checked); under torchrun, CUDA means LOCAL_RANK's."""
    import torch

    check_device_spec(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    return torch.device(spec)


def identity_device(device: str, cuda_available: bool) -> str:
    """The kind of device a run computes on, as its identity sees it: ``"cpu"`` or ``"cuda"``.

    The GPU's index is left out (``cuda:1`` is ``cuda``): a grid deals cells to
    whichever GPU is free, and a run may resume on another GPU of the machine.
    The kind stays: the CPU and CUDA draw different random streams from the same
    seed, so a run moved from one to the other is another run. ``"auto"`` is
    what it resolves to here.
    """
    if device == "auto":
        return "cuda" if cuda_available else "cpu"
    return device.split(":")[0]


def available_devices() -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` where CUDA is available: what device tests run over."""
    import torch

    return ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def peak_memory_mib(device: torch.device) -> float | None:
    """The device's peak allocated memory since the process started (MiB); None on the CPU."""
    import torch

    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
