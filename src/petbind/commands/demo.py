"""``petbind demo``: simulate the founding ketamine study and run the whole analysis on it.

:func:`run_demo` is the demo as a function: the study part
(:func:`petbind.study.demo.analyse_demo`: simulate, run the pipeline, print
the answer beside the truth), then the report. It lives here, in the command
layer, because the report sits above the study: ``study/`` never builds it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from petbind.commands.options import NoProgress
from petbind.compute import SCHEDULER_HELP, shared_scheduler

if TYPE_CHECKING:
    from petbind.study.demo import DemoResult


def run_demo(out: str | Path = "petbind-demo", *, scheduler: str | None = None,
             report: bool = True, progress: bool = True, console: Any = None,
             err_console: Any = None, sim_config: Any = None,
             study_config: Any = None, realistic: bool = False,
             realistic_setup: tuple[Any, Any] | None = None) -> DemoResult:
    """Simulate, analyse and report the founding study.

    Parameters
    ----------
    report : bool
        Build the HTML report (:func:`petbind.report.build_report`) of the
        analysis (the realistic one when ``realistic``).
    out, scheduler, progress, console, err_console : optional
        As :func:`petbind.study.demo.analyse_demo`.
    sim_config, study_config, realistic, realistic_setup : optional
        As :func:`petbind.study.demo.analyse_demo`.

    Returns
    -------
    DemoResult
        :func:`~petbind.study.demo.analyse_demo`'s, with ``report`` (the HTML
        page, or None) and the time it took in ``seconds["report"]`` and
        ``cpu_seconds["report"]``.
    """
    from petbind.study.demo import analyse_demo

    result = analyse_demo(out, scheduler=scheduler, progress=progress, console=console,
                          err_console=err_console, sim_config=sim_config,
                          study_config=study_config, realistic=realistic,
                          realistic_setup=realistic_setup)
    report_path = None
    t, c = time.perf_counter(), time.process_time()
    if report:
        try:
            from petbind.report import build_report
        except ImportError:
            build_report = None
        if build_report is not None:
            report_path = build_report(result.out_dir, scheduler=scheduler)
    return dataclasses.replace(
        result, report=report_path,
        seconds={**result.seconds, "report": time.perf_counter() - t},
        cpu_seconds={**result.cpu_seconds, "report": time.process_time() - c})


def demo(
    out: Annotated[Path, typer.Option(
        "--out", help="Folder for the simulated dataset (bids/) and the outputs "
        "(derivatives/petbind/).")] = Path("petbind-demo"),
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help=SCHEDULER_HELP + " Default: sync; with --realistic, local "
        "(one worker process per CPU, shared by both analyses).")] = None,
    no_report: Annotated[bool, typer.Option(
        "--no-report", help="Do not build the HTML report.")] = False,
    no_progress: NoProgress = False,
    realistic: Annotated[bool, typer.Option(
        "--realistic", help="Also simulate the study as raw scans (each animal in its own "
        "position with a T1w, head motion) into OUT/realistic/, analyse it with motion "
        "correction, registration and the template atlas, report it, and compare its "
        "answer with the default demo's. Takes several minutes.")] = False,
) -> None:
    """Simulate the ketamine 5-HT1B / SERT macaque study and analyse it end to end."""
    from petbind.commands.consoles import console, err_console

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
