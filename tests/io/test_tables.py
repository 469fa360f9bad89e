"""Tests for petbind.io.tables: BIDS _tacs.tsv, PMOD .tac, Turku .dft."""

from __future__ import annotations

import json

import numpy as np
import pytest

from petbind.io.tables import (
    read_json,
    read_tacs,
    sidecar_path,
    timing_from_frame_table,
    write_tacs,
)
from petbind.tac import TACTable
from petbind.timing import FrameTiming


def _table(units="kBq/mL"):
    timing = FrameTiming.from_schedule([(3, 20), (2, 60), (1, 300)], unit="s")
    rng = np.random.default_rng(3)
    values = rng.uniform(0.1, 50.0, size=(3, timing.n_frames))
    values[1, 2] = np.nan  # a missing value survives every format
    return TACTable(timing, values, ["caudate", "putamen", "cerebellum"], units,
                    {"TracerName": "DASB"})


@pytest.mark.parametrize("name", ["sub-01_desc-x_tacs.tsv", "x.tac", "x.dft"])
def test_write_then_read_round_trips_values_timing_and_regions(tmp_path, name):
    t = _table()
    write_tacs(tmp_path / name, t)
    back = read_tacs(tmp_path / name)
    assert back.regions == t.regions
    assert back.timing == t.timing
    np.testing.assert_allclose(back.values, t.values, rtol=1e-13, equal_nan=True)
    assert back.units == "kBq/mL"


def test_read_converts_table_units_to_kbq_per_ml(tmp_path):
    t = _table(units="nCi/mL")
    write_tacs(tmp_path / "x_tacs.tsv", t)
    back = read_tacs(tmp_path / "x_tacs.tsv")
    np.testing.assert_allclose(back.values, t.values * 0.037, rtol=1e-13, equal_nan=True)
    assert back.metadata["source_units"] == "nCi/mL"


def test_bids_table_has_frame_columns_in_seconds_and_sidecar_units(tmp_path):
    write_tacs(tmp_path / "x_tacs.tsv", _table())
    lines = (tmp_path / "x_tacs.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["frame_start", "frame_end", "caudate", "putamen",
                                    "cerebellum"]
    assert lines[1].split("\t")[:2] == ["0", "20"]
    assert lines[-1].split("\t")[:2] == ["180", "480"]
    assert lines[3].split("\t")[3] == "n/a"
    side = json.loads((tmp_path / "x_tacs.json").read_text())
    assert side["Units"] == "kBq/mL"
    assert side["frame_start"]["Units"] == "s"
    assert side["TracerName"] == "DASB"


def test_hand_written_pmod_file_in_minutes_and_nci_per_cc(tmp_path):
    p = tmp_path / "roi.tac"
    p.write_text("start[minutes]\tend[nCi/cc]\tFrontal[nCi/cc]\tCerebellum\n"
                 "0\t0.5\t100\t50\n0.5\t1.5\t200\t80\n1.5\t4\t150\t60\n")
    t = read_tacs(p)
    assert t.regions == ["Frontal", "Cerebellum"]
    np.testing.assert_allclose(t.timing.start, [0.0, 0.5, 1.5])
    np.testing.assert_allclose(t.timing.end, [0.5, 1.5, 4.0])
    np.testing.assert_allclose(t.curve("Frontal"), [3.7, 7.4, 5.55])  # x 0.037 kBq/nCi
    np.testing.assert_allclose(t.curve("Cerebellum"), [1.85, 2.96, 2.22])


def test_pmod_mid_time_column_is_ignored(tmp_path):
    p = tmp_path / "roi.tac"
    p.write_text("start[seconds]\tend[kBq/cc]\tmid[seconds]\tstriatum\n"
                 "0\t60\t30\t1\n60\t120\t90\t2\n")
    t = read_tacs(p)
    assert t.regions == ["striatum"]
    np.testing.assert_allclose(t.values, [[1.0, 2.0]])


def test_hand_written_dft_file_with_name_parts_and_seconds(tmp_path):
    p = tmp_path / "a.dft"
    p.write_text("DFT1\tputamen\tputamen\tcer\n"
                 "a1234\tdx\tsin\t.\n"
                 "Bq/cc\tall\tall\t.\n"
                 "Times (sec)\t1.2\t1.3\t5.0\n"
                 "# a comment line\n"
                 "0\t60\t1000\t1100\t500\n"
                 "60\t180\t3000\t3300\t.\n")
    t = read_tacs(p)
    assert t.regions == ["putamen_dx_all", "putamen_sin_all", "cer"]
    np.testing.assert_allclose(t.timing.start_s, [0, 60])
    np.testing.assert_allclose(t.timing.duration_s, [60, 120])
    np.testing.assert_allclose(t.values, [[1.0, 3.0], [1.1, 3.3], [0.5, np.nan]])


def test_bids_table_without_sidecar_uses_the_units_given(tmp_path):
    p = tmp_path / "x_tacs.tsv"
    p.write_text("frame_start\tframe_end\tr\n0\t60\t2000\n")
    t = read_tacs(p, units="Bq/mL")
    np.testing.assert_allclose(t.values, [[2.0]])


def test_bids_table_column_units_and_minute_times_in_sidecar(tmp_path):
    p = tmp_path / "x_tacs.tsv"
    p.write_text("frame_start\tframe_end\tr\n0\t1\t2\n1\t3\t4\n")
    p.with_suffix(".json").write_text(json.dumps(
        {"frame_start": {"Units": "min"}, "frame_end": {"Units": "min"},
         "r": {"Units": "MBq/mL"}}))
    t = read_tacs(p)
    np.testing.assert_allclose(t.timing.end, [1.0, 3.0])
    np.testing.assert_allclose(t.values, [[2000.0, 4000.0]])


def test_write_refuses_region_names_with_spaces_in_pmod_and_dft(tmp_path):
    timing = FrameTiming.from_schedule([(2, 60)])
    t = TACTable(timing, [[1, 2]], ["left caudate"])
    from petbind.errors import DataError

    for name in ("x.tac", "x.dft"):
        with pytest.raises(DataError):
            write_tacs(tmp_path / name, t)
    assert list(tmp_path.iterdir()) == []


def test_unknown_extension_is_refused(tmp_path):
    from petbind.errors import FileFormatError

    with pytest.raises(FileFormatError):
        read_tacs(tmp_path / "x.xlsx")


def test_timing_table_with_durations_or_ends(tmp_path):
    a = tmp_path / "a.tsv"
    a.write_text("frame_start\tframe_duration\n0\t30\n30\t90\n")
    b = tmp_path / "b.tsv"
    b.write_text("frame_start\tframe_end\n0\t30\n30\t120\n")
    assert timing_from_frame_table(a) == timing_from_frame_table(b)
    np.testing.assert_allclose(timing_from_frame_table(a).end, [0.5, 2.0])


def test_sidecar_path_replaces_every_known_extension(tmp_path):
    assert sidecar_path("a/b_pet.nii.gz").name == "b_pet.json"
    assert sidecar_path("a/b_tacs.tsv").name == "b_tacs.json"
    assert sidecar_path("a/b.v").name == "b.json"


def test_read_json_optional_missing_file_is_empty(tmp_path):
    assert read_json(tmp_path / "none.json", required=False) == {}
