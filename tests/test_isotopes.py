"""Tests for petbind.isotopes against published half-lives."""

from __future__ import annotations

import math

import pytest

from petbind.errors import IsotopeError
from petbind.isotopes import HALF_LIVES_S, get_isotope

#: NNDC NuDat 3 (ENSDF) half-lives as published, with their units.
NUDAT = {
    "11C": (20.364, "min"), "18F": (109.739, "min"), "15O": (122.24, "s"),
    "13N": (9.965, "min"), "68Ga": (67.71, "min"), "64Cu": (12.701, "h"),
    "89Zr": (78.41, "h"), "82Rb": (75.45, "s"), "124I": (4.1760, "d"),
}
#: Turku PET Centre "Radionuclides" table (min), an independent second source.
TURKU_MIN = {"11C": 20.38, "18F": 109.77, "15O": 2.037, "13N": 9.965, "68Ga": 67.71,
             "82Rb": 1.258}
_TO_S = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


@pytest.mark.parametrize("name", sorted(NUDAT))
def test_half_life_matches_nudat(name):
    value, unit = NUDAT[name]
    assert get_isotope(name).half_life_s == pytest.approx(value * _TO_S[unit], rel=1e-12)


@pytest.mark.parametrize("name", sorted(TURKU_MIN))
def test_half_life_agrees_with_turku_table_within_0_2_percent(name):
    assert get_isotope(name).half_life_min == pytest.approx(TURKU_MIN[name], rel=2e-3)


def test_table_has_exactly_the_issue_isotopes():
    assert set(HALF_LIVES_S) == set(NUDAT)


@pytest.mark.parametrize("spelling", ["11C", "C11", "C-11", "c-11", "[11C]", "Carbon-11",
                                      "carbon 11", "C_11", " 11c "])
def test_common_spellings_resolve_to_carbon_11(spelling):
    assert get_isotope(spelling).name == "11C"


@pytest.mark.parametrize(("spelling", "nuclide"), [
    ("Ga-68", "68Ga"), ("68Ga", "68Ga"), ("gallium-68", "68Ga"), ("Zr89", "89Zr"),
    ("I-124", "124I"), ("Rb82", "82Rb")])
def test_two_letter_elements_resolve(spelling, nuclide):
    # each spelling to its own nuclide (the old set test passed with Ga-68 -> 89Zr)
    assert get_isotope(spelling).name == nuclide


def test_decay_constant_is_ln2_over_half_life_per_minute():
    iso = get_isotope("F-18")
    assert iso.decay_constant_per_min == pytest.approx(math.log(2) / 109.739, rel=1e-14)


@pytest.mark.parametrize("bad", ["Tc-99m", "C-12", "carbon", "", "18"])
def test_unknown_radionuclide_names_field_and_lists_known_ones(bad):
    with pytest.raises(IsotopeError) as e:
        get_isotope(bad)
    assert e.value.field == "TracerRadionuclide"
    assert "11C" in e.value.fix
