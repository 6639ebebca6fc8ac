"""The ``byzance`` command line."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperCommand

app = typer.Typer(help="Byzantine-robust distributed learning on PyTorch.", no_args_is_help=True)
console = Console()


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Input errors (ByzanceError) become one red line and exit status 2, not a traceback."""
    from rich.markup import escape

    from byzance.errors import ByzanceError

    try:
        yield
    except ByzanceError as err:  # the message as written: "[data]" is text, one line unwrapped
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(2) from None


def _wide_console() -> Console:
    """A console at least 120 columns wide, so tables stay readable in pipes and logs."""
    return Console(width=max(console.width, 120))


def _config_keys_help(schema_at: str, intro: str) -> type[TyperCommand]:
    """A command class whose ``--help`` ends with every config key, by section.

    ``schema_at`` (``"module:SCHEMA"``) is imported only when help is asked for;
    the listing (type, default, description, range or accepted values) comes
    from the config's own declarations (:mod:`byzance.runs.schema`).
    """

    def sections() -> list[tuple[str, list[tuple[str, str, str, str]]]]:
        import importlib

        module, _, name = schema_at.partition(":")
        return getattr(importlib.import_module(module), name).describe_keys()

    class ConfigKeysHelp(TyperCommand):
        def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            rich = getattr(self, "rich_markup_mode", None) is not None
            super().format_help(ctx, formatter)
            if rich:  # typer printed its panels itself; ours follow, in the same style
                _print_config_keys(intro, sections())

        def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            super().format_epilog(ctx, formatter)  # plain click help (no rich)
            formatter.write_paragraph()
            formatter.write_text(intro)
            for section, rows in sections():
                with formatter.section(f"[{section}]"):
                    formatter.write_dl(
                        [(f"{k} ({kind} = {default})", text) for k, kind, default, text in rows]
                    )

    return ConfigKeysHelp


def _print_config_keys(intro: str, sections: list[tuple[str, list[tuple[str, ...]]]]) -> None:
    """Each section of config keys as a panel like typer's: key, type, description [default]."""
    from rich.panel import Panel
    from rich.text import Text

    out = Console()
    out.print(Text(intro, style="dim"), "")
    for section, rows in sections:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold cyan", no_wrap=True)
        grid.add_column(style="yellow", no_wrap=True)
        grid.add_column()
        for name, kind, default, text in rows:  # Text, not markup: "[str]" is no style
            grid.add_row(Text(name), Text(kind), Text(f"{text} [default: {default}]"))
        title = Text(f"[{section}]")
        out.print(Panel(grid, title=title, title_align="left", border_style="dim"))


_RUN_KEYS = _config_keys_help(
    "byzance.runs.config:SCHEMA",
    "Config keys. Each one is also a flag (--key value, or --key=value) overriding the file; "
    "a file lists them flat or groups them in these [section] tables.",
)
_GRID_KEYS = _config_keys_help(
    "byzance.runs.config:SCHEMA",
    "Run config keys, for the grid's [base] (flat or in these [section] tables) and [axes] "
    "(flat key names, a list of values each).",
)


@app.command()
def demo(
    quick: Annotated[
        bool, typer.Option(help="Only the vector demonstration (seconds, no training).")
    ] = False,
    out: Annotated[Path, typer.Option(help="Directory for the runs.")] = Path("runs/demo"),
    steps: Annotated[int, typer.Option(help="Training steps per run.")] = 200,
    jobs: Annotated[int, typer.Option(help="Parallel runs (default: number of cores).")] = 0,
) -> None:
    """Train on the MNIST digits, n=20, f=4: every rule against every attack."""
    _vector_demo()
    if quick:
        return
    from byzance.experiments.demo import DEMO_ATTACKS, DEMO_RULES, run_demo

    console.print(
        f"\nTraining {len(DEMO_RULES) * len(DEMO_ATTACKS)} runs ({steps} steps each) in {out}/ ..."
    )
    with _progress() as progress:
        task = progress.add_task("runs", total=len(DEMO_RULES) * len(DEMO_ATTACKS), info="")
        results = run_demo(
            out,
            steps=steps,
            jobs=jobs or None,
            on_done=lambda rule, attack, row: progress.advance(task),
        )
    table = Table(title="Final test accuracy: MNIST digits, MLP, n=20 workers, f=4 Byzantine")
    table.add_column("rule", no_wrap=True)
    for attack in DEMO_ATTACKS:
        table.add_column(attack, justify="right")
    for rule in dict.fromkeys(r for r, _ in results):
        cells = []
        for attack in DEMO_ATTACKS:
            acc = results[(rule, attack)].get("accuracy")
            cells.append("n/a" if acc is None else f"[{'red' if acc < 0.5 else 'green'}]{acc:.3f}")
        table.add_row(rule, *cells)
    _wide_console().print(table)
    console.print(
        f"Curves: {out / 'accuracy.png'}; each run's metrics and summary in {out}/<rule>__<attack>/."
    )


