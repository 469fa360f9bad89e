"""Whole-file reads that are not a data format of their own: bytes, hashes, package data.

Every file petbind opens is opened in :mod:`petbind.io` (tests/test_file_access.py
checks it); these are the readers for files whose content is not parsed
here: a file's SHA-256 for provenance, the bytes of a figure to embed, a
picture to shrink, and the text of a file shipped inside the petbind
package (default configs, the report's styles and scripts).
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Any

from petbind.errors import FileFormatError

PathLike = str | os.PathLike

#: Bytes read per block while hashing (1 MiB).
HASH_BLOCK = 1 << 20


def sha256_file(path: PathLike, chunk: int = HASH_BLOCK) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte blocks.

    Raises
    ------
    OSError
        The file cannot be read (callers that record ``"missing"`` check
        existence first).
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_bytes(path: PathLike, *, what: str = "file") -> bytes:
    """The bytes of ``path``.

    Raises
    ------
    FileFormatError
        The file is missing or cannot be read (names the file).
    """
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FileFormatError(f"cannot read the {what}: {exc.strerror or exc}", path=path,
                              fix="check the path and its permissions") from None


def read_picture(path: PathLike | Any) -> Any:
    """A PNG/JPEG picture (a path or an open binary file) as an RGB ``PIL.Image``.

    The file is closed on return.

    Raises
    ------
    OSError
        When the file cannot be read or is not a picture (PIL's errors).
    """
    from PIL import Image

    with Image.open(path) as src:
        return src.convert("RGB")


def package_text(*parts: str, package: str = "petbind") -> str:
    """The UTF-8 text of a file shipped in ``package`` (``package_text("data", "x.toml")``)."""
    return resources.files(package).joinpath(*parts).read_text(encoding="utf-8")
