"""The :class:`Problem` record shared by the readers and ``petbind validate``.

Its own module, below :mod:`petbind.io.bids` and :mod:`petbind.io.validate`, so
that the readers and the validator do not import each other for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from petbind.errors import MetadataError, PetbindError

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Problem:
    """One problem found in a file.

    Attributes
    ----------
    severity : {"error", "warning"}
        Errors stop petbind from using the file; warnings deserve a look.
    file : str or None
        The file concerned.
    field : str or None
        Field, column or key concerned.
    message : str
        What is wrong.
    fix : str
        How to fix it.
    error : type of PetbindError, optional
        The exception a reader raises for this problem.
    """

    severity: Literal["error", "warning"]
    file: str | None
    field: str | None
    message: str
    fix: str
    error: type[PetbindError] | None = None

    @classmethod
    def from_error(cls, exc: PetbindError, file: PathLike | None = None) -> Problem:
        """An error-severity problem from a raised PetbindError."""
        return cls("error", exc.path or (None if file is None else str(file)), exc.field,
                   exc.message, exc.fix or "", type(exc))

    def to_error(self) -> PetbindError:
        """The PetbindError a reader raises for this problem."""
        cls = self.error or MetadataError
        return cls(self.message, path=self.file, field=self.field, fix=self.fix or None)
