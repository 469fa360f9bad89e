"""Tests for petbind.tac.TACTable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from petbind.errors import DataError, TimingError, UnitsError
from petbind.tac import TACTable
from petbind.timing import FrameTiming

TIMING = FrameTiming.from_schedule([(2, 30), (2, 60)], unit="s")


def _t():
    return TACTable(TIMING, [[1, 2, 3, 4], [5, 6, 7, 8]], ["caudate", "cerebellum"],
                    metadata={"TracerName": "DASB"})


def test_curve_returns_the_named_row():
    np.testing.assert_array_equal(_t().curve("cerebellum"), [5, 6, 7, 8])
    with pytest.raises(KeyError, match="caudate"):
        _t().curve("putamen")


def test_to_frame_has_frame_edges_in_seconds_and_one_column_per_region():
    df = _t().to_frame()
    assert list(df.columns) == ["frame_start", "frame_end", "caudate", "cerebellum"]
    np.testing.assert_allclose(df["frame_start"], [0, 30, 60, 120])
    np.testing.assert_allclose(df["frame_end"], [30, 60, 120, 180])
    assert df.attrs["units"] == "kBq/mL"


def test_from_frame_round_trips():
    t = _t()
    back = TACTable.from_frame(t.to_frame())
    assert back.timing == t.timing and back.regions == t.regions
    np.testing.assert_array_equal(back.values, t.values)
    assert back.metadata == {"TracerName": "DASB"}


def test_from_frame_accepts_string_cells_and_na_tokens():
    df = pd.DataFrame({"frame_start": ["0", "60"], "frame_end": ["60", "120"],
                       "r": ["1.5", "n/a"]})
    t = TACTable.from_frame(df, units="kBq/mL")
    np.testing.assert_array_equal(t.values, [[1.5, np.nan]])


def test_from_frame_refuses_non_numeric_cells_naming_column_and_row():
    df = pd.DataFrame({"frame_start": [0, 60], "frame_end": [60, 120], "r": ["1.5", "x"]})
    with pytest.raises(DataError) as e:
        TACTable.from_frame(df, source="t.tsv")
    assert e.value.field == "r" and "row 2" in e.value.message and e.value.path == "t.tsv"


def test_from_frame_refuses_missing_frame_columns():
    with pytest.raises(TimingError):
        TACTable.from_frame(pd.DataFrame({"frame_start": [0], "r": [1]}))


def test_one_dimensional_values_are_one_region():
    t = TACTable(TIMING, [1, 2, 3, 4], ["r"])
    assert t.values.shape == (1, 4)


@pytest.mark.parametrize(("values", "regions", "words"), [
    ([[1, 2, 3]], ["a"], "3 frames"),
    ([[1, 2, 3, 4]], ["a", "b"], "1 curves but 2"),
    ([[1, 2, 3, 4], [1, 2, 3, 4]], ["a", "a"], "duplicate"),
    ([[1, 2, 3, 4]], [" "], "empty"),
    (np.ones((1, 1, 4)), ["a"], "n_regions"),
])
def test_inconsistent_tables_are_refused(values, regions, words):
    with pytest.raises(DataError, match=words):
        TACTable(TIMING, values, regions)


def test_unknown_units_are_refused():
    with pytest.raises(UnitsError):
        TACTable(TIMING, [[1, 2, 3, 4]], ["a"], units="furlongs")


def test_to_units_converts_with_the_curie_definition():
    t = _t().to_units("nCi/mL")
    np.testing.assert_allclose(t.values[0], np.array([1, 2, 3, 4]) / 0.037)
    assert t.units == "nCi/mL"


def test_select_reorders_regions():
    s = _t().select(["cerebellum", "caudate"])
    assert s.regions == ["cerebellum", "caudate"]
    np.testing.assert_array_equal(s.values[0], [5, 6, 7, 8])
