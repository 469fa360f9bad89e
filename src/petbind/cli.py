"""The ``petbind`` command.

Each sub-command is a thin layer over the library. Errors derived from
:class:`~petbind.errors.PetbindError` are printed in one or two lines without a
traceback and exit with status 2 (``--debug`` shows the traceback).
Sub-commands live in :mod:`petbind.commands` and are registered on :data:`app`
by :func:`petbind.commands.register_all`; they never import this module.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from petbind.commands import register_all, start_early
from petbind.commands.consoles import console, err_console
from petbind.errors import PetbindError

#: Settings of :data:`app` (and of the one-command app of :func:`_app_for`).
_APP_SETTINGS = dict(
    name="petbind",
    help="Quantitative PET neuroreceptor imaging: from dynamic scans to binding changes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app = typer.Typer(**_APP_SETTINGS)
__all__ = ["app", "console", "err_console", "main"]


def _version(value: bool) -> None:
    if value:
        from petbind import __version__

        console.print(f"petbind {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """petbind: PET receptor binding, from scans to statistics."""
    # --debug is read by main() from argv (it must be known before typer parses)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning PetbindError (and expected OS failures,
:func:`petbind.failures.as_petbind_error`) into a one-line message."""
    words = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in words
    if argv is None:
        _collect_less()
    try:
        start_early(words)  # e.g. petbind parametric: inflate the scan beside the parsing
        _app_for(words)(args=argv, prog_name="petbind")
    except (PetbindError, OSError, RecursionError, MemoryError) as exc:
        # expected OS / library failures (full disk, permissions, ...) said for people
        from petbind.failures import as_petbind_error

        err = as_petbind_error(exc)
        if debug or err is None:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False,
                          soft_wrap=True)
        sys.exit(2)
    finally:
        prefetch = sys.modules.get("petbind.io.prefetch")
        if prefetch is not None:  # input read ahead that the command did not take
            prefetch.cancel_all()
        if argv is None:
            _exit_without_collecting()


def _app_for(words: list[str]) -> typer.Typer:
    """:data:`app`, or for ``petbind COMMAND ...`` an app holding that command only.

    typer builds the click command of every registered command at each start
    (0.026-0.031 CPU-s for the eleven, 0.003-0.005 for one; issue 18). The
    one-command app has the same settings, root options and callback, and the
    command registers itself on it as on :data:`app`, so its options, help and
    errors are the same (tests/test_cli.py compares them for every command).
    ``petbind`` alone, ``--help`` before a command, or a word that is not a
    command get :data:`app`.
    """
    from petbind.commands import _MODULES

    name = next((w for w in words if not w.startswith("-")), None)
    if name not in _MODULES:
        return app
    one = typer.Typer(**_APP_SETTINGS)
    one.callback()(_root)
    sys.modules[f"petbind.commands.{name}"].register(one)
    return one


def _collect_less() -> None:
    """The program (``main()`` without ``argv``) collects cyclic garbage less often.

    What ``import petbind.cli`` made (typer, rich, the commands) lives as long as
    the process, so it is moved out of the collector's sight (``gc.freeze``), and
    a collection starts after 10,000 new container objects instead of 700: the
    collector's time in a ``petbind parametric`` run fell from 0.064 to 0.032
    CPU-s (138 -> 47 collections while numpy, nibabel, pydantic and the engine
    are imported; issue 18). Cycles are still collected, only in larger batches.
    """
    import gc

    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])


def _exit_without_collecting() -> None:
    """Spare the process's exit a garbage collection of every object it ever made.

    ``main()`` without ``argv`` is the program (``petbind``, ``python -m
    petbind``): the process ends right after it. The interpreter's shutdown
    runs the cyclic garbage collector over everything the imports made (typer,
    pydantic, numpy, nibabel ...): 0.1-0.17 s of a ``petbind parametric`` run
    (issue 18), 0.01-0.03 s once they are frozen. Every output is written and
    closed by now, and atexit handlers still run; the memory goes back to the
    system with the process.
    """
    import gc

    gc.disable()
    gc.freeze()


# Sub-commands live with the code they drive (petbind.commands); register them on `app`.
register_all(app)
