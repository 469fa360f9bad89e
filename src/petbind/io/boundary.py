"""The reader boundary: no foreign exception leaves a petbind reader.

nibabel, pydicom, pandas, numpy and the standard library raise dozens of
exception types on damaged files (fuzzing the readers with mutated files
found 19: ``struct.error``, ``IndexError``, ``KeyError``, ``TypeError``,
``OverflowError``, ``UnicodeDecodeError``, ``AttributeError`` ...).
:func:`file_reader` wraps a reader so that anything that is not already a
:class:`~petbind.errors.PetbindError` becomes a :class:`FileFormatError`
naming the file, with the original type and message kept in the text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from petbind.errors import FileFormatError, PetbindError

F = TypeVar("F", bound=Callable[..., Any])


def foreign_error(exc: BaseException, path: Any) -> FileFormatError:
    """A FileFormatError for ``exc`` raised by a library while reading ``path``."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    what = "too large to read (out of memory)" if isinstance(exc, MemoryError) else \
        f"cannot be read: {type(exc).__name__}" + (f": {text}" if text else "")
    return FileFormatError(f"the file is damaged or not of the expected format; it {what}",
                           path=path, fix="check that the file is complete and of the "
                           "right format (re-export or copy it again)")


def file_reader(func: F) -> F:
    """Decorate a reader whose first argument is the file (or folder) it reads."""

    @functools.wraps(func)
    def wrapper(path: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(path, *args, **kwargs)
        except PetbindError:
            raise
        except Exception as exc:  # the boundary: every foreign type, by design
            raise foreign_error(exc, path) from exc

    return wrapper  # type: ignore[return-value]
