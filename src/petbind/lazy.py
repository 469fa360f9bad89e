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


def import_without(name: str, *hidden: str) -> types.ModuleType:
    """Import ``name`` while the optional packages ``hidden`` look uninstalled to it.

    For libraries that import heavy optional dependencies eagerly:
    ``nibabel`` imports ``pydicom`` (about 0.15 s of CPU) at import only to
    decode DICOM header extensions of NIfTI files, which petbind never reads
    (:func:`petbind.io.bids.open_nifti` keeps such an extension as bytes). A
    hidden package that is already imported stays visible; afterwards the
    hidden packages import normally for everyone else (``petbind.io.dicom``
    imports ``pydicom`` itself).
    """
    import sys

    if name in sys.modules:
        return sys.modules[name]
    blocked = [h for h in hidden if h not in sys.modules]
    for h in blocked:
        sys.modules[h] = None  # type: ignore[assignment]  # "import h" raises ImportError
    try:
        return importlib.import_module(name)
    finally:
        for h in blocked:
            if sys.modules.get(h, 0) is None:
                del sys.modules[h]
