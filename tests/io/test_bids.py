"""Tests for petbind.io.bids: load_pet (timing, units, decay) and save_image."""

from __future__ import annotations

import gzip
import json
import math
import time

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petbind.errors import DecayError, FileFormatError, IsotopeError, PetbindError
from petbind.io.bids import REQUIRED_FIELDS, check_pet_sidecar, load_pet, save_image


@pytest.mark.parametrize("decay", ["injection", "scanstart", "none"])
def test_load_pet_returns_true_activity_decay_corrected_to_injection(tmp_path, fx, decay):
    ds = fx.make_bids_dataset(tmp_path, decay=decay)
    img = load_pet(ds["pet"])
    assert img.units == "kBq/mL"
    got = img.get_data()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ds["true"], rtol=2e-6, atol=1e-5)


def test_load_pet_timing_is_minutes_after_injection(tmp_path, fx):
    ds = fx.make_bids_dataset(tmp_path, injection_start_s=45.0)
    img = load_pet(ds["pet"])
    expect_start_min = np.array(ds["starts_s"]) / 60.0
    np.testing.assert_allclose(img.timing.start, expect_start_min, atol=1e-12)
    np.testing.assert_allclose(img.timing.duration, np.array(ds["durations_s"]) / 60.0)
    assert img.timing.start[0] == 0.0


def test_load_pet_converts_bq_per_ml_to_kbq_per_ml(tmp_path, fx):
    ds = fx.make_bids_dataset(tmp_path, units="Bq/mL")
    img = load_pet(ds["pet"])
    np.testing.assert_allclose(img.get_data(), ds["true"], rtol=2e-6, atol=1e-5)


@pytest.mark.parametrize(("unit", "kbq_per_unit"), [
    ("Bq/mL", 1e-3), ("kBq/mL", 1.0), ("MBq/mL", 1e3), ("nCi/mL", 0.037),
    ("uCi/mL", 37.0), ("mCi/mL", 37000.0), ("Bq/cc", 1e-3), ("kBq/cc", 1.0),
])
def test_load_pet_scales_every_known_unit_to_kbq_per_ml(tmp_path, fx, unit, kbq_per_unit):
    n = len(fx.FRAME_DURATIONS_S)
    starts = fx.frame_starts(fx.FRAME_DURATIONS_S)
    data = np.full(fx.SHAPE + (n,), 3.0)
    side = fx.pet_sidecar(starts, fx.FRAME_DURATIONS_S, Units=unit)
    p = fx.write_pet(tmp_path / "sub-01_pet.nii.gz", data, side)
    # 1 Ci = 3.7e10 Bq exactly: 3 nCi/mL = 111 Bq/mL = 0.111 kBq/mL
    np.testing.assert_allclose(load_pet(p).frame(0), 3.0 * kbq_per_unit, rtol=1e-6)


def test_load_pet_applies_nifti_scale_slope(tmp_path, fx):
    n = len(fx.FRAME_DURATIONS_S)
    starts = fx.frame_starts(fx.FRAME_DURATIONS_S)
    side = fx.pet_sidecar(starts, fx.FRAME_DURATIONS_S, Units="Bq/mL")
    p = fx.write_pet(tmp_path / "sub-01_pet.nii", np.full(fx.SHAPE + (n,), 250),
                     side, dtype=np.int16, slope=4.0)
    np.testing.assert_allclose(load_pet(p).frame(3), 1.0)  # 250 * 4 Bq/mL


def test_load_pet_moves_decay_reference_from_scan_start_by_exp_lambda_t(tmp_path, fx):
    # Data corrected to 120 s after injection hold A exp(-lam 120 s).
    ds = fx.make_bids_dataset(tmp_path, decay="scanstart")
    img = load_pet(ds["pet"])
    lam = math.log(2) / fx.HALF_LIFE_S["11C"]
    np.testing.assert_allclose(img.frame_scale, math.exp(lam * 120.0), rtol=1e-12)


def test_load_pet_is_lazy_and_keeps_the_file_proxy(tmp_path, fx):
    ds = fx.make_bids_dataset(tmp_path)
    img = load_pet(ds["pet"])
    assert not isinstance(img.dataobj, np.ndarray)
    assert img.shape == fx.SHAPE + (len(fx.FRAME_DURATIONS_S),)


def test_load_pet_reads_single_frame_3d_image_as_one_frame(tmp_path, fx):
    side = fx.pet_sidecar([0.0], [600.0])
    p = fx.write_pet(tmp_path / "sub-01_pet.nii.gz", np.full(fx.SHAPE, 2.0), side)
    img = load_pet(p)
    assert img.shape == fx.SHAPE + (1,)
    np.testing.assert_allclose(img.frame(0), 2.0)


