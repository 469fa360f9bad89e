"""Registration of every sub-command on the app of :mod:`petbind.cli`.

Each command lives in its own module here (``commands/fit.py`` ...) exposing
``register(app)``; add its module name to ``_MODULES`` when it lands. Modules
import the heavy library parts inside the command functions, so
``petbind --help`` stays fast. Commands print through
:mod:`petbind.commands.consoles` and never import :mod:`petbind.cli`.
"""

from __future__ import annotations

import importlib
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
    "pvc",
]



def register_all(app: Any) -> None:
    """Add every command of :data:`_MODULES` to the typer ``app``."""
    for name in _MODULES:
        importlib.import_module(f"petbind.commands.{name}").register(app)
