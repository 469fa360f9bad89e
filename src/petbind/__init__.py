"""petbind: quantitative PET neuroreceptor imaging.

From the dynamic scans of a pharmacological-challenge study to "where, and by
how much, did the drug change receptor binding", with honest statistics.
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # the version is read from the installed metadata on first use: importlib.metadata
    # costs about 40 ms, which `petbind --help` and every command would pay on import
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("petbind")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            v = "0.0.0+unknown"
        globals()["__version__"] = v
        return v
    raise AttributeError(f"module 'petbind' has no attribute {name!r}")
