"""Tests for petbind.io.blood: BIDS *_blood.tsv + JSON, manual and autosampler."""

from __future__ import annotations

import json

import numpy as np
import pytest

from petbind.io.blood import BloodRecording, read_blood, write_blood


def test_manual_recording_of_fixture_in_minutes_from_injection_and_kbq(tmp_path, fx):
    ds = fx.make_bids_dataset(tmp_path, injection_start_s=45.0)
    rec = read_blood(ds["blood"])
    assert rec.recording == "manual"
    # sample times 10..600 s after injection (the PET sidecar's InjectionStart is used)
    np.testing.assert_allclose(rec.time, np.array([10, 30, 60, 120, 300, 600]) / 60.0)
    np.testing.assert_allclose(rec.whole_blood, [50, 30, 20, 12, 6, 4])
    np.testing.assert_allclose(rec.plasma, 1.2 * np.array([50, 30, 20, 12, 6, 4]))
    np.testing.assert_allclose(rec.parent_fraction, [1.0, 0.95, 0.9, 0.8, 0.6, 0.5])
    assert rec.metadata["injection_start_source"] == "PET sidecar"
    assert rec.metadata["MetaboliteMethod"] == "HPLC"


def test_autosampler_recording_in_bq_per_ml_with_missing_values(tmp_path):
    p = tmp_path / "sub-01_recording-autosampler_blood.tsv"
    p.write_text("time\twhole_blood_radioactivity\n0\t0\n1\t1500\n2\tn/a\n3\t2500\n")
    (tmp_path / "sub-01_recording-autosampler_blood.json").write_text(json.dumps({
        "WholeBloodAvail": True, "PlasmaAvail": False, "MetaboliteAvail": False,
        "time": {"Units": "s"}, "whole_blood_radioactivity": {"Units": "Bq/mL"}}))
    rec = read_blood(p, injection_start_s=0.0)
    assert rec.recording == "autosampler"
    np.testing.assert_allclose(rec.whole_blood, [0, 1.5, np.nan, 2.5])
    np.testing.assert_allclose(rec.time, np.array([0, 1, 2, 3]) / 60)
    assert rec.plasma is None


def test_write_then_read_round_trips(tmp_path):
    rec = BloodRecording("manual", np.array([0.1, 0.5, 2.0, 10.0]),
                         {"plasma_radioactivity": np.array([30.0, 20.0, 5.0, 1.0]),
                          "metabolite_parent_fraction": np.array([1.0, 0.9, 0.7, np.nan])},
                         {"MetaboliteMethod": "HPLC"})
    p = write_blood(tmp_path / "sub-01_recording-manual_blood.tsv", rec, injection_start_s=30.0)
    back = read_blood(p, injection_start_s=30.0)
    np.testing.assert_allclose(back.time, rec.time, rtol=1e-14)
    for k, v in rec.columns.items():
        np.testing.assert_allclose(back[k], v, rtol=1e-14)
    assert back.metadata["PlasmaAvail"] is True and back.metadata["WholeBloodAvail"] is False


def test_availability_flag_without_its_column_is_refused(tmp_path):
    from petbind.errors import MetadataError

    p = tmp_path / "sub-01_recording-manual_blood.tsv"
    p.write_text("time\twhole_blood_radioactivity\n0\t1\n")
    (tmp_path / "sub-01_recording-manual_blood.json").write_text(json.dumps({
        "PlasmaAvail": True, "time": {"Units": "s"},
        "whole_blood_radioactivity": {"Units": "kBq/mL"}}))
    with pytest.raises(MetadataError) as e:
        read_blood(p)
    assert e.value.field == "PlasmaAvail"
