"""Radionuclides used in PET and their physical half-lives.

Half-lives are the evaluated values of ENSDF as published by the National
Nuclear Data Center, NuDat 3 (https://www.nndc.bnl.gov/nudat3/), rounded to
the quoted precision. Values in the PET literature differ in the last digit
(e.g. C-11 20.38 min in Turku PET Centre tables vs 20.364 min here, 0.08 %).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from petbind.errors import IsotopeError


@dataclass(frozen=True)
class Isotope:
    """A positron-emitting radionuclide.

    Attributes
    ----------
    name : str
        Canonical BIDS-style name, e.g. ``"11C"``.
    half_life_s : float
        Physical half-life in seconds.
    """

    name: str
    half_life_s: float

    @property
    def half_life_min(self) -> float:
        """Half-life in minutes."""
        return self.half_life_s / 60.0

    @property
    def decay_constant_per_min(self) -> float:
        """Decay constant lambda = ln 2 / T_1/2, in 1/min."""
        return math.log(2.0) / self.half_life_min


_MIN = 60.0
_H = 3600.0
_D = 86400.0

#: Canonical name -> half-life in seconds (ENSDF via NNDC NuDat 3).
HALF_LIVES_S: dict[str, float] = {
    "11C": 20.364 * _MIN,
    "18F": 109.739 * _MIN,
    "15O": 122.24,
    "13N": 9.965 * _MIN,
    "68Ga": 67.71 * _MIN,
    "64Cu": 12.701 * _H,
    "89Zr": 78.41 * _H,
    "82Rb": 75.45,
    "124I": 4.1760 * _D,
}

_ELEMENT = {"c": "C", "f": "F", "o": "O", "n": "N", "ga": "Ga", "cu": "Cu", "zr": "Zr",
            "rb": "Rb", "i": "I"}


def get_isotope(name: str) -> Isotope:
    """Look up an isotope by any common spelling.

    Accepts ``"11C"``, ``"C11"``, ``"C-11"``, ``"c-11"``, ``"[11C]"``,
    ``"Carbon-11"`` style spellings for the isotopes in :data:`HALF_LIVES_S`.

    Raises
    ------
    IsotopeError
        If the name is not recognised.
    """
    raw = str(name).strip()
    s = raw.strip("[]").replace(" ", "").replace("_", "-").lower()
    long_names = {"carbon": "c", "fluorine": "f", "oxygen": "o", "nitrogen": "n",
                  "gallium": "ga", "copper": "cu", "zirconium": "zr", "rubidium": "rb",
                  "iodine": "i"}
    for long, short in long_names.items():
        s = s.replace(long, short)
    m = re.fullmatch(r"(\d+)-?([a-z]+)", s) or re.fullmatch(r"([a-z]+)-?(\d+)", s)
    if m:
        a, b = m.groups()
        mass, elem = (a, b) if a.isdigit() else (b, a)
        key = f"{mass}{_ELEMENT.get(elem, elem.capitalize())}"
        if key in HALF_LIVES_S:
            return Isotope(key, HALF_LIVES_S[key])
    known = ", ".join(HALF_LIVES_S)
    raise IsotopeError(
        f"unknown radionuclide '{raw}'",
        field="TracerRadionuclide",
        fix=f"use one of {known}",
    )
