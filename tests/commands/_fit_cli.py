"""Run ``petbind`` in-process for the command tests: its exit status (and its output)."""

from __future__ import annotations

from petbind.cli import main


def run_cli(args: list[str]) -> int:
    """``petbind ARGS``: 0 on success, the ``SystemExit`` code otherwise (2 for errors)."""
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def cli_output(argv: list[str], capsys) -> tuple[int, str, str]:
    """``petbind ARGV`` in-process: ``(exit status, stdout, stderr)`` (pytest's capsys)."""
    code = run_cli(argv)
    out = capsys.readouterr()
    return code, out.out, out.err