def _vector_demo() -> None:
    from byzance.experiments.vectors import run_demo

    honest, byzantine, dim = 15, 2, 1000
    norms = (0.0, 1e2, 1e4, 1e8, 1e12)
    results = run_demo(honest=honest, byzantine=byzantine, dim=dim, norms=norms)
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
    _wide_console().print(table)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, cls=_RUN_KEYS
)
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="TOML run config.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run already in --out-dir (its files are deleted).")
    ] = False,
) -> None:
    """Train with the simulator. Any config key is also a flag: --aggregator krum --f 4 ..."""
    from byzance.runs import config as run_config
    from byzance.runs import runner
    from byzance.runs.rundir import RunDirectory

    with _clear_errors():
        if resume is not None:
            if ctx.args or overwrite:
                raise run_config.ConfigError(
                    "--resume continues a run as configured; drop the other flags."
                )
            cfg = run_config.load(resume / "config.toml", {"out_dir": str(resume)})
        else:
            cfg = run_config.load(config, run_config.parse_flags(ctx.args))
            directory = RunDirectory(cfg.out_dir)
            if not overwrite:  # refuse before any work: the run below would refuse too
                directory.claim_check()
    with _clear_errors(), _progress() as progress:
        task = progress.add_task(cfg.rule().name, total=cfg.steps, info="")

        def update(step: int, row: dict) -> None:
            acc = f" acc {row['accuracy']:.3f}" if "accuracy" in row else ""
            if row.get("diverged"):
                progress.update(task, completed=step, info="[red]diverged")
            else:
                progress.update(task, completed=step, info=f"loss {row['loss']:.4f}{acc}")

        if resume is not None:
            result = runner.resume(resume, progress=update)
        else:
            result = runner.train(cfg, overwrite=overwrite, progress=update)
    console.print((result.out_dir / "summary.md").read_text(), markup=False)
    console.print(f"Outputs in {result.out_dir}/")


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


@app.command(cls=_GRID_KEYS)
def grid(
    config: Annotated[Path, typer.Option(help="TOML grid: [base] run config and [axes] to sweep.")],
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: the grid's).")
    ] = None,
    jobs: Annotated[int, typer.Option(help="Parallel CPU cells (default: number of cores).")] = 0,
    cells_per_device: Annotated[
        int,
        typer.Option(
            help="CUDA cells at a time on each visible GPU (default: the grid file's, else 1)."
        ),
    ] = 0,
) -> None:
    """Run every cell of a grid (resumable), then write results.csv, results.md and heatmaps."""
    from byzance.experiments.grid import check_cells_per_device, load_grid, run_grid

    with _clear_errors():
        spec = load_grid(config, out)
        if cells_per_device:
            spec.cells_per_device = check_cells_per_device(cells_per_device, "--cells-per-device")
    infeasible = [c for c in spec.cells if c.config is None]
    console.print(
        f"{spec.name}: {len(spec.cells)} cells, {len(infeasible)} infeasible (not run), "
        f"in {spec.out_dir}/"
    )
    try:
        with _clear_errors(), _progress() as progress:
            task = progress.add_task("cells", total=len(spec.feasible), info="")
            run_grid(
                spec,
                jobs=jobs or None,
                on_done=lambda cell: progress.advance(task),
            )
    except KeyboardInterrupt as err:  # Ctrl-C: the grid stopped its cells and wrote its report
        from rich.markup import escape

        message = escape(str(err) or "the grid stopped.")
        console.print(f"[yellow]interrupted:[/yellow] {message}", soft_wrap=True)
        raise typer.Exit(130) from None
    console.print((spec.out_dir / "results.md").read_text())


