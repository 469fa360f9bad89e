"""``petbind simulate``: write a simulated study (default: the founding study) as BIDS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petbind.commands.options import SchedulerSync
from petbind.errors import ConfigError


def _split(value: str | None, option: str) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError("empty list", field=option, fix=f"give e.g. {option} a,b")
    return items


def simulate(
    out: Annotated[Path | None, typer.Option("--out", help="Dataset folder to write.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Study-design TOML file (default: the founding study).")] = None,
    subjects: Annotated[int | None, typer.Option(
        "--subjects", help="Number of subjects.")] = None,
    tracers: Annotated[str | None, typer.Option(
        "--tracers", help="Comma-separated tracers, e.g. AZ10419369,DASB.")] = None,
    conditions: Annotated[str | None, typer.Option(
        "--conditions", help="Comma-separated conditions, e.g. baseline,ketamine.")] = None,
    noise: Annotated[float | None, typer.Option(
        "--noise", help="Noise level (relative SD at peak activity in a 1-min frame).")] = None,
    no_noise: Annotated[bool, typer.Option("--no-noise", help="Noise-free images.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed.")] = None,
    scheduler: SchedulerSync = None,
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="Print the default simulation design (save it as simulate.toml, "
        "a template for --config; not a study config).")] = False,
) -> None:
    """Simulate a PET challenge study with known truth, written as a BIDS dataset.

    With --scheduler (e.g. local:2) subjects are simulated in parallel; the files
    are byte-identical to a run in this process."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from petbind.commands.consoles import console
    from petbind.simulate import default_config_text, load_config, simulate_study

    if print_config:
        typer.echo(default_config_text(), nl=False)
        return
    if out is None:
        raise ConfigError("no output folder given", field="--out",
                          fix="add --out DIR (or --print-config to see the default)")
    if no_noise and noise is not None:
        raise ConfigError("--noise and --no-noise contradict each other", field="--noise",
                          fix="give only one of them")
    from petbind.compute import parse_scheduler, shared_scheduler
    from petbind.io.guard import check_output_dir

    parse_scheduler(scheduler)  # a wrong word fails before anything is written
    check_output_dir(out, "--out")
    cfg = load_config(config, subjects=subjects, tracers=_split(tracers, "--tracers"),
                      conditions=_split(conditions, "--conditions"),
                      noise=0.0 if no_noise else noise, seed=seed)
    columns = ("[progress.description]{task.description}", BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with shared_scheduler(scheduler) as engine, \
            Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("simulating", total=cfg.n_scans)

        def step(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, description=what)

        simulate_study(cfg, out, progress=step, scheduler=engine)
    console.print(f"wrote {cfg.n_scans} scans to {out}")


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the ``petbind`` command."""
    app.command("simulate")(simulate)
