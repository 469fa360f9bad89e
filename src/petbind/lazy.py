"""Modules imported on first use, so a command pays only for the libraries it uses.

``pd = lazy_module("pandas")`` at the top of a module behaves like
``import pandas as pd`` except that pandas is imported when an attribute of
``pd`` is first read (e.g. ``pd.DataFrame``). With ``from __future__ import
annotations`` type hints such as ``-> pd.DataFrame`` never trigger it.
``petbind parametric`` reads and writes NIfTI only; before this it imported
pandas (about 0.3 s of CPU) through the TAC and TSV modules.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class _LazyModule(types.ModuleType):
    """A stand-in that imports the named module on first attribute access."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_petbind_module"] = None

    def _load(self) -> types.ModuleType:
        mod = self.__dict__["_petbind_module"]
        if mod is None:
            mod = importlib.import_module(self.__name__)
            self.__dict__["_petbind_module"] = mod
        return mod

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())


def lazy_module(name: str) -> Any:
    """A module object for ``name`` that is imported when first used."""
    return _LazyModule(name)
