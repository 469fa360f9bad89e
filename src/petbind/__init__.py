"""petbind: quantitative PET neuroreceptor imaging.

From the dynamic scans of a pharmacological-challenge study to "where, and by
how much, did the drug change receptor binding", with honest statistics.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("petbind")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
