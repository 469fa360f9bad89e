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
    """Parse the TOML file ``path``.

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
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the {what}: {exc.strerror}", path=path,
                          fix=read_fix) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the {what} is not UTF-8 text (byte {exc.start}: "
                          f"{exc.object[exc.start:exc.start + 1]!r})", path=path,
                          field="encoding", fix="save the file as UTF-8 (TOML files must be "
                          "UTF-8)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path, fix=syntax_fix) from exc
    except RecursionError:
        raise ConfigError(f"the {what} nests arrays or tables too deeply to read", path=path,
                          fix="flatten the nesting; petbind configs are at most a few levels "
                          "deep") from None
