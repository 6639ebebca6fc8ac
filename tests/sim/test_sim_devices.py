"""The simulator on each available device: the CPU everywhere, CUDA where there is one."""

from __future__ import annotations

import pytest
import torch

from byzance.runs.config import ConfigError, RunConfig, load
from byzance.runs.runner import Run, train

SMALL = dict(
    dataset="digits",
    model="mlp",
    model_params={"hidden": [16]},
    workers=6,
    byzantine=1,
    batch_size=8,
    steps=4,
    eval_every=4,
    checkpoint_every=2,
)


@pytest.mark.parametrize(
    "changes",
    [
        {"aggregator": "median", "attack": "alie", "worker_momentum": 0.9},
        {"aggregator": "bucketing>centered_clipping", "attack": "large_norm"},
        {"mode": "async", "attack": "gaussian", "workers": 10, "byzantine": 2},
        {"servers": 3, "byzantine_servers": 1, "aggregator": "median", "attack": "sign_flip"},
        {"algorithm": "fedavg", "clients_per_round": 4, "local_steps": 2, "attack": "sign_flip",
         "aggregator": "median", "lr": 1.0},
        {"aggregator": "krum", "attack": "label_flip", "precision": "bf16"},
    ],
    ids=["sync", "pipeline", "async", "servers", "fedavg", "bf16"],
)  # fmt: skip
def test_every_mode_trains_and_resumes_on_the_device(tmp_path, device, changes):
    config = RunConfig(**{**SMALL, **changes}, device=device.type, out_dir=str(tmp_path / "run"))
    run = Run(load(None, {**config.to_dict()}))
    assert next(run.model.parameters()).device.type == device.type
    assert run.data.x_train.device.type == device.type
    result = train(config)
    assert result.final["step"] == 4 and "accuracy" in result.final
    if device.type == "cuda":
        assert result.final["peak_memory_mib"] > 0
    resumed = Run(config)
    assert resumed.restore()[0] == 4  # a checkpoint on the device loads back onto it


def test_auto_is_the_cpu_without_cuda_and_cuda_is_refused_in_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert Run(load(None, {**SMALL, "device": "auto"})).device.type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device is available here"):
        load(None, {**SMALL, "device": "cuda"})
    with pytest.raises(ConfigError, match="'auto', 'cpu', 'cuda' or 'cuda:N'"):
        load(None, {**SMALL, "device": "gpu"})