@app.command()
def report(out: Annotated[Path, typer.Argument(help="A grid's output directory.")]) -> None:
    """Regenerate a grid's tables and heatmaps from its cells (finished or partial)."""
    from byzance.experiments.report import report as make_report

    with _clear_errors():
        make_report(out)
    console.print((out / "results.md").read_text())


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
    what: Annotated[
        str,
        typer.Argument(
            help="rules (aggregation rules), sim (the simulator), dist (real processes), "
            "udp (UDP vs gloo step time) or lossy (accuracy vs datagram drop rate)."
        ),
    ] = "rules",
    n: Annotated[
        list[int] | None, typer.Option(help="Numbers of inputs/workers [10, 20, 50].")
    ] = None,
    d: Annotated[list[int] | None, typer.Option(help="Dimensions, for rules [1e4, 1e6].")] = None,
    repeat: Annotated[
        int | None,
        typer.Option(help="Timed repetitions [5; curves: 3] (rules: median shown, and min)."),
    ] = None,
    rule: Annotated[list[str] | None, typer.Option(help="Only these rules (default: all).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads (sim: 1 by default).")] = None,
    attack: Annotated[str, typer.Option(help="lossy: the last rank's attack.")] = "none",
    device: Annotated[
        str, typer.Option(help="rules, sim: where the inputs live (auto, cpu, cuda, cuda:N).")
    ] = "cpu",
    curves: Annotated[
        bool,
        typer.Option(
            help="rules: cost curves, time and peak memory against n (--n [10 .. 1000]) at "
            "n x d = --max-elements, and time against d (--d [1e4 .. 1e7]) at n = 20."
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="curves: the markdown to rewrite (its marked section).")
    ] = None,
    max_elements: Annotated[int, typer.Option(help="curves: n x d of the n curve.")] = 10**8,
) -> None:
    """Time every rule against its floor, the simulator against a loop, or processes (dist)."""
    if curves and what == "rules":
        from byzance.experiments.bench_curves import curves_cli

        with _clear_errors():
            curves_cli(n, d, repeat, rule, threads, device, max_elements, out, _wide_console())
        return
    repeat = 5 if repeat is None else repeat
    if what in ("udp", "lossy"):
        _bench_udp(what, n, attack)
        return
    if what == "dist":  # --n: numbers of processes; --rule: the robust rules
        from byzance.experiments.bench_dist import render_dist_bench, run_dist_bench

        rows = run_dist_bench(tuple(n or (4, 8)), rules=tuple(rule or ("krum", "median")))
        render_dist_bench(rows, _wide_console())
        return
    ns = tuple(n or (10, 20, 50))
    if what == "sim":
        from byzance.experiments.bench_federated import (
            render_federated_bench,
            run_federated_bench,
        )
        from byzance.experiments.bench_sim import render_sim_bench, run_sim_bench

        with _clear_errors():
            from byzance.devices import check_device_spec

            check_device_spec(device)
        render_sim_bench(
            run_sim_bench(ns, repeat=repeat, threads=threads or 1, device=device), _wide_console()
        )
        render_federated_bench(
            run_federated_bench(repeat=repeat, threads=threads or 1, device=device),
            _wide_console(),
        )
        return
    if what != "rules":
        console.print(
            f"[red]error:[/red] bench takes rules, sim, dist, udp or lossy, not {what!r}."
        )
        raise typer.Exit(2)
    from byzance.experiments.bench import render_bench, run_bench

    with _clear_errors():
        rows = run_bench(
            ns=ns,
            ds=tuple(d or (10_000, 1_000_000)),
            repeat=repeat,
            rules=tuple(rule) if rule else None,
            threads=threads,
            device=device,
        )
    render_bench(rows, _wide_console())


def _bench_udp(what: str, n: list[int] | None, attack: str) -> None:
    from byzance.experiments.bench_udp import run_lossy_sweep, run_udp_bench

    if what == "udp":
        rows = run_udp_bench(procs=(n or [8])[0])
        table = Table(title="Parameter-server step, gradients over gloo vs UDP (0% loss)")
        for col in ("transport", "procs", "model", "step ms", "wait ms", "x gloo"):
            table.add_column(col, justify="left" if col in ("transport", "model") else "right")
        for r in rows:
            table.add_row(
                r["transport"],
                str(r["procs"]),
                r["model"],
                f"{r['step_ms']:.1f}",
                f"{r['wait_ms']:.1f}",
                f"{r['ratio']:.2f}",
            )
        _wide_console().print(table)
        return
    out = Path("runs/lossy")
    with console.status("runs over UDP with dropped datagrams ..."):
        run_lossy_sweep(out, procs=(n or [5])[0], attack=attack)
    stem = "lossy" if attack == "none" else f"lossy_{attack}"
    console.print((out / f"{stem}.md").read_text(), markup=False)
    console.print(f"Table, CSV and plot in {out}/")


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command(name="dist", context_settings=_PASS_THROUGH, cls=_RUN_KEYS)
def dist_rank(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option(help="TOML run config (the simulator's keys).")],
    resume: Annotated[bool, typer.Option(help="Continue from out_dir's checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the run already in out_dir.")] = False,
) -> None:
    """One rank of a distributed run, under torchrun: torchrun --no-python ... byzance dist --config run.toml."""
    from byzance.distributed.launch import main
    from byzance.distributed.run import check_runs_distributed
    from byzance.runs import config as run_config

    with _clear_errors():  # a bad config: one line, before this rank joins the others
        check_runs_distributed(run_config.load(config, run_config.parse_flags(list(ctx.args))))

    flags = [*(["--resume"] if resume else []), *(["--overwrite"] if overwrite else [])]
    raise typer.Exit(main(["--config", str(config), *flags, *ctx.args]))


