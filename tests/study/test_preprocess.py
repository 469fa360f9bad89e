"""Preprocessing in the study pipeline: config, per-subject caching, template maps, end to end."""

from __future__ import annotations

import json
import shutil
import tomllib

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from petbind.errors import ConfigError, FileFormatError, MetadataError
from petbind.study.config import DEFAULT_CONFIG, parse_config

from . import prep_dataset as ds
from .conftest import kill_when


def _with_preprocess(**keys) -> dict:
    data = tomllib.loads(DEFAULT_CONFIG)
    data["preprocess"].update(keys)
    return data


# ---------------------------------------------------------------- config
def test_default_config_has_preprocessing_off_with_the_documented_defaults():
    p = parse_config(tomllib.loads(DEFAULT_CONFIG)).preprocess
    assert not p.enabled and p.motion and p.nonlinear and not p.grey_matter
    assert p.reference_window is None and p.min_block_min == 2.0
    assert p.fd_threshold_mm == 0.5 and p.atlas_method == "fraction"
    assert p.template == "" and p.atlas == ""


def test_enabled_without_template_is_an_error_naming_preprocess_template():
    with pytest.raises(ConfigError) as e:
        parse_config(_with_preprocess(enabled=True), source="study.toml")
    assert e.value.field == "preprocess.template"
    assert "study.toml" in str(e.value) and e.value.fix


@pytest.mark.parametrize(("keys", "field"), [
    ({"reference_window": [30.0, 10.0]}, "preprocess.reference_window"),
    ({"reference_window": [10.0]}, "preprocess.reference_window"),
    ({"atlas_method": "linear"}, "preprocess.atlas_method"),
    ({"motion": "yes"}, "preprocess.motion"),
    ({"fd_threshold_mm": -1.0}, "preprocess.fd_threshold_mm"),
    ({"template": 3}, "preprocess.template"),
    ({"smoothing": 2}, "preprocess.smoothing"),
])
def test_bad_preprocess_keys_are_errors_naming_the_key_and_file(keys, field):
    with pytest.raises(ConfigError) as e:
        parse_config(_with_preprocess(**keys), source="study.toml")
    assert e.value.field == field
    assert "study.toml" in str(e.value)


def test_preprocess_section_round_trips_and_maps_to_preprocess_options(tmp_path):
    data = _with_preprocess(enabled=True, template="tpl/t_T1w.nii.gz",
                            reference_window=[5, 40], nonlinear=False, atlas_method="nearest")
    cfg = parse_config(data)
    again = parse_config(tomllib.loads(cfg.to_toml()))
    assert again.to_dict() == cfg.to_dict()
    opts = cfg.preprocess.options()
    assert opts.reference_window == (5.0, 40.0) and not opts.nonlinear
    assert opts.atlas_method == "nearest"
    template, atlas = cfg.preprocess.resolve(tmp_path)
    assert template == tmp_path / "tpl/t_T1w.nii.gz"
    assert atlas == tmp_path / "tpl/t_dseg.nii.gz"


# ---------------------------------------------------------------- template grid and maps
def test_template_grid_at_pet_voxel_size_keeps_centre_and_field_of_view(tmp_path):
    from petbind.study.preprocess import template_grid

    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = [-50.0, -60.0, -40.0]
    p = ds.write_nii(tmp_path / "t.nii.gz", np.zeros((101, 121, 81)), aff)
    shape, new = template_grid(p, 2.0)
    assert shape == (51, 61, 41)
    assert np.allclose(np.diag(new)[:3], 2.0)
    # centre of both grids: voxel (50, 60, 40) at 1 mm, (25, 30, 20) at 2 mm -> world 0
    assert np.allclose(new @ [25, 30, 20, 1], [0, 0, 0, 1])


