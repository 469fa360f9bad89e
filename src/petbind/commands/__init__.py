"""Registration of every sub-command on :data:`petbind.cli.app`.

Each command lives in its own module here (``commands/fit.py`` ...) exposing
``register(app)``; add its module name to ``_MODULES`` when it lands. Modules
import the heavy library parts inside the command functions, so
``petbind --help`` stays fast.
"""

from __future__ import annotations

import importlib

from petbind.cli import app

_MODULES: list[str] = [
    "parametric",
    "fit",
    "simulate",
    "run",
    "demo",
    "validate",
    "report",
    "preprocess",
    "init",
]

for _name in _MODULES:
    importlib.import_module(f"petbind.commands.{_name}").register(app)
