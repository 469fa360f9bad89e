"""Atomic output: write to a temporary name in the target folder, then rename.

A run killed at any point leaves either the old file or the complete new one,
never a half-written file, so a rerun can trust every file it finds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    """0666 less the process umask (read once, at import: umask() is process-wide)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


#: Names of the temporary files :func:`atomic_path` makes: ``.<name>.<8 random>.part<suffixes>``
#: (``tempfile.mkstemp`` draws the 8 characters from ``[a-z0-9_]``).
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.part(\..+)?$")


def is_temporary(name: str) -> bool:
    """True for the name of a temporary file left by :func:`atomic_path` (a killed run)."""
    return bool(TEMP_NAME.match(name))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps the target's suffixes (``.nii.gz``), so libraries
    that choose a format from the name behave as for the final name. On any
    exception the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}",
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file 0600; give the output the permissions an
        # ordinary open() would (0666 less the umask), so others can read it.
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(target)  # a full disk on write() names no file; say which
        raise


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (UTF-8)."""
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write a JSON file atomically (indented, UTF-8, non-finite numbers as null)."""

    def clean(o: Any) -> Any:
        if isinstance(o, float) and (o != o or o in (float("inf"), float("-inf"))):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        if hasattr(o, "tolist"):
            return clean(o.tolist())
        return o

    return write_text_atomic(path, json.dumps(clean(obj), indent=2) + "\n")