def test_maps_to_template_follow_the_composed_transforms_exactly_for_a_linear_map(tmp_path):
    """A map linear in world position is resampled exactly by linear interpolation."""
    from petbind.preprocess.register import save_transform
    from petbind.study.preprocess import PreprocessPlan, maps_to_template

    pet_aff = ds.ph.grid_affine((30, 30, 30), 2.0)
    tpl = ds.write_nii(tmp_path / "tpl_T1w.nii.gz", np.zeros((40, 40, 40)),
                       ds.ph.grid_affine((40, 40, 40), 1.0))
    tpl_to_t1 = ds.ph.rigid([2.0, -1.0, 1.5, 4.0, -3.0, 5.0])
    t1_to_pet = ds.ph.rigid([-1.0, 2.0, 0.5, 0.0, 2.0, -2.0])
    xs = save_transform(tmp_path / "sub_xfm.h5", tpl_to_t1)
    xp = save_transform(tmp_path / "pet_xfm.tfm", t1_to_pet)
    coef = np.array([0.03, -0.02, 0.05])
    world = ds.ph.grid_points((30, 30, 30), pet_aff)[:, 0]
    bp = (2.0 + world @ coef).reshape(30, 30, 30)
    valid = np.ones(bp.shape, np.uint8)
    valid[15] = 0  # an invalid plane (PET x = 1 mm) through the middle of the template
    plan = PreprocessPlan(template=tpl, atlas=tpl, atlas_table=tpl, options=None)
    out, mask, aff = maps_to_template(bp, valid, pet_aff, plan, {"xfm_pet_t1w": xp}, xs)
    assert out.shape == (20, 20, 20) and np.allclose(np.diag(aff)[:3], 2.0)
    pts = ds.ph.apply(t1_to_pet, ds.ph.apply(tpl_to_t1, ds.ph.grid_points(out.shape, aff)[:, 0]))
    expected = 2.0 + pts @ coef
    got = out.reshape(-1)
    ok = mask.reshape(-1) > 0
    assert 0.5 < ok.mean() < 1.0
    assert np.all(np.isnan(got[~ok]))
    # away from the invalid plane linear interpolation of a linear map is exact ...
    far = ok & (np.abs(pts[:, 0] - 1.0) >= 2.0)
    assert far.sum() > 1000
    assert np.allclose(got[far], expected[far], atol=1e-4)
    # ... and next to it the value comes from valid neighbours only (within one voxel's
    # change of the map), never pulled towards the 0 that stands in for NaN
    near = ok & ~far
    assert near.sum() > 50
    assert np.all(np.abs(got[near] - expected[near]) <= 2.0 * abs(coef[0]) + 1e-4)


# ---------------------------------------------------------------- plan and per-subject cache
@pytest.fixture(scope="module")
def one_scan_each(tmp_path_factory):
    """Two subjects with a T1w and one raw scan each, the template and its atlas."""
    root = tmp_path_factory.mktemp("anat")
    ds.build(root, aligned=False, conditions=("baseline",), noise=0.0)
    return root


def _plan(root, **keys):
    from petbind.study.preprocess import make_plan

    cfg = parse_config(_with_preprocess(enabled=True, template=ds.TEMPLATE, nonlinear=False,
                                        **keys)).preprocess
    pets = {s: next((root / f"sub-{s}").rglob("*_pet.nii.gz")) for s in ("01", "02")}
    return make_plan(root, cfg, sorted(pets.items()))


def test_subject_registration_is_computed_once_then_reused_and_redone_when_inputs_change(
        one_scan_each, tmp_path):
    from petbind.study.preprocess import prepare_subject, subject_files

    plan = _plan(one_scan_each)
    reg, skipped = prepare_subject(plan, "01", tmp_path)
    assert not skipped and reg.metric is not None
    files = subject_files(tmp_path, "01")
    stamp = {k: p.stat().st_mtime_ns for k, p in files.items()}
    again, skipped = prepare_subject(plan, "01", tmp_path)
    assert skipped and again.metric == pytest.approx(reg.metric)
    assert {k: p.stat().st_mtime_ns for k, p in files.items()} == stamp
    # the cached transform maps points like the computed one
    for p in ((0.0, 0.0, 0.0), (10.0, -5.0, 3.0)):
        assert np.allclose(reg.template_to_t1w.TransformPoint(p),
                           again.template_to_t1w.TransformPoint(p), atol=1e-6)
    # a damaged output is redone
    files["xfm_template_t1w"].write_bytes(b"broken")
    _, skipped = prepare_subject(plan, "01", tmp_path)
    assert not skipped
    # another subject's T1w gives another record, not this one
    _, skipped = prepare_subject(plan, "02", tmp_path)
    assert not skipped


def test_subject_registration_is_redone_when_its_settings_change(one_scan_each, tmp_path):
    from petbind.study.preprocess import PreprocessPlan, prepare_subject

    plan = _plan(one_scan_each)
    prepare_subject(plan, "02", tmp_path)
    opts = plan.options
    opts2 = type(opts)(**{**opts.__dict__, "syn_level_iters": (3,)})
    changed = PreprocessPlan(plan.template, plan.atlas, plan.atlas_table, opts2, plan.t1w)
    # the SyN levels are settings of the subject step: a change redoes it, once
    assert prepare_subject(changed, "02", tmp_path)[1] is False
    assert prepare_subject(changed, "02", tmp_path)[1] is True
    # scan-level settings (motion threshold) do not redo the subject
    opts3 = type(opts)(**{**opts2.__dict__, "fd_threshold_mm": 2.0})
    third = PreprocessPlan(plan.template, plan.atlas, plan.atlas_table, opts3, plan.t1w)
    assert prepare_subject(third, "02", tmp_path)[1] is True


