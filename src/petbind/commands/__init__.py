"""Registration of every sub-command on the app of :mod:`petbind.cli`.

Each command lives in its own module here (``commands/fit.py`` ...) exposing
``register(app)``; add its module name to ``_MODULES`` when it lands. Modules
import the heavy library parts inside the command functions, so
``petbind --help`` stays fast. Commands print through
:mod:`petbind.commands.consoles` and never import :mod:`petbind.cli`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

_MODULES: list[str] = [
    "parametric",
    "fit",
    "simulate",
    "run",
    "demo",
    "validate",
    "report",
    "preprocess",
    "power",
    "pvc",
    "init",
]


def register_all(app: Any) -> None:
    """Add every command of :data:`_MODULES` to the typer ``app``."""
    for name in _MODULES:
        importlib.import_module(f"petbind.commands.{name}").register(app)


def start_early(argv: list[str]) -> None:
    """Let the invoked command start reading its input before typer parses the options.

    ``argv`` is the command line after ``petbind``. The command's module may
    define ``early(args)`` (``args``: the words after the command's name); it
    may only start background reading (:mod:`petbind.io.prefetch`) and must
    not fail: typer then parses and checks the options as always.
    ``petbind parametric`` starts inflating its scan here, beside the parsing
    and imports (issue 18).
    """
    words = [a for a in argv if not a.startswith("-")]
    if not words or words[0] not in _MODULES or "--help" in argv:
        return
    name = words[0]
    module = sys.modules.get(f"petbind.commands.{name}")
    early = getattr(module, "early", None)
    if early is not None:
        early(argv[argv.index(name) + 1:])
