"""Devices of distributed runs: the backend, where vectors are gathered, one rank per GPU.

No GPU here: the CUDA decisions are tested with ``torch.cuda`` faked, the
movements with the ``meta`` device standing in for a GPU.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from byzance.distributed import backend, run, step, topologies
from byzance.distributed.backend import (
    CUDA_BACKEND,
    backend_for,
    backends_by_device,
    check_one_rank_per_gpu,
    gather_device_type,
    init_distributed,
    shared_gpus,
)
from byzance.distributed.channel import Frame, Kind
from byzance.distributed.node import Node, model_device, to_host
from byzance.distributed.udp_link import UdpLink
from byzance.errors import InvalidParameterError


def fake_gpus(monkeypatch, count: int = 2) -> list:
    """torch.cuda as on a machine with ``count`` GPUs; returns the set_device calls."""
    calls: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(device))
    return calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the backend ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cpu", "gloo"),
        (torch.device("cpu"), "gloo"),
        ("cuda", CUDA_BACKEND),
        ("cuda:1", CUDA_BACKEND),
        (torch.device("cuda", 3), CUDA_BACKEND),
    ],
)
def test_backend_follows_the_device(device, expected):
    assert backend_for(device) == expected
    assert CUDA_BACKEND == "cpu:gloo,cuda:nccl"


def test_backend_for_another_device_is_refused():
    with pytest.raises(InvalidParameterError, match=r"no torch\.distributed backend for device"):
        backend_for("mps")


def test_backends_by_device():
    assert backends_by_device("gloo") == {"cpu": "gloo", "cuda": "gloo"}
    assert backends_by_device("nccl") == {"cuda": "nccl"}
    assert backends_by_device("cpu:gloo,cuda:nccl") == {"cpu": "gloo", "cuda": "nccl"}
    assert backends_by_device("cpu:gloo") == {"cpu": "gloo"}


@pytest.mark.parametrize(
    ("group", "tensor", "where"),
    [
        ("gloo", "cpu", "cpu"),
        ("gloo", "cuda", "cpu"),  # gloo-only group: a CUDA gradient goes through host memory
        ("cpu:gloo", "cuda", "cpu"),
        (CUDA_BACKEND, "cuda", "cuda"),  # NCCL, GPU to GPU
        (CUDA_BACKEND, "cpu", "cpu"),
        ("nccl", "cuda", "cuda"),
    ],
)
def test_where_gradients_are_gathered(group, tensor, where):
    assert gather_device_type(group, tensor) == where


def test_a_cpu_gradient_in_an_nccl_group_is_refused_with_the_fix():
    with pytest.raises(InvalidParameterError, match="moves CUDA tensors only") as err:
        gather_device_type("nccl", "cpu")
    assert "move the model to this rank's GPU" in str(err.value)
    assert CUDA_BACKEND in str(err.value)


def test_gather_gradients_refuses_a_cpu_gradient_on_nccl(monkeypatch):
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    with pytest.raises(InvalidParameterError, match="CUDA tensors only"):
        step.gather_gradients(torch.ones(3))


def test_gather_gradients_on_a_gloo_group_keeps_the_gradient_s_device(monkeypatch):
    seen = {}

    def all_gather_single(out, tensor, group=None):
        seen["device"] = tensor.device
        out.copy_(tensor.repeat(2))

    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
    monkeypatch.setattr(dist, "all_gather_single", all_gather_single)
    out = step.gather_gradients(torch.arange(3.0))
    assert seen["device"].type == "cpu"
    assert out.shape == (2, 3) and out.device.type == "cpu"
    torch.testing.assert_close(out[1], torch.arange(3.0))


# -- one rank per GPU -------------------------------------------------------------------------
def test_ranks_on_distinct_gpus_or_the_cpu_pass():
    check_one_rank_per_gpu([("a", "cuda:0"), ("a", "cuda:1"), ("b", "cuda:0")])
    check_one_rank_per_gpu([("a", "cpu"), ("a", "cpu"), ("a", "cpu")])
    assert shared_gpus([("a", "cpu"), ("a", "cpu")]) == {}


def test_two_ranks_on_one_gpu_are_refused_by_name():
    placements = [("a", "cuda:0"), ("a", "cuda:1"), ("a", "cuda:0"), ("b", "cuda:0")]
    assert shared_gpus(placements) == {("a", "cuda:0"): [0, 2]}
    with pytest.raises(InvalidParameterError, match=r"ranks \[0, 2\] are all on cuda:0 of a"):
        check_one_rank_per_gpu(placements)


# -- joining the group ------------------------------------------------------------------------
def test_cuda_is_refused_without_cuda_before_joining(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidParameterError, match="no CUDA device is available here"):
        init_distributed("cuda")
    assert not dist.is_initialized()


def test_auto_joins_a_gloo_group_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }.items():
        monkeypatch.setenv(key, value)
    try:
        device = init_distributed("auto", timeout_s=60)
        assert device == torch.device("cpu")
        assert dist.get_backend() == "gloo"
    finally:
        dist.destroy_process_group()


class FakeGroup:
    """dist.init_process_group / all_gather_object recorded; ``placements`` what others say."""

    def __init__(self, monkeypatch, placements=None):
        self.backend = None
        self.gathered = False
        self.placements = placements
        monkeypatch.setattr(dist, "is_initialized", lambda: self.backend is not None)
        monkeypatch.setattr(dist, "init_process_group", self.init)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
        monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
        monkeypatch.setattr(dist, "all_gather_object", self.all_gather_object)

    def init(self, backend, timeout=None):
        self.backend = backend

    def all_gather_object(self, out, mine):
        self.gathered = True
        out[:] = self.placements or [mine, ("other", "cuda:1")]


def test_cuda_under_torchrun_takes_the_local_rank_gpu_and_nccl(monkeypatch):
    set_device = fake_gpus(monkeypatch, count=2)
    group = FakeGroup(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "1")
    device = init_distributed("cuda")
    assert device == torch.device("cuda", 1)
    assert set_device == [torch.device("cuda", 1)]
    assert group.backend == CUDA_BACKEND
    assert group.gathered  # robust_step's ranks check that no two share a GPU


def test_cuda_ranks_sharing_a_gpu_are_refused(monkeypatch):
    fake_gpus(monkeypatch, count=1)
    host = socket.gethostname()
    FakeGroup(monkeypatch, placements=[(host, "cuda:0"), (host, "cuda:0")])
    monkeypatch.setenv("LOCAL_RANK", "1")  # 1 % 1 GPU: cuda:0, like rank 0
    with pytest.raises(InvalidParameterError, match="NCCL allows one rank per GPU"):
        init_distributed("cuda")


def test_the_runner_joins_with_the_device_s_backend_and_may_share_a_gpu(monkeypatch):
    fake_gpus(monkeypatch, count=1)
    group = FakeGroup(monkeypatch, placements=[("h", "cuda:0"), ("h", "cuda:0")])
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run.init_process_group(device="cuda") == (0, 2)
    assert group.backend == CUDA_BACKEND
    assert not group.gathered  # its frames are host tensors on gloo: no NCCL, no check


def test_the_runner_on_the_cpu_joins_gloo(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    group = FakeGroup(monkeypatch)
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "1")
    run.init_process_group(device="auto")
    assert group.backend == "gloo"


def test_the_package_exports_the_device_helpers():
    import byzance.distributed as bd

    assert bd.backend_for is backend.backend_for
    assert bd.init_distributed is backend.init_distributed


# -- where the runner's tensors live ----------------------------------------------------------
def test_model_device_and_host_copies():
    assert model_device(torch.nn.Linear(2, 1)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    meta = torch.nn.Linear(2, 1).to("meta")
    assert model_device(meta).type == "meta"
    v = torch.arange(3, dtype=torch.float64)
    host = to_host(v)
    assert host.device.type == "cpu" and host.dtype == torch.float32
    w = torch.arange(3.0)
    assert to_host(w).data_ptr() == w.data_ptr()  # no copy when already a float32 host tensor


def fake_node(device: str = "meta") -> SimpleNamespace:
    node = SimpleNamespace(
        device=torch.device(device),
        order=[0, 1, 2],
        byzantine=[2],
        d=3,
        config=SimpleNamespace(step_timeout=1.0, udp_grace=0.0),
    )
    node.to_device = lambda t: Node.to_device(node, t)
    return node


def test_received_frames_move_to_the_node_s_device():
    node = fake_node()
    frames = {r: Frame(r, 5, Kind.GRADIENT, 0.5, torch.ones(3)) for r in (1, 2)}
    channel = SimpleNamespace(collect=lambda step, kind, expected, timeout: (frames, {}))
    arrivals, problems, stats = topologies.receive_vectors(node, channel, None, 5, {1, 2})
    assert not problems and stats == {}
    assert {a.vector.device.type for a in arrivals.values()} == {"meta"}
    arrivals[0] = topologies.Arrival(torch.ones(3, device="meta"), 0.1)
    inputs, present, mask, ranks, _ = topologies._gather_inputs(node, arrivals)
    assert ranks == [0, 1, 2] and present is None
    assert inputs.device.type == "meta" and mask.device.type == "meta"


def test_sent_vectors_leave_the_device_once(monkeypatch):
    sent = []
    channel = SimpleNamespace(send=lambda *args: sent.append(args))
    node = SimpleNamespace(wrong_size=lambda vector, step: vector)
    vector = torch.arange(3, dtype=torch.float64)  # stands for a GPU vector: not a host f32
    topologies.send_vector(node, channel, None, 4, vector, 0.5, [1, 2])
    payloads = [args[3] for args in sent]
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in payloads)
    assert payloads[0] is payloads[1]  # one host copy for every peer


def test_udp_collect_copies_the_host_buffers_to_the_device():
    link = object.__new__(UdpLink)
    stats = SimpleNamespace(datagrams_accepted=2, rejected={}, coordinates_missing=0, crashed=[])
    got = SimpleNamespace(
        workers=(1,),
        values=torch.ones(1, 3),
        present=torch.ones(1, 3, dtype=torch.bool),
        stats=stats,
    )
    link.receiver = SimpleNamespace(datagrams_seen=2, collect=lambda step, timeout, workers: got)
    link.seen_before = 0
    on_host = link.collect(1, [1], grace=0.0, expected=2)
    assert on_host.values.device.type == "cpu"
    moved = link.collect(1, [1], grace=0.0, expected=0, device="meta")
    assert moved.values.device.type == "meta" and moved.present.device.type == "meta"
    assert moved.present.dtype == torch.bool