def test_plan_errors_name_the_missing_template_atlas_or_t1w(one_scan_each, tmp_path):
    from petbind.study.preprocess import make_plan

    cfg = parse_config(_with_preprocess(enabled=True, template="nope/tpl_T1w.nii.gz")).preprocess
    pets = [("01", next((one_scan_each / "sub-01").rglob("*_pet.nii.gz")))]
    with pytest.raises(FileFormatError, match=r"nope/tpl_T1w\.nii\.gz") as e:
        make_plan(one_scan_each, cfg, pets)
    assert e.value.field == "preprocess.template"
    lone = tmp_path / "lone_T1w.nii.gz"
    shutil.copy(one_scan_each / ds.TEMPLATE, lone)
    cfg = parse_config(_with_preprocess(enabled=True, template=str(lone))).preprocess
    with pytest.raises(MetadataError, match=r"lone_dseg\.nii\.gz") as e:
        make_plan(one_scan_each, cfg, pets)
    assert e.value.field == "preprocess.atlas"
    bids = tmp_path / "bids"
    shutil.copytree(one_scan_each, bids)
    shutil.rmtree(bids / "sub-02/anat")
    cfg = parse_config(_with_preprocess(enabled=True, template=ds.TEMPLATE)).preprocess
    pets = [("02", next((bids / "sub-02").rglob("*_pet.nii.gz")))]
    with pytest.raises(FileFormatError, match=r"sub-02/anat"):
        make_plan(bids, cfg, pets)


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """The same study raw (native positions, motion, T1w) and pre-aligned, both analysed."""
    from petbind.study.pipeline import run_study

    root = tmp_path_factory.mktemp("chains")
    raw = ds.build(root / "raw", aligned=False)
    aligned = ds.build(root / "aligned", aligned=True)
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    cfg = parse_config(tomllib.loads(ds.STUDY + ds.PREPROCESS), source="raw.toml")
    res = run_study(raw, cfg, progress=False)
    ref = run_study(aligned, parse_config(tomllib.loads(ds.STUDY)), progress=False)
    return {"raw": raw, "cfg": cfg, "res": res, "ref": ref, "before": before}


def _bp(result):
    return result.outcomes.set_index(["subject", "condition", "region"])["bp_nd"]


@pytest.mark.slow
def test_raw_scans_give_the_same_region_bpnd_as_pre_aligned_data(chains):
    rel = _bp(chains["res"]) / _bp(chains["ref"]) - 1.0
    assert rel.size == 16 and rel.notna().all()
    assert np.abs(rel).max() < 0.06, rel
    assert abs(rel.mean()) < 0.04, rel


@pytest.mark.slow
def test_preprocessed_run_writes_qc_template_maps_and_voxel_statistics(chains):
    out = chains["res"].out_dir
    stem = "sub-02_ses-ketamine_trc-PHANTOM"
    prep = out / "preprocess/sub-02/ses-ketamine/pet"
    for name in ("desc-motion_qc.png", "desc-pet2t1w_qc.png", "desc-t1w2template_qc.png",
                 "desc-motion_timeseries.tsv", "desc-mc_pet.nii.gz", "dseg.nii.gz",
                 "from-pet_to-T1w_mode-image_xfm.tfm", "provenance.json"):
        assert (prep / f"{stem}_{name}").is_file(), name
    assert (out / "preprocess/sub-02/anat/sub-02_from-T1w_to-template_mode-image_xfm.h5"
            ).is_file()
    tpl = out / "sub-02/ses-ketamine/pet" / f"{stem}_space-template_model-mrtm2_bpnd.nii.gz"
    img = nib.load(str(tpl))
    assert img.shape == ds.TPL_SHAPE and np.allclose(img.affine, ds.TPL_AFF)
    # the template-space map of the raw chain agrees with the pre-aligned chain's map
    # (whose PET grid is the template's, shifted by one voxel in x and z). Two linear
    # interpolations (frame realignment, then to the template) smooth the map by about
    # half a voxel, which lowers the peak of these 2-4 voxel wide structures by ~10 %.
    bp = np.asarray(img.dataobj)[1:35, :, 1:31]
    ref_map = (chains["ref"].out_dir / "sub-02/ses-ketamine/pet"
               / f"{stem}_model-mrtm2_bpnd.nii.gz")
    ref = np.asarray(nib.load(str(ref_map)).dataobj)
    truth = ds.ph.labels_at(ds.ph.grid_points(ds.PET_SHAPE, ds.PET_AFF)[:, 0]
                            ).reshape(ds.PET_SHAPE)
    for names in (["putamen_L", "putamen_R"], ["caudate_L", "caudate_R"], ["thalamus"]):
        inside = np.isin(truth, [ds.ph.INDEX[n] for n in names])
        a, b = np.nanmedian(bp[inside]), np.nanmedian(ref[inside])
        assert a == pytest.approx(b, rel=0.15), names
    cer = truth == ds.ph.INDEX["cerebellum"]
    assert abs(np.nanmedian(bp[cer])) < 0.1
    vox = out / "group/voxel/trc-PHANTOM_model-mrtm2_contrast-ketamineVsBaseline_mask.nii.gz"
    assert nib.load(str(vox)).shape == ds.TPL_SHAPE
    prov = json.loads((out / "sub-02/ses-ketamine/pet" / f"{stem}_provenance.json").read_text())
    assert prov["preprocess"]["flagged_frames"]
    assert any("framewise-displacement" in w for w in chains["res"].warnings)
    after = {p: p.read_bytes() for p in chains["raw"].rglob("*")
             if p.is_file() and "derivatives/petbind/" not in p.as_posix()}
    assert after == chains["before"]


