"""The ``petbind`` command.

Each sub-command is a thin layer over the library. Errors derived from
:class:`~petbind.errors.PetbindError` are printed in one or two lines without a
traceback and exit with status 2 (``--debug`` shows the traceback).
Sub-commands register themselves on :data:`app` from their own modules,
imported at the bottom of this file.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from petbind import __version__
from petbind.errors import PetbindError

app = typer.Typer(
    name="petbind",
    help="Quantitative PET neuroreceptor imaging: from dynamic scans to binding changes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

_STATE = {"debug": False}


def _version(value: bool) -> None:
    if value:
        console.print(f"petbind {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """petbind: PET receptor binding, from scans to statistics."""
    _STATE["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning PetbindError (and expected OS failures,
:func:`petbind.failures.as_petbind_error`) into a one-line message."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, prog_name="petbind")
    except (PetbindError, OSError, RecursionError, MemoryError) as exc:
        # expected OS / library failures (full disk, permissions, ...) said for people
        from petbind.failures import as_petbind_error

        err = as_petbind_error(exc)
        if debug or err is None:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False,
                          soft_wrap=True)
        sys.exit(2)


# Sub-commands live with the code they drive; importing registers them on `app`.
from petbind import commands  # noqa: E402,F401
