"""Run configs: TOML (flat or sectioned) in, flags over it, every value checked before any work."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
import torch

from byzance import errors
from byzance.runs.config import (
    KEYS,
    SCHEMA,
    ConfigError,
    ConfigToleranceError,
    RunConfig,
    dumps,
    flatten,
    load,
    parse_flags,
    validate,
)

FAST = {"dataset": "digits"}  # a small data set: validation loads it


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
    cfg = load(None, {**FAST, "aggregator": "nnm>trimmed_mean"})
    assert cfg.preaggregators == ["nnm"] and cfg.aggregator == "trimmed_mean"
    assert cfg.rule().name == "nnm>trimmed_mean"
    cfg = load(
        None,
        {
            **FAST,
            "preaggregators": "bucketing",
            "preaggregator_params": "{bucketing = {s = 2}}",
            "aggregator": "median",
            "workers": 20,
            "byzantine": 2,
        },
    )
    assert cfg.rule().stages[0].defaults == {"s": 2}


def test_every_key_has_a_section_a_description_and_a_unique_name():
    assert len(KEYS) == len(dataclasses.fields(RunConfig)) == len(set(KEYS))
    sections = SCHEMA.sections
    assert {"run", "data", "rule", "adversary", "optimizer", "processes"} <= set(sections)
    assert not set(sections) & set(KEYS)  # a [table] is never mistaken for a key
    for name, spec in SCHEMA.specs.items():
        assert spec.help and "\n" not in spec.help, name
    assert SCHEMA.specs["workers"].section == "participants"
    assert SCHEMA.specs["udp_fill"].section == "communication"


def test_sectioned_flat_and_mixed_files_read_the_same(tmp_path):
    flat = write(tmp_path, 'dataset = "digits"\nworkers = 7\nbyzantine = 1\nlr = 0.05\n')
    sectioned = tmp_path / "sectioned.toml"
    sectioned.write_text(
        '[data]\ndataset = "digits"\n[participants]\nworkers = 7\nbyzantine = 1\n'
        "[optimizer]\nlr = 0.05\n"
    )
    mixed = tmp_path / "mixed.toml"
    mixed.write_text(
        'lr = 0.05\n[data]\ndataset = "digits"\n[participants]\nworkers = 7\nbyzantine = 1\n'
    )
    assert load(flat) == load(sectioned) == load(mixed)


def test_dumps_writes_sections_that_load_back_to_the_same_config(tmp_path):
    cfg = load(
        None,
        {
            **FAST,
            "aggregator": "nnm>krum",
            "workers": 9,
            "byzantine": 2,
            "attack": "alie",
            "attack_params": {"z": 1.5},
            "faults": {"2": "crash@4"},
            "udp_loss": {"drop": 0.1},
            "out_dir": 'runs/a "quoted" dir',
        },
    )
    text = dumps(cfg)
    table = tomllib.loads(text)
    assert table["rule"]["preaggregators"] == ["nnm"] and table["participants"]["workers"] == 9
    assert set(table) == set(SCHEMA.sections)
    path = write(tmp_path, text)
    assert load(path) == cfg
    assert cfg.to_dict()["workers"] == 9  # to_dict stays flat
    assert flatten(table) == {k: v for k, v in cfg.to_dict().items()}


def test_overrides_given_flat_win_over_the_same_key_in_a_section():
    # What a grid does: a sectioned [base], then its axes' flat keys over it.
    base = {"data": {"dataset": "digits"}, "adversary": {"attack": "alie", "attack_params": {}}}
    cfg = load(None, {**base, "attack": "sign_flip"})
    assert cfg.attack == "sign_flip" and cfg.dataset == "digits"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[run]\nworkers = 3\n", r"'workers' belongs in section \[participants\], not \[run\]"),
        ("[run]\nsed = 3\n", "unknown config key 'sed' in \\[run\\]. Did you mean 'seed'"),
        ("workers = 3\n[participants]\nworkers = 4\n", "'workers' is given twice"),
        ('run = "fast"\n', "'run' is a section"),
        ("[run]\n[run.data]\nseed = 1\n", "sections do not nest"),
        ('kardam = "yes"\n', "'kardam': 'yes' is not true or false"),  # TOML: real booleans
        ("kardam = 1\n", "'kardam': 1 is not true or false"),
        ('workers = "20"\n', "'workers': '20' is not an integer"),
        ("workers = 20.5\n", "'workers': 20.5 is not an integer"),
        ("lr = nan\n", "'lr': nan is not a finite number in \\(0, 1e\\+30\\]"),
        ("lr = inf\n", "'lr': inf is not a finite number in \\(0, 1e\\+30\\]"),
    ],
)
def test_file_errors_name_the_key_and_what_is_accepted(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load(write(tmp_path, text))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"agregator": "krum"}, "unknown config key 'agregator'. Did you mean 'aggregator'"),
        ({"aggregator": "krun"}, "unknown value 'krun'. Did you mean 'krum'"),
        ({"attack": "alee"}, "Did you mean 'alie'"),
        ({"workers": "many"}, "'workers': 'many' is not an integer >= 1"),
        ({"steps": 0}, "'steps': 0 is not an integer >= 1"),
        ({"steps": "2.5"}, "'steps': '2.5' is not an integer"),
        ({"byzantine": 20}, "at least one worker is honest"),
        ({"worker_momentum": 1.0}, r"is not a finite number in \[0, 1\)"),
        ({"partition": "random"}, "Accepted: iid, dirichlet, extreme"),
        ({"dataset": "mnist"}, "Did you mean 'mnist5k'"),
        ({"preaggregator_params": "{nnm = {}}"}, "not among the preaggregators"),
        ({"preaggregators": "nnm,bucketz"}, "'preaggregators': unknown value 'bucketz'"),
        # booleans: true/false/1/0/yes/no from the command line, nothing else
        ({"kardam": "maybe"}, "'kardam': 'maybe' is not true or false"),
        # numbers: finite, in range; ints integral
        ({"lr": "nan"}, "'lr': 'nan' is not a finite number in \\(0, 1e\\+30\\]"),
        ({"lr": "inf"}, "'lr': 'inf' is not a finite number in \\(0, 1e\\+30\\]"),
        ({"lr": "-0.1"}, "'lr': '-0.1' is not a finite number in \\(0, 1e\\+30\\]"),
        ({"seed": "-1"}, "'seed': '-1' is not an integer >= 0"),
        ({"f": "-2"}, r"'f': '-2' is not an integer >= 0 \(or -1"),
        ({"l2": "-0.5"}, r"'l2': '-0.5' is not a finite number >= 0 \(or -1"),
        ({"byzantine_ranks": "1,-2"}, r"'byzantine_ranks'.*\(-2 in"),
        ({"udp_datagram_bytes": 70000}, r"'udp_datagram_bytes': 70000 is not an integer in \[76"),
        # keys that others depend on are reported first
        ({"workers": "-3"}, "'workers': '-3' is not an integer >= 1"),
        ({"workers": 2, "slow_workers": 5, "byzantine": 0}, "'slow_workers' must be in"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load(None, {**FAST, **overrides})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        # data: the split must leave every worker a training sample; parameters by name and value
        ({"test_fraction": "0.9999"}, "'test_fraction': loading 'digits'.* 0 training samples"),
        ({"test_fraction": "0.99"}, "'test_fraction': 0.99 leaves 18 training sample"),
        (
            {"dataset": "synthetic_linear", "model": "logistic", "dataset_params": "{samples = 1}"},
            "'dataset_params': loading 'synthetic_linear': samples must be an integer >= 2",
        ),
        (
            {
                "dataset": "synthetic_linear",
                "model": "logistic",
                "dataset_params": "{samples = 2.5}",
            },
            "'dataset_params': samples = 2.5 is not an integer",
        ),
        ({"dataset_params": "{sample = 3}"}, "data set 'digits' has no parameter 'sample'"),
        (
            {"partition": "extreme", "classes_per_worker": 11},
            "'classes_per_worker': .*exceeds the 10 classes",
        ),
        # model: built for the data set, one forward pass, the optimum's shape
        (
            {"dataset": "synthetic_logistic", "model": "mlp"},
            "'model': 'synthetic_logistic' measures the distance to its known optimum.*"
            "model = 'logistic'",
        ),
        (
            {"dataset": "synthetic_linear", "model": "lenet"},
            "'model': building lenet for 'synthetic_linear'.*needs images",
        ),
        ({"model_params": "{hidden = 'abc'}"}, "'model_params': hidden = \"abc\" is not a list"),
        ({"model_params": "{hiden = [3]}"}, "no parameter 'hiden'. Did you mean 'hidden'"),
        # rule: parameter names and values, then a dry run
        (
            {"aggregator": "multi_krum", "aggregator_params": "{m = 'x'}"},
            "'aggregator_params': m = \"x\" is not an integer",
        ),
        (
            {"aggregator": "bulyan", "byzantine": 2, "aggregator_params": "{selection = 'krumm'}"},
            "'aggregator_params': bulyan fails on 20 random vectors.*Did you mean 'krum'",
        ),
        (
            {"aggregator": "centered_clipping", "aggregator_params": "{tau = -1.0}"},
            "'aggregator_params': .*centered_clipping.*tau > 0",
        ),
        # attack: parameter names and values, then a dry run
        ({"attack": "alie", "attack_params": "{z = 'abc'}"}, "'attack_params': z = \"abc\" is not"),
        ({"attack": "alie", "attack_params": "{zz = 1.0}"}, "no parameter 'zz'. Did you mean 'z'"),
        ({"attack": "alie", "attack_params": "{z = nan}"}, "'attack_params': z = nan is not"),
        (
            {"mode": "async", "attack": "hidden_vulnerability", "workers": 10, "byzantine": 2},
            "'attack': hidden_vulnerability fails.*adapts to the rule",
        ),
        (
            {"dataset": "synthetic_linear", "model": "logistic", "attack": "label_flip"},
            "'attack': label_flip changes class labels",
        ),
        # distributed keys
        ({"udp_loss": "{drop = 2.0}"}, "'udp_loss': .*probability"),
        ({"udp_loss": "{seed = 2}"}, "'udp_loss': the UDP loss model has no parameter 'seed'"),
        ({"faults": "{1 = 'boom'}"}, "'faults': rank 1: unknown fault 'boom'"),
    ],
)
def test_nested_tables_and_combinations_are_checked_before_any_work(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load(None, {**FAST, **overrides})


def test_rule_requirement_checked_before_training():
    with pytest.raises(errors.ToleranceError, match="krum requires n >= 2f \\+ 3") as info:
        load(None, {**FAST, "aggregator": "krum", "workers": 10, "byzantine": 4})
    assert isinstance(info.value, ConfigToleranceError)  # a ConfigError too


def test_unknown_rule_parameter_is_refused_on_load():
    with pytest.raises(ConfigError, match="rule 'multi_krum' has no parameter 'k'"):
        load(None, {**FAST, "aggregator": "multi_krum", "aggregator_params": "{k = 3}"})


def test_validate_checks_configs_built_in_code_and_keeps_the_random_state():
    cfg = RunConfig(dataset="digits", lr=1, workers=5, byzantine=1)  # an int where a float goes
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    assert validate(cfg).lr == 1.0 and isinstance(cfg.lr, float)
    assert torch.equal(torch.rand(3), expected)  # dry runs drew from their own generators
    with pytest.raises(ConfigError, match="'kardam': 'no' is not true or false"):
        validate(RunConfig(dataset="digits", kardam="no"))


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
    with pytest.raises(ConfigError, match="unknown config key 'test-fractio'"):
        parse_flags(["--test-fractio", "0.1"])
    assert parse_flags(["--test-fraction", "0.3"]) == {"test_fraction": "0.3"}
