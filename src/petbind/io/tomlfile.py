"""Read a TOML configuration file with errors that name the file and the fix."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from petbind.errors import ConfigError


def read_toml(path: str | os.PathLike, *, what: str = "config",
              read_fix: str = "check the path",
              syntax_fix: str = "fix the syntax at the line shown") -> dict[str, Any]:
    """Parse the TOML file ``path`` (:func:`read_toml_text` without the text)."""
    return read_toml_text(path, what=what, read_fix=read_fix, syntax_fix=syntax_fix)[0]


def read_toml_text(path: str | os.PathLike, *, what: str = "config",
                   read_fix: str = "check the path",
                   syntax_fix: str = "fix the syntax at the line shown"
                   ) -> tuple[dict[str, Any], str]:
    """Parse the TOML file ``path``; return its tables and its text.

    Parameters
    ----------
    path : path
        The file.
    what : str
        What the file is, for the message ("study config", ...).
    read_fix, syntax_fix : str
        The fix to suggest when the file cannot be read / is not valid TOML.

    Raises
    ------
    ConfigError
        The file cannot be read, or is not valid TOML (the parser's line and
        column are in the message).
    """
    text = _read_text(path, what, read_fix)
    return parse_toml(text, path, what=what, syntax_fix=syntax_fix), text


def _read_text(path: str | os.PathLike, what: str, read_fix: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the {what}: {exc.strerror}", path=path,
                          fix=read_fix) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the {what} is not UTF-8 text (byte {exc.start}: "
                          f"{exc.object[exc.start:exc.start + 1]!r})", path=path,
                          field="encoding", fix="save the file as UTF-8 (TOML files must be "
                          "UTF-8)") from None


def parse_toml(text: str, path: str | os.PathLike | None = None, *, what: str = "config",
               syntax_fix: str = "fix the syntax at the line shown") -> dict[str, Any]:
    """Parse TOML ``text`` read from ``path`` (or shipped in the package), as :func:`read_toml`.

    Raises
    ------
    ConfigError
        Not valid TOML (the parser's line and column are in the message).
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path, fix=syntax_fix) from exc
    except RecursionError:
        raise ConfigError(f"the {what} nests arrays or tables too deeply to read", path=path,
                          fix="flatten the nesting; petbind configs are at most a few levels "
                          "deep") from None
