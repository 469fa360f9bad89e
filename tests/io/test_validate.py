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
    probs = validate_path(tmp_path)
    assert [(q.severity, q.message) for q in probs] == [
        ("error", "no PET images (*_pet.nii[.gz]) found"), ("warning", "README is missing")]


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileFormatError):
        validate_path(tmp_path / "nope")


def test_problem_turns_into_its_error_class():
    from petbind.errors import TimingError

    err = Problem("error", "a.json", "FrameDuration", "bad", "fix it", TimingError).to_error()
    assert isinstance(err, TimingError)
    assert str(err) == "a.json, field 'FrameDuration': bad (fix: fix it)"


@pytest.mark.slow
def test_simulated_datasets_validate_clean_and_load_pet_undoes_their_decay(tmp_path):
    """Contract with petbind.simulate: its datasets pass validate; decayed = corrected."""
    from petbind.io.bids import load_pet
    from petbind.simulate import default_config_text, load_config, simulate_study

    text = (default_config_text().replace("voxel_mm = 1.0", "voxel_mm = 2.0", 1)
            .replace("voxel_mm = 2.0                    #", "voxel_mm = 4.0  #")
            .replace("noise = 0.10 ", "noise = 0.0 "))
    images = {}
    for decay in ("true", "false"):
        cfg_p = tmp_path / f"{decay}.toml"
        cfg_p.write_text(text.replace("decay_corrected = true", f"decay_corrected = {decay}"))
        cfg = load_config(cfg_p, subjects=1, tracers=["DASB"], conditions=["baseline"])
        root = simulate_study(cfg, tmp_path / decay)
        assert [q for q in validate_path(root) if q.severity == "error"] == []
        (pet,) = sorted(root.rglob("*_pet.nii.gz"))
        images[decay] = load_pet(pet).get_data()
    scale = np.abs(images["true"]).max()
    np.testing.assert_allclose(images["false"], images["true"], rtol=1e-4, atol=1e-6 * scale)


def test_participants_table_must_list_subject_folders(tmp_path, fx):
    fx.make_bids_dataset(tmp_path)
    (tmp_path / "participants.tsv").write_text("participant_id\nsub-02\n")
    probs = validate_path(tmp_path, check_data=False)
    assert [(q.severity, q.field) for q in probs] == [("warning", "participant_id")]
    assert "sub-01" in probs[0].message
    (tmp_path / "participants.tsv").write_text("subject\nsub-01\n")
    (q,) = validate_path(tmp_path, check_data=False)
    assert (q.severity, q.field) == ("error", "participant_id")


def test_blood_times_use_the_inherited_injection_start(tmp_path, fx):
    from petbind.io.blood import read_blood

    ds = fx.make_bids_dataset(tmp_path, injection_start_s=45.0)
    own = ds["pet"].with_name("sub-01_ses-baseline_trc-DASB_pet.json")
    side = json.loads(own.read_text())
    (tmp_path / "pet.json").write_text(json.dumps({"InjectionStart": side.pop("InjectionStart")}))
    own.write_text(json.dumps(side))
    rec = read_blood(ds["blood"])
    np.testing.assert_allclose(rec.time[0], 10.0 / 60)
