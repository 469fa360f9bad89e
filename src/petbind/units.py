"""Activity-concentration and time units, converted to petbind's internal units.

Inside petbind activity concentrations are in **kBq/mL** and times in
**minutes**. Files carry their own units; readers call
:func:`activity_factor` / :func:`time_factor` once, at the edge.

Curie conversions use the exact definition 1 Ci = 3.7e10 Bq (BIPM, SI
Brochure 9th ed., Table 8), so 1 nCi/mL = 0.037 kBq/mL. ``cc`` and ``mL`` are
the same volume; DICOM's ``BQML`` (PS3.3 C.8.9.1.1.3) is Bq/mL.
"""

from __future__ import annotations

import re
from os import PathLike

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import UnitsError

#: Activity prefix -> factor to kBq.
_ACTIVITY_TO_KBQ: dict[str, float] = {
    "bq": 1e-3,
    "kbq": 1.0,
    "mbq": 1e3,
    "gbq": 1e6,
    "pci": 3.7e-5,
    "nci": 3.7e-2,
    "uci": 3.7e1,
    "µci": 3.7e1,
    "μci": 3.7e1,
    "mci": 3.7e4,
    "ci": 3.7e7,
}

#: Volume -> factor to mL.
_VOLUME_TO_ML: dict[str, float] = {"ml": 1.0, "cc": 1.0, "cm3": 1.0, "l": 1e3, "ul": 1e-3}

#: Units that are not activity concentrations but are common in PET files.
_NOT_ACTIVITY = {
    "suv": "SUV is normalised uptake, not an activity concentration",
    "cnts": "CNTS are raw counts, not calibrated activity",
    "counts": "counts are not calibrated activity",
    "propcps": "proportional counts per second are not calibrated activity",
    "1/s": "this is a rate, not an activity concentration",
}

#: Time unit -> factor to minutes.
_TIME_TO_MIN: dict[str, float] = {
    "ms": 1.0 / 60000.0, "msec": 1.0 / 60000.0, "millisecond": 1.0 / 60000.0,
    "milliseconds": 1.0 / 60000.0,
    "s": 1.0 / 60.0, "sec": 1.0 / 60.0, "secs": 1.0 / 60.0, "second": 1.0 / 60.0,
    "seconds": 1.0 / 60.0,
    "min": 1.0, "mins": 1.0, "minute": 1.0, "minutes": 1.0,
    "h": 60.0, "hr": 60.0, "hour": 60.0, "hours": 60.0,
}

KNOWN_ACTIVITY_UNITS = ("Bq/mL", "kBq/mL", "MBq/mL", "nCi/mL", "uCi/mL", "mCi/mL",
                        "Bq/cc", "kBq/cc", "BQML")


def _norm(unit: str) -> str:
    return re.sub(r"\s+", "", str(unit)).replace("^3", "3").replace("³", "3").lower()


def activity_factor(unit: str, *, path: str | PathLike | None = None,
                    field: str = "Units") -> float:
    """Factor that converts values in ``unit`` to kBq/mL.

    Parameters
    ----------
    unit : str
        An activity-concentration unit such as ``"Bq/mL"``, ``"kBq/cc"``,
        ``"nCi/mL"``, ``"uCi/mL"``, ``"mCi/mL"`` or DICOM ``"BQML"``
        (case-insensitive; ``cc`` = ``mL``).
    path, field : optional
        File and field the unit came from, named in the error.

    Returns
    -------
    float
        Multiply values in ``unit`` by this to get kBq/mL.

    Raises
    ------
    UnitsError
        If the unit is unknown or is not an activity concentration (SUV, counts).
    """
    s = _norm(unit)
    if s == "bqml":
        return 1e-3
    if s in _NOT_ACTIVITY:
        raise UnitsError(f"units '{unit}': {_NOT_ACTIVITY[s]}", path=path, field=field,
                         fix="provide images calibrated in an activity concentration "
                         "such as Bq/mL or kBq/mL")
    m = re.fullmatch(r"([a-zµμ]+)(?:/|per)([a-z0-9]+)", s)
    if m and m.group(1) in _ACTIVITY_TO_KBQ and m.group(2) in _VOLUME_TO_ML:
        return _ACTIVITY_TO_KBQ[m.group(1)] / _VOLUME_TO_ML[m.group(2)]
    raise UnitsError(f"unknown activity unit '{unit}'", path=path, field=field,
                     fix=f"use one of {', '.join(KNOWN_ACTIVITY_UNITS)}")


def to_kbq_per_ml(values: ArrayLike, unit: str, *, path: str | PathLike | None = None,
                  field: str = "Units") -> NDArray:
    """Convert activity concentrations from ``unit`` to kBq/mL."""
    return np.asarray(values) * activity_factor(unit, path=path, field=field)


def time_factor(unit: str, *, path: str | PathLike | None = None,
                field: str = "units") -> float:
    """Factor that converts times in ``unit`` (``"s"``, ``"sec"``, ``"min"``, ``"h"``,
    ``"ms"`` ...) to minutes.

    Raises
    ------
    UnitsError
        If the unit is unknown.
    """
    s = _norm(unit)
    if s in _TIME_TO_MIN:
        return _TIME_TO_MIN[s]
    raise UnitsError(f"unknown time unit '{unit}'", path=path, field=field,
                     fix="use s, min or h")
