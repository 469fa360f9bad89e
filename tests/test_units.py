"""Tests for petbind.units: activity and time units to kBq/mL and minutes."""

from __future__ import annotations

import numpy as np
import pytest

from petbind.errors import UnitsError
from petbind.units import activity_factor, time_factor, to_kbq_per_ml

# 1 Ci = 3.7e10 Bq exactly (SI Brochure, 9th ed., Table 8)
CI_BQ = 3.7e10


@pytest.mark.parametrize(("unit", "kbq_per_ml"), [
    ("Bq/mL", 1e-3), ("kBq/mL", 1.0), ("MBq/mL", 1e3), ("GBq/mL", 1e6),
    ("nCi/mL", CI_BQ * 1e-9 / 1e3), ("uCi/mL", CI_BQ * 1e-6 / 1e3),
    ("µCi/mL", CI_BQ * 1e-6 / 1e3), ("mCi/mL", CI_BQ * 1e-3 / 1e3),
    ("Bq/cc", 1e-3), ("kBq/cc", 1.0), ("kBq/cm3", 1.0), ("kBq/cm^3", 1.0),
    ("Bq/L", 1e-6), ("BQML", 1e-3), ("bq/ml", 1e-3), ("kBq / mL", 1.0),
])
def test_activity_units_convert_to_kbq_per_ml(unit, kbq_per_ml):
    assert activity_factor(unit) == pytest.approx(kbq_per_ml, rel=1e-12)


def test_array_conversion():
    np.testing.assert_allclose(to_kbq_per_ml([1000.0, 2500.0], "Bq/mL"), [1.0, 2.5])


@pytest.mark.parametrize("unit", ["SUV", "CNTS", "counts", "propcps", "Bq", "kBq/g", "mL/min",
                                  "", "furlong/fortnight"])
def test_non_activity_concentrations_are_refused_with_the_field(unit):
    with pytest.raises(UnitsError) as e:
        activity_factor(unit, path="a.json", field="Units")
    assert e.value.field == "Units" and e.value.path == "a.json" and e.value.fix


@pytest.mark.parametrize(("unit", "minutes"), [
    ("s", 1 / 60), ("sec", 1 / 60), ("seconds", 1 / 60), ("min", 1.0), ("minutes", 1.0),
    ("h", 60.0), ("ms", 1 / 60000),
])
def test_time_units_convert_to_minutes(unit, minutes):
    assert time_factor(unit) == pytest.approx(minutes, rel=1e-12)


def test_unknown_time_unit_is_refused():
    with pytest.raises(UnitsError):
        time_factor("jiffies")
