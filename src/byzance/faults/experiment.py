"""``byzance faults``: an MLP on the shipped MNIST digits, its neurons failing, bound vs measured.

One TOML config (``examples/faults_mnist.toml``; ``byzance faults --help`` lists
its keys) in; out: ``config.toml`` (the resolved config), ``results.md`` and
``results.csv`` (one row per number of failures per hidden layer: the
paper's bound, the weight-path bound, the worst and mean error found by the
adversarial search and under random failures, accuracy), ``overprovisioning.csv``
(same failures, wider hidden layers), the plots ``bound_vs_measured.png`` and
``overprovisioning.png``, and the trained models (``model_*.pt``, reused
when the same training config comes again).

The config (:class:`FaultsConfig`, :func:`load_config`, :func:`dumps`) lives in
:mod:`byzance.faults.faults_config`; its names are importable from here too.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from byzance.faults.bound import fep_bound, output_bounds, path_bound, path_gains
from byzance.faults.faults_config import (
    ACTIVATIONS,
    FaultsConfig,
    FaultsConfigError,
    dumps,
    load_config,
)
from byzance.faults.faults_config import SCHEMA as SCHEMA
from byzance.faults.measure import adversarial_failures, random_failures
from byzance.faults.network import Network, parse

__all__ = [
    "ACTIVATIONS",
    "FaultsConfig",
    "FaultsConfigError",
    "FaultsResult",
    "dumps",
    "load_config",
    "render",
    "run",
]

# -- model --------------------------------------------------------------------------------


def build_mlp(input_dim: int, hidden: list[int], classes: int, activation: str) -> nn.Sequential:
    """Flatten, then Linear + activation per hidden width, then Linear to the classes."""
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip([input_dim, *hidden[:-1]], hidden, strict=True):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(hidden[-1], classes))
    return nn.Sequential(*layers)


def train_mlp(cfg: FaultsConfig, hidden: list[int], data, out_dir: Path) -> nn.Sequential:
    """Train (Adam, cross-entropy, seeded) or reload the same config's saved model."""
    input_dim = math.prod(data.input_shape)
    key = {
        k: getattr(cfg, k)
        for k in ("seed", "dataset", "test_fraction", "activation", "epochs", "batch_size", "lr")
    }
    key["hidden"] = list(hidden)
    name = f"model_{'x'.join(map(str, hidden))}_{cfg.activation}"
    weights, meta = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    model = build_mlp(input_dim, hidden, data.num_classes, cfg.activation)
    if weights.is_file() and meta.is_file() and json.loads(meta.read_text()) == key:
        model.load_state_dict(torch.load(weights, weights_only=True))
        return model.eval()
    torch.manual_seed(cfg.seed)
    model = build_mlp(input_dim, hidden, data.num_classes, cfg.activation)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data.x_train), generator=gen)
        for batch in order.split(cfg.batch_size):
            loss = nn.functional.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    torch.save(model.state_dict(), weights)
    meta.write_text(json.dumps(key))
    return model.eval()


# -- measurements -------------------------------------------------------------------------


@dataclass
class FaultsRow:
    """One measurement: bounds and measured output errors for given failures."""

    hidden: str
    neurons: int  # failures per hidden layer
    synapses: int  # failures per Linear layer
    fep_bound: float
    path_bound: float | None
    adversarial_worst: float
    adversarial_mean: float
    random_worst: float
    random_mean: float
    accuracy: float  # under random failures, test set
    clean_accuracy: float


@dataclass
class FaultsResult:
    config: FaultsConfig
    rows: list[FaultsRow]
    synapse_rows: list[FaultsRow]
    overprovision_rows: list[FaultsRow]
    out_dir: Path


