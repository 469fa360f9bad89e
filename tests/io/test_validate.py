"""Tests for petbind.io.validate: problems of a whole dataset, each with file and field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from petbind.errors import FileFormatError
from petbind.io.validate import Problem, validate_path


def test_hand_made_dataset_is_clean(tmp_path, fx, untouched):
    fx.make_bids_dataset(tmp_path)
    with untouched(tmp_path):
        assert validate_path(tmp_path) == []


def test_every_problem_names_its_file_and_field(tmp_path, fx):
    ds = fx.make_bids_dataset(tmp_path)
    side_p = ds["pet"].parent / "sub-01_ses-baseline_trc-DASB_pet.json"
    side = json.loads(side_p.read_text())
    side["FrameDuration"] = side["FrameDuration"][:-1]
    side["FrameTimesStart"] = side["FrameTimesStart"][:-1]
    side["Units"] = "counts"
    del side["Manufacturer"]
    side_p.write_text(json.dumps(side))
    ds["tacs"].write_text(ds["tacs"].read_text().replace("7.5", "seven"))
    (tmp_path / "dataset_description.json").write_text('{"Name": "x"}')
    probs = validate_path(tmp_path)
    got = {(q.severity, q.file.split("/")[-1], q.field) for q in probs}
    assert ("error", "sub-01_ses-baseline_trc-DASB_pet.json", "FrameDuration") in got
    assert ("error", "sub-01_ses-baseline_trc-DASB_pet.json", "Units") in got
    assert ("warning", "sub-01_ses-baseline_trc-DASB_pet.json", "Manufacturer") in got
    assert ("error", "sub-01_ses-baseline_trc-DASB_desc-fixture_tacs.tsv", "row") in got
    assert ("error", "dataset_description.json", "BIDSVersion") in got
    assert all(q.message and q.fix for q in probs)
    assert [q.severity for q in probs] == sorted(q.severity for q in probs)  # errors first


def test_nan_voxels_are_found_by_reading_the_data(tmp_path, fx):
    ds = fx.make_bids_dataset(tmp_path)
    import nibabel as nib

    img = nib.load(str(ds["pet"]))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0, 2] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(ds["pet"]))
    probs = validate_path(ds["pet"])
    assert [(q.field, q.error.__name__) for q in probs] == [("data", "DataError")]
    assert validate_path(ds["pet"], check_data=False) == []


def test_single_broken_json_file_is_reported(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{oops")
    (q,) = validate_path(p)
    assert q.severity == "error" and q.error is FileFormatError and "line 1" in q.message


def test_folder_without_pet_images_is_an_error(tmp_path):
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.11"}')
    (q,) = validate_path(tmp_path)
    assert "no PET images" in q.message


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileFormatError):
        validate_path(tmp_path / "nope")


def test_problem_turns_into_its_error_class():
    from petbind.errors import TimingError

    err = Problem("error", "a.json", "FrameDuration", "bad", "fix it", TimingError).to_error()
    assert isinstance(err, TimingError)
    assert str(err) == "a.json, field 'FrameDuration': bad (fix: fix it)"