def test_sidecar_check_of_complete_fixture_has_no_problem(fx):
    side = fx.pet_sidecar(fx.frame_starts(fx.FRAME_DURATIONS_S), fx.FRAME_DURATIONS_S)
    assert check_pet_sidecar(side, "x.json", len(fx.FRAME_DURATIONS_S)) == []


def test_sidecar_check_warns_about_missing_bids_fields_petbind_does_not_need(fx):
    side = fx.pet_sidecar(fx.frame_starts(fx.FRAME_DURATIONS_S), fx.FRAME_DURATIONS_S,
                          Manufacturer=None, ReconFilterType=None)
    probs = check_pet_sidecar(side, "x.json", len(fx.FRAME_DURATIONS_S))
    assert {(q.severity, q.field) for q in probs} == {("warning", "Manufacturer"),
                                                      ("warning", "ReconFilterType")}


def test_sidecar_check_warns_when_frame_times_look_like_minutes(fx):
    side = fx.pet_sidecar([0, 0.5, 1.0], [0.5, 0.5, 1.0])
    probs = check_pet_sidecar(side, "x.json", 3)
    assert any(q.field == "FrameDuration" and "minutes" in q.message for q in probs)


def test_sidecar_check_warns_when_decay_factors_disagree_with_isotope(fx):
    durs = [60.0] * 3
    starts = fx.frame_starts(durs)
    lam = math.log(2) / fx.HALF_LIFE_S["18F"]  # factors of F-18, sidecar says C-11
    f18 = [lam * d * math.exp(lam * s) / (1 - math.exp(-lam * d))
           for s, d in zip(starts, durs, strict=True)]
    side = fx.pet_sidecar(starts, durs, DecayCorrectionFactor=f18)
    probs = check_pet_sidecar(side, "x.json", 3)
    assert [q.field for q in probs] == ["DecayCorrectionFactor"]


def test_sidecar_check_accepts_decay_factors_of_the_stated_isotope(fx):
    durs = [60.0] * 3
    starts = fx.frame_starts(durs)
    lam = math.log(2) / fx.HALF_LIFE_S["11C"]
    c11 = [lam * d * math.exp(lam * s) / (1 - math.exp(-lam * d))
           for s, d in zip(starts, durs, strict=True)]
    side = fx.pet_sidecar(starts, durs, DecayCorrectionFactor=c11)
    assert check_pet_sidecar(side, "x.json", 3) == []


def test_uncorrected_image_without_radionuclide_is_refused(tmp_path, fx, untouched):
    starts = fx.frame_starts(fx.FRAME_DURATIONS_S)
    side = fx.pet_sidecar(starts, fx.FRAME_DURATIONS_S, ImageDecayCorrected=False,
                          TracerRadionuclide=None)
    p = fx.write_pet(tmp_path / "sub-01_pet.nii.gz",
                     np.ones(fx.SHAPE + (len(starts),)), side)
    with untouched(tmp_path), pytest.raises(IsotopeError) as e:
        load_pet(p)
    assert e.value.field == "TracerRadionuclide"


def test_corrected_to_injection_without_radionuclide_loads_with_warning(tmp_path, fx):
    starts = fx.frame_starts(fx.FRAME_DURATIONS_S)
    side = fx.pet_sidecar(starts, fx.FRAME_DURATIONS_S, TracerRadionuclide=None)
    p = fx.write_pet(tmp_path / "sub-01_pet.nii.gz",
                     np.ones(fx.SHAPE + (len(starts),)), side)
    img = load_pet(p)
    assert img.metadata["isotope"] is None
    assert any("TracerRadionuclide" in w for w in img.metadata["warnings"])


def test_save_image_round_trips_data_affine_and_sidecar(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(4, 3, 2, 5)).astype(np.float32)
    affine = np.array([[1.5, 0, 0, -3], [0, 2, 0, 4], [0, 0, 2.5, 1], [0, 0, 0, 1]])
    side = {"Units": "kBq/mL", "FrameDuration": np.array([60.0] * 5), "Model": "MRTM2"}
    p = save_image(tmp_path / "out" / "map.nii.gz", data, affine, side)
    img = nib.load(str(p))
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    np.testing.assert_allclose(img.affine, affine)
    assert json.loads((tmp_path / "out" / "map.json").read_text()) == {
        "Units": "kBq/mL", "FrameDuration": [60.0] * 5, "Model": "MRTM2"}


