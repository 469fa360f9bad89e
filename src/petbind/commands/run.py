"""``petbind run``: a BIDS study from dynamic scans to corrected statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petbind.errors import ConfigError


def run(
    bids_dir: Annotated[Path | None, typer.Argument(
        help="BIDS dataset root (default: dataset.path of the config).")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Study config TOML (default: the founding ketamine study; "
        "see --print-config).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output folder (default: BIDS_DIR/derivatives/petbind).")] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="Run the per-scan tasks on dask: 'local' (a LocalCluster) or "
        "HOST:PORT of a running dask scheduler. Default: in this process.")] = None,
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="Print the commented default study config and exit.")] = False,
    no_progress: Annotated[bool, typer.Option(
        "--no-progress", help="No progress bars.")] = False,
) -> None:
    """Run the whole study: region TACs, model fits, maps, outcome table, statistics."""
    from petbind.commands.consoles import console, err_console

    if print_config:
        from petbind.study.config import DEFAULT_CONFIG

        typer.echo(DEFAULT_CONFIG, nl=False)
        return
    from petbind.study.config import load_config
    from petbind.study.console import summary_tables
    from petbind.study.pipeline import run_study

    cfg = load_config(config)
    root = bids_dir or cfg.dataset
    if root is None:
        raise ConfigError("no dataset given", path=config, field="dataset.path",
                          fix="pass BIDS_DIR or set dataset.path in the study config")
    result = run_study(root, cfg, out_dir=out, scheduler=scheduler,
                       progress=not no_progress, console=err_console,
                       log=lambda m: err_console.print(m, highlight=False))
    for table in summary_tables(result.summary["highlights"]):
        console.print(table)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"outputs: {result.out_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``petbind run`` to the CLI."""
    app.command("run")(run)
