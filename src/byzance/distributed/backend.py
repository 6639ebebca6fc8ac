"""Which torch.distributed backend a rank's device takes, and where tensors meet.

- CPU: ``"gloo"``.
- CUDA: ``"cpu:gloo,cuda:nccl"``: collectives on CUDA tensors (``robust_step``'s
  all-gather, a user's own) go through NCCL, GPU to GPU; CPU tensors (barriers,
  object collectives, the runner's framed messages) through gloo.

The runner (parameter server, decentralized) sends its framed messages as host
tensors on gloo whatever the device: they are bounded by a deadline, and a
peer that crashes, hangs or announces a wrong size is left behind. NCCL can do
none of that: a posted receive cannot be abandoned (its watchdog aborts the
process when the group's timeout passes) and a payload of another size than
the one posted is not detected. So the model, the data and the aggregation
live on the GPU, and each vector crosses host memory once when it is sent and
once when it arrives, as over UDP. Several ranks may therefore share one GPU in
the runner.

NCCL itself refuses two ranks of a group on the same GPU. :func:`init_distributed`
(for ``robust_step``) refuses that placement at once, with the ranks and the
GPU named, instead of NCCL's error at the first collective.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from byzance.errors import InvalidParameterError

if TYPE_CHECKING:
    import torch

GLOO = "gloo"
CUDA_BACKEND = "cpu:gloo,cuda:nccl"


def backend_for(device: torch.device | str) -> str:
    """The process group's backend for a rank whose tensors live on ``device``."""
    kind = device if isinstance(device, str) else device.type
    kind = kind.split(":")[0]
    if kind == "cpu":
        return GLOO
    if kind == "cuda":
        return CUDA_BACKEND
    raise InvalidParameterError(
        f"no torch.distributed backend for device {str(device)!r}: byzance runs ranks on "
        "'cpu' (gloo) or 'cuda' (NCCL for CUDA tensors, gloo for host ones)."
    )


def backends_by_device(backend: str) -> dict[str, str]:
    """``"cpu:gloo,cuda:nccl"`` -> {"cpu": "gloo", "cuda": "nccl"}; ``"gloo"`` serves both,
    ``"nccl"`` CUDA only (what torch registers for a single backend name)."""
    backend = backend.lower()
    if ":" not in backend:
        if backend == "nccl":
            return {"cuda": "nccl"}
        return {"cpu": backend, "cuda": backend}
    pairs = (item.split(":", 1) for item in backend.split(",") if item)
    return {kind.strip(): name.strip() for kind, name in pairs}


def gather_device_type(backend: str, device_type: str) -> str:
    """Where to all-gather a vector that lives on ``device_type`` in a group of ``backend``.

    On its own device when the group has a backend for it that gathers there
    natively (NCCL for CUDA, gloo for the CPU); a CUDA vector in a group that
    has only gloo is gathered through host memory (gloo's CUDA support is
    partial). A CPU vector in an NCCL-only group is refused: NCCL moves CUDA
    tensors only.
    """
    served = backends_by_device(backend)
    name = served.get(device_type)
    if device_type == "cuda":
        return "cuda" if name == "nccl" else "cpu"
    if name is None:
        raise InvalidParameterError(
            f"the process group's backend is {backend!r}, which moves CUDA tensors only, and "
            f"this gradient is on the {device_type.upper()}: move the model to this rank's GPU "
            "(byzance.distributed.backend.init_distributed returns it), or start the group with "
            f"backend {CUDA_BACKEND!r} (backend_for(device))."
        )
    return device_type


def shared_gpus(placements: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[int]]:
    """The GPUs that more than one rank uses: (host, device) -> ranks; ``placements[r]``
    is rank r's (host, device). CPU ranks never conflict."""
    users: dict[tuple[str, str], list[int]] = {}
    for rank, (host, device) in enumerate(placements):
        if device.startswith("cuda"):
            users.setdefault((host, device), []).append(rank)
    return {where: ranks for where, ranks in users.items() if len(ranks) > 1}


def check_one_rank_per_gpu(placements: Sequence[tuple[str, str]]) -> None:
    """Raise one clear error if two ranks would share a GPU (NCCL refuses it)."""
    shared = shared_gpus(placements)
    if not shared:
        return
    (host, device), ranks = next(iter(shared.items()))
    raise InvalidParameterError(
        f"ranks {ranks} are all on {device} of {host}: NCCL allows one rank per GPU. Start "
        "at most as many ranks per machine as it has GPUs (torchrun --nproc-per-node), or "
        "use device = 'cpu'. (byzance launch / python -m byzance.distributed, whose "
        "messages go through host memory on gloo, may share a GPU between ranks.)"
    )


def init_distributed(
    device: str = "auto", *, timeout_s: float = 1800.0, one_rank_per_gpu: bool = True
) -> torch.device:
    """Join torchrun's process group with the backend of ``device``; returns this rank's device.

    ``device`` is ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; under torchrun
    ``"cuda"`` is the ``LOCAL_RANK`` GPU (:func:`byzance.devices.resolve_device`),
    which becomes the current CUDA device. With ``one_rank_per_gpu`` (what NCCL
    collectives need), ranks that would share a GPU are refused on every rank.
    A group already initialized is kept as it is.
    """
    import torch
    import torch.distributed as dist

    from byzance.devices import resolve_device

    resolved = resolve_device(device)  # refuses CUDA where there is none, with the reason
    if resolved.type == "cuda":
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(resolved)
    if dist.is_initialized():
        return resolved
    dist.init_process_group(backend_for(resolved), timeout=datetime.timedelta(seconds=timeout_s))
    if resolved.type == "cuda" and one_rank_per_gpu:
        placements: list[tuple[str, str] | None] = [None] * dist.get_world_size()
        # an object collective: on the gloo half of the group, host memory
        dist.all_gather_object(placements, (socket.gethostname(), str(resolved)))
        check_one_rank_per_gpu([p for p in placements if p is not None])
    return resolved