def _measure(
    cfg: FaultsConfig, net: Network, x: torch.Tensor, x_test, y_test, neurons: int, synapses: int
) -> FaultsRow:
    layers = len(net.blocks)
    syn = [synapses] * layers
    failures = {
        "neurons": neurons,
        "kind": cfg.kind,
        "value_bound": cfg.value_bound,
        "synapses": syn,
        "synapse_kind": cfg.synapse_kind,
        "synapse_bound": cfg.synapse_bound,
    }
    bounds = output_bounds(net, x)
    with torch.no_grad():
        clean = float((net.model(x_test).argmax(1) == y_test).float().mean())
    adversarial = adversarial_failures(net, x, rounds=cfg.rounds, **failures)
    randomly = random_failures(net, x, trials=cfg.trials, seed=cfg.seed, **failures)
    accuracy = random_failures(
        net, x_test, labels=y_test, trials=cfg.trials, seed=cfg.seed, **failures
    ).accuracy
    path = None
    if not synapses:
        path = path_bound(net, bounds, neurons=neurons, kind=cfg.kind, value_bound=cfg.value_bound)
    return FaultsRow(
        hidden="x".join(str(b.width) for b in net.hidden),
        neurons=neurons,
        synapses=synapses,
        fep_bound=fep_bound(net, bounds, **failures),
        path_bound=path,
        adversarial_worst=adversarial.worst,
        adversarial_mean=adversarial.mean,
        random_worst=randomly.worst,
        random_mean=randomly.mean,
        accuracy=float(accuracy),
        clean_accuracy=clean,
    )


def run(cfg: FaultsConfig, progress: Callable[[str], None] | None = None) -> FaultsResult:
    """Train (or reuse) the MLPs, measure every row, write CSV, markdown and plots to ``out_dir``.

    Runs on ``cfg.threads`` torch threads (restored afterwards): these small
    matrices are several times faster on one thread than on two busy cores.
    """
    previous = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, progress)
    finally:
        torch.set_num_threads(previous)


def _run(cfg: FaultsConfig, progress: Callable[[str], None] | None) -> FaultsResult:
    from byzance import data as datasets

    say = progress or (lambda _msg: None)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.toml").write_text(dumps(cfg))
    data = datasets.load(cfg.dataset, seed=cfg.seed, test_fraction=cfg.test_fraction)
    if data.task != "classification":
        raise FaultsConfigError(f"dataset {cfg.dataset!r} is not a classification task.")
    x_test, y_test = data.x_test, data.y_test
    x = x_test[: cfg.eval_samples] if cfg.eval_samples else x_test
    torch.manual_seed(cfg.seed)

    say(f"training {cfg.hidden}")
    model = train_mlp(cfg, cfg.hidden, data, out_dir)
    net = parse(model, data.input_shape)
    path_gains(net)  # fail early on a network the bounds cannot handle
    rows = []
    for f in cfg.failures:
        say(f"{f} neuron failures per layer")
        rows.append(_measure(cfg, net, x, x_test, y_test, f, 0))
    synapse_rows = []
    for s in cfg.synapse_failures:
        say(f"{s} synapse failures per layer")
        synapse_rows.append(_measure(cfg, net, x, x_test, y_test, 0, s))
    over_rows = []
    for hidden in cfg.overprovision:
        say(f"over-provisioning: training {hidden}")
        wide = parse(train_mlp(cfg, hidden, data, out_dir), data.input_shape)
        over_rows.append(_measure(cfg, wide, x, x_test, y_test, cfg.overprovision_failures, 0))
    result = FaultsResult(cfg, rows, synapse_rows, over_rows, out_dir)
    _write(result)
    return result


# -- outputs ------------------------------------------------------------------------------

_COLUMNS = (
    ("hidden", "hidden widths"),
    ("neurons", "failed neurons / layer"),
    ("synapses", "failed synapses / layer"),
    ("fep_bound", "bound (Fep)"),
    ("path_bound", "path bound"),
    ("adversarial_worst", "worst (search)"),
    ("adversarial_mean", "mean (search)"),
    ("random_worst", "worst (random)"),
    ("random_mean", "mean (random)"),
    ("accuracy", "accuracy (random)"),
    ("clean_accuracy", "accuracy (no failure)"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 1000 else f"{value:.3e}"
    return str(value)


def _markdown(rows: list[FaultsRow], skip: tuple[str, ...]) -> str:
    cols = [(k, h) for k, h in _COLUMNS if k not in skip]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + " --- |" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(getattr(row, k)) for k, _ in cols) + " |")
    return "\n".join(lines)


