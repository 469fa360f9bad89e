"""Run ``petbind`` in-process for the ``fit`` command tests and return its exit status."""

from __future__ import annotations

from petbind.cli import main


def run_cli(args: list[str]) -> int:
    """``petbind ARGS``: 0 on success, the ``SystemExit`` code otherwise (2 for errors)."""
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
