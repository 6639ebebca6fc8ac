"""The distributed keys of a run config, and the fault specs."""

from __future__ import annotations

import pytest

from byzance.distributed.launch import torchrun_command
from byzance.distributed.node import byzantine_ranks
from byzance.runs.config import ConfigError, load
from byzance.runs.injected_faults import Fault, FaultSpecError, parse_fault


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("crash@5", Fault("crash", 5)),
        ("sleep@3:1.5", Fault("sleep", 3, 1.5)),
        ("slow:0.2", Fault("slow", 1, 0.2)),
        ("wrong_size", Fault("wrong_size", 1)),
        ("wrong_size@4", Fault("wrong_size", 4)),
    ],
)
def test_fault_specs_parse(spec: str, fault: Fault) -> None:
    assert parse_fault(spec) == fault


def test_wrong_size_starts_at_its_step() -> None:
    fault = parse_fault("wrong_size@3")
    assert [fault.sends_wrong_size(s) for s in (1, 2, 3, 4)] == [False, False, True, True]


@pytest.mark.parametrize("spec", ["explode", "crash", "crash@x", "sleep@3", "slow"])
def test_unknown_fault_specs_say_what_works(spec: str) -> None:
    with pytest.raises(FaultSpecError, match="crash@STEP"):
        parse_fault(spec)


def test_byzantine_ranks_default_to_the_last_ones_and_set_byzantine() -> None:
    config = load(
        None, {"workers": 6, "byzantine": 2, "attack": "sign_flip", "aggregator": "median"}
    )
    assert byzantine_ranks(config, 6) == [4, 5]
    config = load(None, {"workers": 6, "byzantine_ranks": [1, 3], "aggregator": "median"})
    assert config.byzantine == 2 and byzantine_ranks(config, 6) == [1, 3]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"byzantine_ranks": [1, 1]}, "distinct ranks"),
        ({"byzantine_ranks": [9]}, "distinct ranks"),
        ({"byzantine": 2, "byzantine_ranks": [1]}, "disagree"),
        ({"topology": "ring"}, "Accepted: parameter_server, decentralized"),
        ({"step_timeout": 0}, "step_timeout"),
        ({"faults": {"9": "crash@2"}}, "not a rank"),
        ({"faults": {"1": "boom"}}, "unknown fault"),
        ({"faults": {"1": 5}}, "'faults': \\{'1': 5\\} is not a table of strings"),
        (
            {"step_timeout": float("inf")},
            "'step_timeout': inf is not a finite number in \\(0, 1e\\+07\\]",
        ),
        ({"transport": "udp"}, "'udp_keys': transport 'udp' needs"),
        ({"byzantine": 0, "byzantine_ranks": [0, 1, 2, 3, 4]}, "at least one must be honest"),
    ],
)
def test_bad_distributed_keys_are_refused(overrides: dict, message: str) -> None:
    base = {"workers": 5, "byzantine": 1, "aggregator": "median"}
    with pytest.raises((ConfigError, FaultSpecError), match=message):
        load(None, {**base, **overrides})


def test_launch_runs_torchrun_standalone() -> None:
    cmd = torchrun_command(5, "run.toml", ["--steps", "3"])
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=5" in cmd
    assert cmd[-5:] == ["byzance.distributed", "--config", "run.toml", "--steps", "3"]


def test_the_parameter_server_cannot_be_byzantine() -> None:
    base = {"workers": 5, "aggregator": "median", "byzantine_ranks": [0]}
    with pytest.raises(ConfigError, match="rank 0 is the parameter server"):
        load(None, base)
    assert load(None, {**base, "topology": "decentralized"}).byzantine == 1


def test_the_distributed_benchmark_runs_on_two_processes() -> None:
    from byzance.experiments.bench_dist import _drop_in

    rows = _drop_in(2, "lenet", ("median",), steps=1, kinds=("robust_step", "sharded"))
    assert [r["mode"] for r in rows] == [
        "average",
        "robust_step:median",
        "sharded:median",
    ]
    assert all(r["step_ms"] > 0 and r["procs"] == 2 for r in rows)


def test_launch_refuses_a_bad_config_before_starting_processes(tmp_path) -> None:
    from typer.testing import CliRunner

    from byzance.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["launch", "--nproc", "3", "--config", str(tmp_path / "nope.toml")])
    assert done.exit_code == 2 and "does not exist" in " ".join(done.output.split())
    bad = tmp_path / "bad.toml"
    bad.write_text('aggregator = "krum"\nbyzantine = 1\n')
    done = runner.invoke(app, ["launch", "--nproc", "3", "--config", str(bad)])
    assert done.exit_code == 2 and "krum requires" in " ".join(done.output.split())


def test_the_datagram_size_range_is_the_udp_transports() -> None:
    from byzance.distributed.udp.datagram import COORDINATE_BYTES, MAX_UDP_PAYLOAD, OVERHEAD
    from byzance.runs.config import SCHEMA, UDP_DATAGRAM_MAX, UDP_DATAGRAM_MIN

    assert (UDP_DATAGRAM_MIN, UDP_DATAGRAM_MAX) == (OVERHEAD + COORDINATE_BYTES, MAX_UDP_PAYLOAD)
    spec = SCHEMA.specs["udp_datagram_bytes"]
    assert (spec.ge, spec.le) == (UDP_DATAGRAM_MIN, UDP_DATAGRAM_MAX)
    with pytest.raises(ConfigError, match="'udp_datagram_bytes': 10 is not an integer in"):
        load(None, {"udp_datagram_bytes": 10})


def test_distributed_keys_in_their_sections(tmp_path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        '[participants]\nworkers = 5\n[rule]\naggregator = "median"\n'
        '[processes]\nbyzantine_ranks = [4]\nfaults = { "2" = "crash@3" }\n'
        '[communication]\ntransport = "udp"\nudp_keys = "env:KEYS"\nudp_loss = { drop = 0.1 }\n'
    )
    config = load(path)
    assert config.byzantine == 1 and config.faults == {"2": "crash@3"}
    assert config.transport == "udp" and config.udp_loss == {"drop": 0.1}
    path.write_text("[communication]\nbyzantine_ranks = [4]\n")
    with pytest.raises(ConfigError, match=r"belongs in section \[processes\]"):
        load(path)