@app.command(context_settings=_PASS_THROUGH, cls=_RUN_KEYS)
def launch(
    ctx: typer.Context,
    nproc: Annotated[int, typer.Option(help="Processes (workers) on this machine.")],
    config: Annotated[Path | None, typer.Option(help="TOML run config.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the run already in out_dir.")] = False,
) -> None:
    """Start a distributed run on this machine: torchrun with --nproc processes, one per worker."""
    from byzance.distributed.launch import launch as start
    from byzance.distributed.run import check_runs_distributed
    from byzance.runs import config as run_config
    from byzance.runs.rundir import RunDirectory

    with _clear_errors():
        if resume is not None:  # the run where it is, whatever out_dir its config says
            config = resume / "config.toml"
            extra = ["--resume", "--out-dir", str(resume), *ctx.args]
        elif config is None:
            raise run_config.ConfigError("give --config run.toml (or --resume a run's directory).")
        else:
            extra = list(ctx.args)
        overrides = {
            "workers": nproc,
            **run_config.parse_flags([a for a in extra if a != "--resume"]),
        }
        # Fail here, before starting processes.
        out = check_runs_distributed(run_config.load(config, overrides)).out_dir
        if resume is None and not overwrite:
            RunDirectory(out).claim_check("byzance launch --nproc N --resume")
    if overwrite:
        extra = ["--overwrite", *extra]
    code = start(nproc, str(config), ["--workers", str(nproc), *extra])
    if code == 0:
        summary = Path(out) / "summary.md"
        if summary.exists():
            console.print(summary.read_text(), markup=False)
        console.print(f"Outputs in {out}/")
    raise typer.Exit(code)


@app.command(name="udp-keys")
def udp_keys(
    workers: Annotated[int, typer.Option(help="Number of workers (ranks 0 .. workers-1).")],
    out: Annotated[
        Path, typer.Option(help="The JSON key file to write (mode 600, also when replacing one).")
    ],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write per-worker HMAC keys for the UDP transport (config: udp_keys = "keys.json")."""
    from byzance.distributed.udp import generate_key_file

    with _clear_errors():
        generate_key_file(out, workers, overwrite=overwrite)
    console.print(f"{workers} keys written to {out}; give each worker only its own key.")


@app.command(
    cls=_config_keys_help(
        "byzance.voting.experiment:SCHEMA",
        "Config keys (flat, or grouped in these [section] tables).",
    )
)
def votes(
    config: Annotated[Path, typer.Option(help="TOML config of byzance.voting (examples/votes/).")],
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: the config's).")
    ] = None,
) -> None:
    """Votes and ratings: fake accounts vs recommenders, reputation, strategic voting (kind = ...)."""
    from byzance.voting.experiment import load_config, run

    with _clear_errors():
        cfg = load_config(config, {"out_dir": str(out)} if out is not None else None)
        with console.status(f"byzance votes: {cfg.kind}") as status:
            result = run(cfg, progress=lambda what: status.update(f"{cfg.kind}: {what}"))
    wide = _wide_console()
    for title, header, rows in result.tables:
        table = Table(title=title)
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i < 2 else "right", no_wrap=i == 0)
        for row in rows:
            table.add_row(*row)
        wide.print(table)
    for line in result.notes:
        console.print(line)
    console.print(
        f"Outputs in {result.out_dir}/: results.csv, results.json, summary.md, "
        + ", ".join(p.name for p in result.plots)
    )


@app.command(
    cls=_config_keys_help(
        "byzance.faults.experiment:SCHEMA",
        "Config keys (flat, or grouped in these [section] tables).",
    )
)
def faults(
    config: Annotated[Path, typer.Option(help="TOML faults config.")],
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: the config's).")
    ] = None,
) -> None:
    """Failing neurons and synapses in an MLP: the error bound of "When Neurons Fail" vs measured."""
    from byzance.faults.experiment import load_config, render, run

    with _clear_errors():
        cfg = load_config(config, {"out_dir": str(out)} if out is not None else None)
        with console.status("") as status:
            result = run(cfg, progress=lambda msg: status.update(msg))
    render(result, _wide_console())
    console.print(f"Tables, CSV and plots in {result.out_dir}/")


if __name__ == "__main__":
    app()