def _csv(rows: list[FaultsRow], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for k, _ in _COLUMNS])
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def _plot(
    series: dict[str, list[tuple[float, float]]], path: Path, xlabel: str, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "bound (Fep)": ("tab:red", "--", "s"),
        "path bound": ("tab:orange", "--", "^"),
        "worst (search)": ("tab:blue", "-", "o"),
        "mean (search)": ("tab:blue", ":", "o"),
        "worst (random)": ("tab:green", "-", "d"),
        "mean (random)": ("tab:green", ":", "d"),
    }
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, points in series.items():
        points = [(x, y) for x, y in points if y is not None and y > 0]
        if points:
            xs, ys = zip(*points, strict=True)
            color, line, marker = styles.get(label, (None, "-", "o"))
            ax.plot(xs, ys, label=label, color=color, linestyle=line, marker=marker)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("output error  max_o |y_o - ŷ_o|")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _series(rows: list[FaultsRow], x: Callable[[FaultsRow], float]):
    keys = [k for k, _ in _COLUMNS[3:9]]
    labels = dict(_COLUMNS)
    return {labels[k]: [(x(r), getattr(r, k)) for r in rows] for k in keys}


def _write(result: FaultsResult) -> None:
    cfg, out = result.config, result.out_dir
    what = f"{cfg.kind} neurons" + (
        f" (|value| <= C = {cfg.value_bound:g})" if cfg.kind == "byzantine" else ""
    )
    _csv(result.rows, out / "results.csv")
    _plot(
        _series(result.rows, lambda r: r.neurons),
        out / "bound_vs_measured.png",
        "failed neurons per hidden layer",
        f"MLP {cfg.hidden} ({cfg.activation}) on {cfg.dataset}: {what}",
    )
    parts = [
        f"# byzance faults: {cfg.dataset}, MLP {cfg.hidden} ({cfg.activation}), {what}",
        "",
        _markdown(result.rows, ("synapses",)),
    ]
    if result.synapse_rows:
        _csv(result.synapse_rows, out / "synapses.csv")
        parts += [
            "",
            f"Synapse failures ({cfg.synapse_kind}"
            + (
                f", |change| <= S = {cfg.synapse_bound:g}"
                if cfg.synapse_kind == "byzantine"
                else ""
            )
            + "), in every Linear layer:",
            "",
            _markdown(result.synapse_rows, ("neurons", "path_bound")),
        ]
    if result.overprovision_rows:
        _csv(result.overprovision_rows, out / "overprovisioning.csv")
        _plot(
            _series(result.overprovision_rows, lambda r: int(r.hidden.split("x")[0])),
            out / "overprovisioning.png",
            "width of the first hidden layer (the others scale with it)",
            f"Over-provisioning: {cfg.overprovision_failures} {what} per hidden layer",
        )
        parts += [
            "",
            f"Over-provisioning: {cfg.overprovision_failures} failed neurons per hidden layer:",
            "",
            _markdown(result.overprovision_rows, ("synapses",)),
        ]
    (out / "results.md").write_text("\n".join(parts) + "\n")


def render(result: FaultsResult, console: Any) -> None:
    """Rich tables of the result's rows."""
    from rich.table import Table

    cfg = result.config

    def table(rows: list[FaultsRow], title: str, skip: tuple[str, ...]) -> Table:
        t = Table(title=title)
        cols = [(k, h) for k, h in _COLUMNS if k not in skip]
        for _, header in cols:
            t.add_column(header, justify="right")
        for row in rows:
            cells = []
            for key, _ in cols:
                cell = _fmt(getattr(row, key))
                bound = min(b for b in (row.fep_bound, row.path_bound) if b is not None)
                if key.startswith("adversarial") or key.startswith("random"):
                    ok = getattr(row, key) <= bound
                    cell = f"[{'green' if ok else 'red'}]{cell}"
                cells.append(cell)
            t.add_row(*cells)
        return t

    console.print(
        table(
            result.rows,
            f"{cfg.kind} neurons, MLP {cfg.hidden} ({cfg.activation}) on {cfg.dataset}: "
            "bound vs measured output error max_o |y_o - ŷ_o|",
            ("synapses",),
        )
    )
    if result.synapse_rows:
        console.print(
            table(result.synapse_rows, f"{cfg.synapse_kind} synapses", ("neurons", "path_bound"))
        )
    if result.overprovision_rows:
        console.print(
            table(
                result.overprovision_rows,
                f"Over-provisioning: {cfg.overprovision_failures} {cfg.kind} neurons per layer",
                ("synapses",),
            )
        )
