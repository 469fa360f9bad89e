"""The two rich consoles every command prints to (stdout and stderr).

Kept below both :mod:`petbind.cli` and the command modules, so that commands
never import the CLI module that registers them (no import cycle).
"""

from __future__ import annotations

from rich.console import Console

#: Results and progress for people (stdout).
console = Console()
#: Errors and warnings (stderr).
err_console = Console(stderr=True)
