"""``petbind run``: a BIDS study from dynamic scans to corrected statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from petbind.commands.options import NoProgress, SchedulerSync
from petbind.errors import ConfigError


def run(
    bids_dir: Annotated[Path | None, typer.Argument(
        help="BIDS dataset root (default: dataset.path of the config).")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Study config TOML, as `petbind init BIDS_DIR` writes it "
        "(see also --print-config).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output folder (default: BIDS_DIR/derivatives/petbind).")] = None,
    scheduler: SchedulerSync = None,
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="Print the commented default study config and exit.")] = False,
    no_progress: NoProgress = False,
    no_report: Annotated[bool, typer.Option(
        "--no-report", help="Do not build OUT/report.html.")] = False,
) -> None:
    """Run the whole study: region TACs, model fits, maps, statistics and the report."""
    from petbind.commands.consoles import console, err_console

    if print_config:
        from petbind.study.config import DEFAULT_CONFIG

        typer.echo(DEFAULT_CONFIG, nl=False)
        return
    from petbind.compute import parse_scheduler

    parse_scheduler(scheduler)  # a wrong word fails now, not after discovery
    from petbind.study.config import load_config

    if config is None and bids_dir is not None:
        raise ConfigError("no study config given", path=bids_dir, field="--config",
                          fix=f"run `petbind init {bids_dir}` to write one for this dataset "
                          f"(study.toml), read it, then `petbind run {bids_dir} --config "
                          "study.toml`")
    cfg = load_config(config)
    root = bids_dir or cfg.dataset
    if root is None:
        raise ConfigError("no dataset given", path=config, field="dataset.path",
                          fix="pass BIDS_DIR or set dataset.path in the study config")
    said: set[str] = set()

    def log(message: str) -> None:
        said.add(message)
        err_console.print(message, markup=False, highlight=False, soft_wrap=True)

    from petbind.compute import LazyClient, shared_scheduler

    # one local cluster for the study and its report's figures
    with shared_scheduler(scheduler) as engine:
        if not no_report and isinstance(engine, LazyClient) and engine.n_workers > 1:
            # the report's figures are tasks on it, so it is used whatever the scans need:
            # its workers start while the pipeline is imported and the scans discovered
            engine.start_soon()
        from petbind.study.pipeline import run_study

        result = run_study(root, cfg, out_dir=out, scheduler=scheduler, engine=engine,
                           progress=not no_progress, console=err_console, log=log)
        _print_results(result, said, console, err_console)
        if not no_report:
            from petbind.report import build_report

            console.print(f"report: {build_report(result.out_dir, scheduler=engine)}",
                          markup=False, highlight=False, soft_wrap=True)  # copied whole


def _print_results(result: Any, said: set[str], console: Any, err_console: Any) -> None:
    """The study's summary tables, its warnings not yet printed, and its output folder."""
    from rich.markup import escape

    from petbind.study.console import summary_tables

    for table in summary_tables(result.summary["highlights"]):
        console.print(table)
    for w in dict.fromkeys(result.warnings):
        if f"warning: {w}" not in said:  # discovery warnings were printed as they came
            err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False,
                              soft_wrap=True)
    console.print(f"outputs: {result.out_dir}", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``petbind run`` to the CLI."""
    app.command("run")(run)
