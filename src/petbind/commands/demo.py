"""``petbind demo``: simulate the founding ketamine study and run the whole analysis on it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petbind.compute import SCHEDULER_HELP, shared_scheduler


def demo(
    out: Annotated[Path, typer.Option(
        "--out", help="Folder for the simulated dataset (bids/) and the outputs "
        "(derivatives/petbind/).")] = Path("petbind-demo"),
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help=SCHEDULER_HELP + " Default: sync; with --realistic, local "
        "(one worker process per CPU, shared by both analyses).")] = None,
    no_report: Annotated[bool, typer.Option(
        "--no-report", help="Do not build the HTML report.")] = False,
    no_progress: Annotated[bool, typer.Option(
        "--no-progress", help="No progress bars.")] = False,
    realistic: Annotated[bool, typer.Option(
        "--realistic", help="Also simulate the study as raw scans (each animal in its own "
        "position with a T1w, head motion) into OUT/realistic/, analyse it with motion "
        "correction, registration and the template atlas, report it, and compare its "
        "answer with the default demo's. Takes several minutes.")] = False,
) -> None:
    """Simulate the ketamine 5-HT1B / SERT macaque study and analyse it end to end."""
    from petbind.commands.consoles import console, err_console
    from petbind.study.demo import run_demo

    if scheduler is None and realistic:
        scheduler = "local"  # the raw-scan analysis is minutes of per-subject/scan tasks
    with shared_scheduler(scheduler) as engine:  # one cluster for both analyses
        result = run_demo(out, scheduler=engine, report=not no_report,
                          progress=not no_progress, console=console, err_console=err_console,
                          realistic=realistic)
    if result.report is not None:
        console.print(f"report: {result.report}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``petbind demo`` to the CLI."""
    app.command("demo")(demo)