def test_save_image_stores_float64_as_float32_and_keeps_integer_labels(tmp_path):
    save_image(tmp_path / "a.nii.gz", np.ones((2, 2, 2)), np.eye(4), None)
    save_image(tmp_path / "b.nii.gz", np.arange(8, dtype=np.int16).reshape(2, 2, 2),
               np.eye(4), None)
    assert nib.load(str(tmp_path / "a.nii.gz")).get_data_dtype() == np.float32
    assert nib.load(str(tmp_path / "b.nii.gz")).get_data_dtype() == np.int16
    assert not (tmp_path / "a.json").exists()


def test_save_then_load_pet_round_trips_through_petbind_only(tmp_path, fx):
    n = len(fx.FRAME_DURATIONS_S)
    true = fx.true_image(n)
    side = fx.pet_sidecar(fx.frame_starts(fx.FRAME_DURATIONS_S), fx.FRAME_DURATIONS_S)
    p = save_image(tmp_path / "sub-01_pet.nii.gz", true, fx.AFFINE, side)
    img = load_pet(p)
    np.testing.assert_allclose(img.get_data(), true, rtol=1e-6)
    np.testing.assert_allclose(img.affine, fx.AFFINE)


def test_save_image_that_fails_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):  # a sidecar value JSON cannot hold
        save_image(tmp_path / "x.nii.gz", np.ones((2, 2, 2)), np.eye(4), {"a": object()})
    assert list(tmp_path.iterdir()) == []


def test_save_image_refuses_a_non_nifti_name(tmp_path):
    with pytest.raises(FileFormatError):
        save_image(tmp_path / "x.img", np.ones((2, 2, 2)), np.eye(4))
    assert list(tmp_path.iterdir()) == []


def test_contradictory_decay_flags_are_refused(tmp_path, fx, untouched):
    starts = fx.frame_starts(fx.FRAME_DURATIONS_S)
    side = fx.pet_sidecar(starts, fx.FRAME_DURATIONS_S, ImageDecayCorrected=True,
                          DecayCorrectionFactor=[1.0] * len(starts))
    p = fx.write_pet(tmp_path / "sub-01_pet.nii.gz", np.ones(fx.SHAPE + (len(starts),)), side)
    with untouched(tmp_path), pytest.raises(DecayError) as e:
        load_pet(p)
    assert e.value.field == "ImageDecayCorrected"
    assert "contradict" in str(e.value)


def test_frames_before_time_zero_load_relative_to_injection(tmp_path, fx):
    # TimeZero one minute after the injection: frames and injection are negative
    durs = fx.FRAME_DURATIONS_S
    starts = [s - 60.0 for s in fx.frame_starts(durs)]
    side = fx.pet_sidecar(starts, durs, InjectionStart=-60.0, ScanStart=-60.0,
                          ImageDecayCorrectionTime=-60.0)
    p = fx.write_pet(tmp_path / "sub-01_pet.nii.gz", np.ones(fx.SHAPE + (len(durs),)), side)
    assert check_pet_sidecar(side, "x.json", len(durs)) == []
    img = load_pet(p)
    np.testing.assert_allclose(img.timing.start_s, fx.frame_starts(durs), atol=1e-9)
    np.testing.assert_allclose(img.frame_scale, 1.0)


def test_save_image_writes_identical_bytes_for_identical_inputs(tmp_path):
    data = np.random.default_rng(4).normal(size=(5, 4, 3, 2)).astype(np.float32)
    a = save_image(tmp_path / "a" / "m.nii.gz", data, fx_affine(), {"x": 1})
    time.sleep(1.1)  # gzip would otherwise stamp a different second
    b = save_image(tmp_path / "b" / "m.nii.gz", data, fx_affine(), {"x": 1})
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / "m.json").read_bytes() == (b.parent / "m.json").read_bytes()
    assert gzip.decompress(a.read_bytes())[:4] == (348).to_bytes(4, "little")


def fx_affine():
    return np.diag([2.0, 2.0, 2.0, 1.0])


def test_missing_field_names_the_probable_misspelling(fx):
    side = fx.pet_sidecar(fx.frame_starts(fx.FRAME_DURATIONS_S), fx.FRAME_DURATIONS_S,
                          Units=None, InjectedRadioactivityUnits=None)
    side["Unit"] = "Bq/mL"
    side["injectedradioactivityunits"] = "MBq"
    probs = {q.field: q for q in check_pet_sidecar(side, "x.json", len(fx.FRAME_DURATIONS_S))}
    assert "the sidecar has 'Unit'" in probs["Units"].message
    assert probs["Units"].severity == "error"
    assert "'injectedradioactivityunits'" in probs["InjectedRadioactivityUnits"].message


