"""Run configs: TOML in, flags over it, errors that name the key, the value and what works."""

from __future__ import annotations

import pytest

from byzance import errors
from byzance.runs.config import ConfigError, load, parse_flags


def write(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_toml_and_flags(tmp_path):
    path = write(
        tmp_path, 'aggregator = "krum"\nworkers = 11\nbyzantine = 2\n[attack_params]\nz = 1.5\n'
    )
    cfg = load(path, parse_flags(["--attack", "alie", "--f=3", "--lr", "0.05"]))
    assert (cfg.aggregator, cfg.workers, cfg.attack, cfg.f, cfg.lr) == ("krum", 11, "alie", 3, 0.05)
    assert cfg.attack_params == {"z": 1.5}
    assert cfg.tolerated == 3


def test_pipeline_shorthand_and_preaggregator_params():
    cfg = load(None, {"aggregator": "nnm>trimmed_mean"})
    assert cfg.preaggregators == ["nnm"] and cfg.aggregator == "trimmed_mean"
    assert cfg.rule().name == "nnm>trimmed_mean"
    cfg = load(
        None,
        {
            "preaggregators": "bucketing",
            "preaggregator_params": "{bucketing = {s = 2}}",
            "aggregator": "median",
            "workers": 20,
            "byzantine": 2,
        },
    )
    assert cfg.rule().stages[0].defaults == {"s": 2}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"agregator": "krum"}, "unknown config key 'agregator'. Did you mean 'aggregator'"),
        ({"aggregator": "krun"}, "unknown value 'krun'. Did you mean 'krum'"),
        ({"attack": "alee"}, "Did you mean 'alie'"),
        ({"workers": "many"}, "'workers': 'many' is not a valid int"),
        ({"steps": 0}, "'steps' must be >= 1"),
        ({"byzantine": 20}, "at least one worker is honest"),
        ({"worker_momentum": 1.0}, r"must be in \[0, 1\)"),
        ({"partition": "random"}, "Accepted: iid, dirichlet, extreme"),
        ({"dataset": "mnist"}, "Did you mean 'mnist5k'"),
        ({"preaggregator_params": "{nnm = {}}"}, "not among the preaggregators"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load(None, overrides)


def test_rule_requirement_checked_before_training():
    with pytest.raises(errors.ToleranceError, match="krum requires n >= 2f \\+ 3"):
        load(None, {"aggregator": "krum", "workers": 10, "byzantine": 4})


def test_unknown_rule_parameter_is_refused_on_load():
    with pytest.raises(errors.InvalidParameterError, match="multi_krum has no parameter 'k'"):
        load(None, {"aggregator": "multi_krum", "aggregator_params": "{k = 3}"})


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "aggregator = "))


def test_flags_need_values():
    with pytest.raises(ConfigError, match="needs a value"):
        parse_flags(["--aggregator"])
    with pytest.raises(ConfigError, match="expected a --key value pair"):
        parse_flags(["krum"])
