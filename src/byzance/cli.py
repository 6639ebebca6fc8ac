"""The ``byzance`` command line."""

from __future__ import annotations

import math
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Byzantine-robust distributed learning on PyTorch.", no_args_is_help=True)
console = Console()


def _wide_console() -> Console:
    """A console at least 120 columns wide, so tables stay readable in pipes and logs."""
    return Console(width=max(console.width, 120))


@app.command()
def demo(
    honest: int = typer.Option(15, help="Honest participants."),
    byzantine: int = typer.Option(2, help="Byzantine participants (f)."),
    dim: int = typer.Option(1000, help="Vector dimension d."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """One huge vector moves the average anywhere; the robust rules hold."""
    from byzance.experiments.demo import run_demo

    norms = (0.0, 1e2, 1e4, 1e8, 1e12)
    results = run_demo(honest=honest, byzantine=byzantine, dim=dim, norms=norms, seed=seed)
    table = Table(
        title="Distance from each rule's output to the honest mean",
        caption=(
            f"{honest} honest participants (true gradient + N(0, I) noise, d={dim}) and "
            f"f={byzantine} Byzantine ones sending one vector of the given norm. Scales: "
            f"one honest vector lies ~{dim**0.5:.3g} from the truth, the honest mean "
            f"~{(dim / honest) ** 0.5:.3g}."
        ),
    )
    table.add_column("rule", no_wrap=True)
    table.add_column("requires", no_wrap=True)
    for norm in norms:
        header = "honest" if norm == 0 else f"|byz|=1e{round(math.log10(norm))}"
        table.add_column(header, justify="right", no_wrap=True)
    for r in results:
        style = "red" if r.errors[-1] > 1e3 else None
        table.add_row(r.rule, r.requirement, *(f"{e:.3g}" for e in r.errors), style=style)
    out = _wide_console()
    out.print(table)
    out.print(
        "The average follows the Byzantine vector (its error grows with the norm); "
        "every robust rule stays within the honest noise, whatever the norm."
    )


@app.command()
def rules() -> None:
    """List the aggregation rules and pre-aggregators with their requirement and paper."""
    from byzance import aggregators

    table = Table(title="byzance.aggregators")
    for col in ("name", "kind", "requires", "what", "paper"):
        table.add_column(col)
    for rule in aggregators.rules():
        table.add_row(rule.name, rule.kind, str(rule.requirement), rule.summary, rule.paper)
    _wide_console().print(table)


@app.command(name="attacks")
def list_attacks() -> None:
    """List the attacks with their strength parameter and paper."""
    from byzance import attacks as attack_registry

    table = Table(title="byzance.attacks")
    for col in ("name", "kind", "strength", "adapts to rule", "what", "paper"):
        table.add_column(col)
    for attack in attack_registry.attacks():
        strength = getattr(attack, "strength", None) or ""
        adapts = "yes" if getattr(attack, "needs_rule", False) else ""
        table.add_row(attack.name, attack.kind, strength, adapts, attack.summary, attack.paper)
    _wide_console().print(table)


@app.command()
def bench(
    n: Annotated[list[int] | None, typer.Option(help="Numbers of inputs [10, 20, 50].")] = None,
    d: Annotated[list[int] | None, typer.Option(help="Dimensions [1e4, 1e6].")] = None,
    repeat: Annotated[int, typer.Option(help="Timed repetitions (the minimum is kept).")] = 5,
    rule: Annotated[list[str] | None, typer.Option(help="Only these rules (default: all).")] = None,
) -> None:
    """Time every rule against its floor (one pass, or one Gram product)."""
    from byzance.experiments.bench import render_bench, run_bench

    rows = run_bench(
        ns=tuple(n or (10, 20, 50)),
        ds=tuple(d or (10_000, 1_000_000)),
        repeat=repeat,
        rules=tuple(rule) if rule else None,
    )
    render_bench(rows, console)


if __name__ == "__main__":
    app()