@pytest.mark.slow
def test_rerun_skips_everything_and_a_damaged_preprocessing_output_redoes_only_its_scan(
        chains, monkeypatch):
    import petbind.compute as compute
    from petbind.study.pipeline import run_study

    sent: list[str] = []
    real_run = compute.Engine.run

    def run(self, tasks, *a, **k):  # record what is sent to the engine
        sent.extend(t.key for t in tasks)
        return real_run(self, tasks, *a, **k)

    monkeypatch.setattr(compute.Engine, "run", run)
    out = chains["res"].out_dir
    again = run_study(chains["raw"], chains["cfg"], progress=False)
    prov = json.loads((out / "group/provenance.json").read_text())
    assert len(prov["skipped_scans"]) == 4
    # found current before anything was sent: no registration, no scan task
    assert not [k for k in sent if k.startswith(("petbind-subject-", "petbind-scan-"))]
    assert again.outcomes.equals(chains["res"].outcomes)
    mc = (out / "preprocess/sub-01/ses-baseline/pet"
          / "sub-01_ses-baseline_trc-PHANTOM_desc-mc_pet.nii.gz")
    mc.unlink()
    third = run_study(chains["raw"], chains["cfg"], progress=False)
    # exactly that scan's task (its subject's transforms are current)
    assert [k for k in sent if k.startswith(("petbind-subject-", "petbind-scan-"))] == [
        "petbind-scan-sub-01_ses-baseline_trc-PHANTOM"]
    prov = json.loads((out / "group/provenance.json").read_text())
    assert sorted(prov["skipped_scans"]) == sorted(
        f"sub-{s}_ses-{c}_trc-PHANTOM" for s, c in
        (("01", "ketamine"), ("02", "baseline"), ("02", "ketamine")))
    assert mc.is_file()
    np.testing.assert_array_equal(third.outcomes["bp_nd"], chains["res"].outcomes["bp_nd"])


@pytest.mark.slow
def test_sigkilled_preprocessing_run_resumes_without_redoing_finished_work(chains, tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "study.toml"
    cfg.write_text(ds.STUDY + ds.PREPROCESS)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "petbind", "run", str(chains["raw"]), "--config", str(cfg),
           "--out", str(out), "--no-progress"]
    # kill once the first scan's preprocessing has finished, before its fits
    done, env = kill_when(cmd, out, "preprocess/sub-*/ses-*/pet/*_provenance.json", 300)
    assert not (out / "group").exists()
    first = done[0]
    stamp = first.stat().st_mtime_ns
    # every file under its final name is whole (temporary files are dot-named .part files)
    for p in out.rglob("*"):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.name.endswith(".nii.gz"):
            np.asarray(nib.load(str(p)).dataobj)
        elif p.suffix == ".json":
            json.loads(p.read_text())
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert first.stat().st_mtime_ns == stamp  # finished preprocessing was not redone
    a = pd.read_csv(out / "group/outcomes.tsv", sep="\t")
    b = pd.read_csv(chains["res"].out_dir / "group/outcomes.tsv", sep="\t")
    assert list(a.columns) == list(b.columns)
    # preprocessing is reproducible (SimpleITK runs single-threaded): the same numbers
    np.testing.assert_array_equal(a["bp_nd"], b["bp_nd"])
