"""The petbind exception hierarchy.

Every error a user can cause derives from :class:`PetbindError`. Messages name
the file, the field and how to fix the problem, so the command line can print
them in one or two lines without a traceback.
"""

from __future__ import annotations

from os import PathLike


class PetbindError(Exception):
    """Base class of all errors petbind raises on purpose.

    Parameters
    ----------
    message : str
        What is wrong, in a PET scientist's words.
    path : str or PathLike, optional
        The file or folder concerned.
    field : str, optional
        The field, column, key or option concerned.
    fix : str, optional
        What the user can do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.field = field
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.path:
            where.append(self.path)
        if self.field:
            where.append(f"field '{self.field}'")
        head = ": ".join([", ".join(where), self.message]) if where else self.message
        return f"{head} (fix: {self.fix})" if self.fix else head


class TimingError(PetbindError):
    """Frame timing is missing, inconsistent or impossible."""


class DecayError(PetbindError):
    """Decay-correction metadata is missing or contradictory."""


class UnitsError(PetbindError):
    """An activity or time unit is unknown or cannot be converted."""


class IsotopeError(PetbindError):
    """The radionuclide is unknown."""


class MetadataError(PetbindError):
    """A required sidecar or header field is missing or invalid."""


class FileFormatError(PetbindError):
    """A file cannot be parsed (corrupt, truncated, wrong format)."""


class DataError(PetbindError):
    """Numeric content is invalid (NaN, inf, negative where impossible, shape mismatch)."""


class ConfigError(PetbindError):
    """A configuration file or option is invalid."""


class ModelError(PetbindError):
    """A kinetic model cannot be configured or fitted with the given inputs."""
