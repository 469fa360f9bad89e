"""Command-line options that several commands share, spelled once.

An option written here has the same name, type and help on every command
that takes it (``petbind run`` and ``petbind demo`` today).
"""

from __future__ import annotations

from typing import Annotated

import typer

from petbind.compute import SCHEDULER_HELP

#: ``--scheduler`` of the commands that run in this process unless told otherwise.
SchedulerSync = Annotated[str | None, typer.Option(
    "--scheduler", help=SCHEDULER_HELP + " Default: sync.")]
#: ``--no-progress``.
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bars.")]