def test_sidecar_fields_are_inherited_from_the_dataset_root(tmp_path, fx):
    from petbind.io.validate import validate_path

    ds = fx.make_bids_dataset(tmp_path, units="Bq/mL")
    own = ds["pet"].with_name("sub-01_ses-baseline_trc-DASB_pet.json")
    side = json.loads(own.read_text())
    common = {k: side.pop(k) for k in ("Units", "TracerRadionuclide", "Manufacturer")}
    own.write_text(json.dumps(side))
    (tmp_path / "trc-DASB_pet.json").write_text(json.dumps(common))
    # a root file for another tracer must not apply
    (tmp_path / "trc-AZ10419369_pet.json").write_text(json.dumps({"Units": "MBq/mL"}))
    img = load_pet(ds["pet"])
    np.testing.assert_allclose(img.get_data(), ds["true"], rtol=2e-6, atol=1e-5)
    assert img.metadata["Manufacturer"] == "Siemens"
    assert validate_path(tmp_path) == []


def test_deeper_sidecar_overrides_inherited_fields(tmp_path, fx):
    ds = fx.make_bids_dataset(tmp_path, units="kBq/mL")
    (tmp_path / "pet.json").write_text(json.dumps({"Units": "MBq/mL", "BodyPart": "Brain"}))
    img = load_pet(ds["pet"])  # the scan's own sidecar says kBq/mL
    np.testing.assert_allclose(img.get_data(), ds["true"], rtol=2e-6, atol=1e-5)
    assert img.metadata["BodyPart"] == "Brain"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=12), max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted({*REQUIRED_FIELDS, "DecayCorrectionFactor", "InjectionEnd"})),
       value=_json_values)
def test_property_any_field_value_gives_a_petbind_error_or_an_image(pet_file, field, value):
    path, side = pet_file
    bad = {**side, field: value}
    problems = check_pet_sidecar(bad, "x.json", 5)
    try:
        img = load_pet(path, sidecar=bad)
    except PetbindError as exc:
        assert any(q.severity == "error" for q in problems)
        assert exc.fix
    else:
        assert not any(q.severity == "error" for q in problems)
        assert np.all(np.isfinite(img.frame_scale)) and np.all(img.frame_scale > 0)


@pytest.fixture(scope="module")
def pet_file(tmp_path_factory, fx):
    d = tmp_path_factory.mktemp("prop")
    starts = [0.0, 60.0, 120.0, 180.0, 240.0]
    side = fx.pet_sidecar(starts, [60.0] * 5)
    return fx.write_pet(d / "sub-01_pet.nii.gz", np.ones(fx.SHAPE + (5,)), side), side


def test_symlinked_image_reads_the_sidecar_beside_the_link_not_the_target(tmp_path, fx):
    """DataLad / git-annex: the image is a link into an annex folder holding a decoy sidecar."""
    from petbind.io.bids import inherited_sidecars
    from petbind.io.validate import validate_path

    bids = tmp_path / "bids"
    ds = fx.make_bids_dataset(bids, units="kBq/mL")
    pet = ds["pet"]
    annex = tmp_path / "annex" / "objects"
    annex.mkdir(parents=True)
    target = annex / pet.name
    pet.rename(target)
    pet.symlink_to(target)
    # a decoy with the same name beside the target: another unit and no radionuclide
    (annex / pet.name.replace(".nii.gz", ".json")).write_text(
        json.dumps({"Units": "MBq/mL", "BodyPart": "decoy"}))
    (annex / "pet.json").write_text(json.dumps({"BodyPart": "decoy"}))
    files = inherited_sidecars(pet)
    assert files and all(f.parent == pet.parent or bids in f.parents for f in files)
    img = load_pet(pet)
    np.testing.assert_allclose(img.get_data(), ds["true"], rtol=2e-6, atol=1e-5)
    assert img.metadata.get("BodyPart") != "decoy"
    assert validate_path(bids) == []


def test_a_link_to_annexed_content_not_fetched_says_to_get_it(tmp_path):
    link = tmp_path / "sub-01_pet.nii.gz"
    link.symlink_to(tmp_path / ".git" / "annex" / "objects" / "absent.nii.gz")
    (tmp_path / "sub-01_pet.json").write_text("{}")  # sidecars live in git, not the annex
    with pytest.raises(FileFormatError) as e:
        load_pet(link)
    assert "datalad get" in e.value.fix
