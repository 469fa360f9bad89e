"""The written study: layout, truth, images equal to the truth, noise, reproducibility."""

from __future__ import annotations

import copy
import json
import math
import os
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from petbind.simulate.config import default_config_text, parse_config
from petbind.simulate.phantom import REGIONS
from petbind.simulate.study import scan_parameters, simulate_study

DEFAULT = tomllib.loads(default_config_text())
LAMBDA_C11 = math.log(2) / 20.364  # 1/min, NuDat 3 half-life typed in here

BIDS_PET_REQUIRED = (
    "Manufacturer", "ManufacturersModelName", "Units", "TracerName", "TracerRadionuclide",
    "InjectedRadioactivity", "InjectedRadioactivityUnits", "InjectedMass",
    "InjectedMassUnits", "SpecificRadioactivity", "SpecificRadioactivityUnits",
    "ModeOfAdministration", "TimeZero", "ScanStart", "InjectionStart", "FrameTimesStart",
    "FrameDuration", "AcquisitionMode", "ImageDecayCorrected", "ImageDecayCorrectionTime",
    "ReconMethodName", "ReconMethodParameterLabels", "ReconMethodParameterUnits",
    "ReconMethodParameterValues", "ReconFilterType", "ReconFilterSize",
    "AttenuationCorrection",
)


def small(tracers=("DASB",), conditions=("baseline",), subjects=1, noise=0.0, fwhm=0.0,
          **sections):
    """A one-scan design on a 2 mm phantom that is the PET grid itself."""
    d = copy.deepcopy(DEFAULT)
    d.update(subjects=subjects, tracers=list(tracers), conditions=list(conditions))
    d["phantom"]["voxel_mm"] = 2.0
    d["scanner"].update(voxel_mm=2.0, fwhm_mm=fwhm, noise=noise)
    for name, values in sections.items():
        d.setdefault(name, {}).update(values)
    return parse_config(d)


def pet_path(root: Path, s="01", c="baseline", t="DASB") -> Path:
    return root / f"sub-{s}" / f"ses-{c}" / "pet" / f"sub-{s}_ses-{c}_trc-{t}_pet.nii.gz"


def deriv(root: Path, suffix: str, s="01", c="baseline", t="DASB") -> Path:
    return (root / "derivatives" / "petbind-sim" / f"sub-{s}" / f"ses-{c}" / "pet"
            / f"sub-{s}_ses-{c}_trc-{t}_{suffix}")


def region_means(img: np.ndarray, dseg: np.ndarray, table: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for region, rows in table.groupby("region"):
        mask = np.isin(dseg, rows["index"].to_numpy())
        out[region] = img[mask].astype(np.float64).mean(axis=0)
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The noise-free, unblurred one-scan DASB dataset (shared: tests only read it)."""
    return simulate_study(small(), tmp_path_factory.mktemp("clean") / "ds")


def test_layout_matches_the_contract(clean):
    root = clean
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    stem = "sub-01_ses-baseline_trc-DASB"
    d = f"derivatives/petbind-sim/sub-01/ses-baseline/pet/{stem}"
    for f in ["dataset_description.json", "participants.tsv", "README",
              "sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_T1w.json",
              f"sub-01/ses-baseline/pet/{stem}_pet.nii.gz",
              f"sub-01/ses-baseline/pet/{stem}_pet.json",
              "derivatives/petbind-sim/dataset_description.json",
              "derivatives/petbind-sim/truth.tsv", f"{d}_dseg.nii.gz", f"{d}_dseg.tsv",
              f"{d}_desc-true_bpnd.nii.gz", f"{d}_desc-true_r1.nii.gz",
              f"{d}_desc-true_tacs.tsv"]:
        assert f in files, f
    assert not any(".part" in f for f in files)
    # files are readable as an ordinary open() would make them (not mkstemp's 0600)
    umask = os.umask(0o022)
    os.umask(umask)
    for f in ("participants.tsv", f"sub-01/ses-baseline/pet/{stem}_pet.nii.gz"):
        assert (root / f).stat().st_mode & 0o777 == 0o666 & ~umask, f
    truth = pd.read_csv(root / "derivatives/petbind-sim/truth.tsv", sep="\t", dtype=str)
    assert list(truth.columns) == ["subject", "condition", "tracer", "region", "bp_nd", "r1",
                                   "k2prime"]
    assert list(truth["region"]) == list(REGIONS)
    assert set(truth["subject"]) == {"01"}
    dseg = pd.read_csv(f"{root}/{d}_dseg.tsv", sep="\t")
    assert list(dseg.columns) == ["index", "name", "region"]
    assert set(dseg["region"]) == set(REGIONS)
    side = json.loads(pet_path(root).with_suffix("").with_suffix(".json").read_text())
    missing = [k for k in BIDS_PET_REQUIRED if k not in side]
    assert not missing
    assert side["TracerRadionuclide"] == "C11"
    assert side["Units"] == "kBq/mL"
    assert len(side["FrameTimesStart"]) == 29
    assert side["FrameTimesStart"][:3] == [0.0, 10.0, 20.0]
    assert side["FrameDuration"][-1] == 600.0


def test_noise_free_unblurred_region_means_equal_the_truth_curves(tmp_path):
    root = simulate_study(small(tracers=("AZ10419369",)), tmp_path / "ds")
    t = "AZ10419369"
    img = np.asarray(nib.load(pet_path(root, t=t)).dataobj)
    dseg = np.asarray(nib.load(deriv(root, "dseg.nii.gz", t=t)).dataobj)
    table = pd.read_csv(deriv(root, "dseg.tsv", t=t), sep="\t")
    truth = pd.read_csv(deriv(root, "desc-true_tacs.tsv", t=t), sep="\t")
    got = region_means(img, dseg, table)
    for region in REGIONS:
        np.testing.assert_allclose(got[region], truth[region], rtol=2e-6, err_msg=region)
    assert truth["frame_end"].iloc[-1] == 5400.0


def test_truth_table_applies_drug_effects_to_the_configured_bp(tmp_path):
    cfg = small(tracers=("AZ10419369",), conditions=("baseline", "ketamine"),
                variability={"between_subject_cv": 0, "scan_cv_cortex": 0,
                             "scan_cv_subcortex": 0, "k1prime_cv": 0})
    root = simulate_study(cfg, tmp_path / "ds")
    truth = pd.read_csv(root / "derivatives/petbind-sim/truth.tsv", sep="\t",
                        dtype={"subject": str}).set_index(["condition", "region"])
    # primer: baseline NAcc 1.2, VP 1.8, thalamus 0.55; ketamine +20 % NAcc/VP, +5 % else
    for region, base, pct in [("NAcc", 1.2, 20), ("VP", 1.8, 20), ("thalamus", 0.55, 5),
                              ("cerebellum", 0.0, 5)]:
        assert truth.loc[("baseline", region), "bp_nd"] == pytest.approx(base, rel=1e-9)
        assert truth.loc[("ketamine", region), "bp_nd"] == pytest.approx(
            base * (1 + pct / 100), rel=1e-9)
    assert truth.loc[("ketamine", "VP"), "r1"] == 0.95
    assert (truth["k2prime"] == 0.1).all()
    bp_map = np.asarray(nib.load(deriv(root, "desc-true_bpnd.nii.gz", c="ketamine",
                                       t="AZ10419369")).dataobj)
    dseg = np.asarray(nib.load(deriv(root, "dseg.nii.gz", c="ketamine",
                                     t="AZ10419369")).dataobj)
    assert np.allclose(bp_map[np.isin(dseg, [1, 2])], 1.2 * 1.2, rtol=1e-6)
    assert np.all(bp_map[dseg == 0] == 0)


def test_between_subject_spread_has_the_configured_cv():
    d = copy.deepcopy(DEFAULT)
    d.update(subjects=400, conditions=["baseline"], tracers=["DASB"])
    d["variability"].update(between_subject_cv=0.09, scan_cv_subcortex=0.0)
    cfg = parse_config(d)
    bp = np.array([scan_parameters(cfg, s, 0, 0)[0][0] for s in range(400)])  # NAcc
    assert bp.mean() == pytest.approx(1.5, rel=0.02)
    # SE of a CV estimate from n = 400 is about cv / sqrt(2 n) = 0.0032
    assert bp.std(ddof=1) / bp.mean() == pytest.approx(0.09, abs=0.013)


def test_same_seed_gives_same_bytes_and_another_seed_other_noise(tmp_path):
    cfg_kw = dict(noise=0.1, fwhm=2.8)
    a = simulate_study(small(**cfg_kw), tmp_path / "a")
    b = simulate_study(small(**cfg_kw), tmp_path / "b")
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for f in files_a:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = simulate_study(_with_seed(small(**cfg_kw), 99), tmp_path / "c")
    assert pet_path(a).read_bytes() != pet_path(c).read_bytes()
    assert (deriv(a, "dseg.nii.gz").read_bytes() == deriv(c, "dseg.nii.gz").read_bytes())


def _with_seed(cfg, seed):
    raw = copy.deepcopy(cfg.raw)
    raw["seed"] = seed
    return parse_config(raw)


def test_noise_variance_per_frame_scales_with_activity_decay_and_duration(tmp_path, clean):
    level = 0.2
    noisy = simulate_study(small(noise=level), tmp_path / "noisy")
    x0 = np.asarray(nib.load(pet_path(clean)).dataobj, dtype=float)
    x1 = np.asarray(nib.load(pet_path(noisy)).dataobj, dtype=float)
    dseg = np.asarray(nib.load(deriv(clean, "dseg.nii.gz")).dataobj)
    table = pd.read_csv(deriv(clean, "dseg.tsv"), sep="\t")
    side = json.loads(pet_path(clean).with_suffix("").with_suffix(".json").read_text())
    start = np.array(side["FrameTimesStart"]) / 60.0
    dur = np.array(side["FrameDuration"]) / 60.0
    mid = start + dur / 2
    c_peak = x0.max()
    for region in ("white_matter", "other_cortex"):
        labels = table.loc[table["region"] == region, "index"].to_numpy()
        mask = np.isin(dseg, labels)
        n = int(mask.sum())
        assert n > 1500
        c = x0[mask].mean(axis=0)
        want = level**2 * c_peak * c * np.exp(LAMBDA_C11 * mid) / dur
        got = (x1[mask] - x0[mask]).var(axis=0, ddof=1)
        # relative SE of a variance from n voxels: sqrt(2 / n); allow 4.5 SE
        tol = 4.5 * np.sqrt(2.0 / n)
        np.testing.assert_array_less(np.abs(got / want - 1.0), tol)
        assert abs((x1[mask] - x0[mask]).mean()) < 0.05 * np.sqrt(want.mean())


def test_images_without_decay_correction_carry_the_decay_and_say_so(tmp_path, clean):
    corr = clean
    unc = simulate_study(small(scanner={"decay_corrected": False}), tmp_path / "u")
    side = json.loads(pet_path(unc).with_suffix("").with_suffix(".json").read_text())
    assert side["ImageDecayCorrected"] is False
    x0 = np.asarray(nib.load(pet_path(corr)).dataobj, dtype=float)
    x1 = np.asarray(nib.load(pet_path(unc)).dataobj, dtype=float)
    a = np.array(side["FrameTimesStart"]) / 60.0
    d = np.array(side["FrameDuration"]) / 60.0
    # mean of exp(-lam t) over each frame (exact)
    decay = (np.exp(-LAMBDA_C11 * a) - np.exp(-LAMBDA_C11 * (a + d))) / (LAMBDA_C11 * d)
    brain = x0[..., -1] > 0.5
    np.testing.assert_allclose(x1[brain], x0[brain] * decay, rtol=2e-6)
    # the foundation reader, told by the sidecar, undoes it
    from petbind.io.bids import load_pet

    back = load_pet(pet_path(unc)).get_data().astype(float)
    np.testing.assert_allclose(back[brain], x0[brain], rtol=1e-5)


def test_motion_moves_later_frames_and_writes_the_true_parameters(tmp_path, clean):
    still = clean
    moved = simulate_study(small(motion={"enabled": True, "max_translation_mm": 3.0}),
                           tmp_path / "m")
    motion = pd.read_csv(deriv(moved, "desc-true_motion.tsv"), sep="\t")
    assert list(motion.columns) == ["frame_start", "trans_x_mm", "trans_y_mm", "trans_z_mm",
                                    "rot_x_deg", "rot_y_deg", "rot_z_deg"]
    assert len(motion) == 29
    side = json.loads(deriv(moved, "desc-true_motion.json").read_text())
    assert side["rot_z_deg"]["Units"] == "degrees"
    assert len(side["RotationCentre"]) == 3
    x0 = np.asarray(nib.load(pet_path(still)).dataobj)
    x1 = np.asarray(nib.load(pet_path(moved)).dataobj)
    early = (motion["frame_start"] < 120).to_numpy()
    assert np.all(motion.loc[early].iloc[:, 1:].to_numpy() == 0)
    assert np.array_equal(x0[..., early], x1[..., early])
    assert np.abs(motion.iloc[-1, 1:]).max() > 0
    assert not np.allclose(x0[..., -1], x1[..., -1])


def test_dataset_reads_back_with_load_pet_and_validates(tmp_path):
    from petbind.io.bids import load_pet
    from petbind.io.validate import validate_dataset

    root = simulate_study(small(noise=0.1, fwhm=2.8), tmp_path / "ds")
    problems = validate_dataset(root)
    assert [p for p in problems if p.severity == "error"] == []
    img = load_pet(pet_path(root))
    raw = np.asarray(nib.load(pet_path(root)).dataobj)
    assert img.timing.n_frames == 29
    assert img.timing.end[-1] == pytest.approx(90.0)
    np.testing.assert_allclose(img.frame(5), raw[..., 5], rtol=1e-6)
    np.testing.assert_allclose(img.affine, nib.load(pet_path(root)).affine)


@pytest.mark.parametrize("tracer", ["AZ10419369", "DASB"])
def test_srtm_fit_recovers_true_bp_within_its_known_bias(tmp_path, tracer):
    """Noise-free, unblurred 2TCM data with blood volume: SRTM is biased a little.

    Targets are 2TCM (k4 0.12-0.15/min) with 4 % blood volume, which SRTM's
    one-tissue assumption ignores; such data give SRTM BP_ND errors of a few
    per cent (Lammertsma & Hume 1996; Slifstein & Laruelle 2000). Grey-matter
    targets must be within 8 %; white matter (R1 0.55, BP ~0.1) is left out.
    """
    from petbind.io.bids import load_pet
    from petbind.models import get_model

    root = simulate_study(small(tracers=(tracer,)), tmp_path / "ds")
    img = load_pet(pet_path(root, t=tracer))
    dseg = np.asarray(nib.load(deriv(root, "dseg.nii.gz", t=tracer)).dataobj)
    table = pd.read_csv(deriv(root, "dseg.tsv", t=tracer), sep="\t")
    tacs = img.region_means(dseg, dict(zip(table["index"], table["region"], strict=True)))
    truth = pd.read_csv(root / "derivatives/petbind-sim/truth.tsv", sep="\t")
    truth = truth.set_index("region")["bp_nd"]
    targets = ["NAcc", "VP", "caudate", "putamen", "thalamus", "midbrain", "frontal_cortex",
               "occipital_cortex", "other_cortex"]
    model = get_model("srtm", timing=img.timing, ref=tacs.curve("cerebellum"))
    fit = model.fit(np.stack([tacs.curve(r) for r in targets]))
    got = np.asarray(fit.bp_nd)
    want = truth.loc[targets].to_numpy()
    np.testing.assert_array_less(np.abs(got / want - 1.0), 0.08)


def _many(n, **variability):
    d = copy.deepcopy(DEFAULT)
    d.update(subjects=n, conditions=["baseline", "ketamine"], tracers=["AZ10419369"])
    d["variability"].update(variability)
    return parse_config(d)


def test_scan_to_scan_spread_has_the_configured_cv_per_region_class():
    cfg = _many(400, between_subject_cv=0.0, scan_cv_cortex=0.08, scan_cv_subcortex=0.12)
    bp = np.array([scan_parameters(cfg, s, 0, 0)[0] for s in range(400)])
    targets = [REGIONS.index(r) for r in ("frontal_cortex", "NAcc")]
    cv = bp[:, targets].std(axis=0, ddof=1) / bp[:, targets].mean(axis=0)
    # SE of a CV from n = 400 is about cv / sqrt(2 n) (< 0.0045 here)
    assert cv[0] == pytest.approx(0.08, abs=0.015)
    assert cv[1] == pytest.approx(0.12, abs=0.02)


def test_subject_effects_are_shared_across_conditions_so_the_design_is_paired():
    cfg = _many(6, between_subject_cv=0.09, scan_cv_cortex=0.0, scan_cv_subcortex=0.0)
    nacc = REGIONS.index("NAcc")
    base = np.array([scan_parameters(cfg, s, 0, 0)[0][nacc] for s in range(6)])
    keta = np.array([scan_parameters(cfg, s, 0, 1)[0][nacc] for s in range(6)])
    np.testing.assert_allclose(keta / base, 1.2, rtol=1e-12)  # primer: +20 % in NAcc
    assert base.std() > 0.02


def test_refuses_a_non_empty_folder_that_is_not_a_simulation(tmp_path):
    from petbind.errors import ConfigError

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as e:
        simulate_study(small(), other)
    assert e.value.field == "out_dir"
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    # an earlier simulation may be rewritten in place
    again = simulate_study(small(), tmp_path / "sim")
    simulate_study(small(), again)


# ---------------------------------------------------------------- native position
# Issue 9: each subject at a known rigid offset from the template, with a T1w.

TPL = Path("derivatives/petbind-sim/template/tpl-petbindphantom")
LARGE = ("thalamus", "caudate", "cerebellum", "white_matter")  # compact, many PET voxels


def native_design(native=True, subjects=2, conditions=("baseline", "ketamine"), **anatomy):
    """DASB, 1 mm phantom on the default 2 mm PET grid with blur, noise-free, no motion."""
    d = copy.deepcopy(DEFAULT)
    d.update(subjects=subjects, tracers=["DASB"], conditions=list(conditions))
    d["scanner"]["noise"] = 0.0
    d["anatomy"].update(native_position=native, **anatomy)
    return parse_config(d)


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    return simulate_study(native_design(), tmp_path_factory.mktemp("native") / "ds")


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """The first scan of ``native`` simulated in template position."""
    return simulate_study(native_design(False, 1, ("baseline",)),
                          tmp_path_factory.mktemp("twin") / "ds")


def xfm(root: Path, s="01") -> dict:
    path = root / f"derivatives/petbind-sim/sub-{s}/anat/sub-{s}_desc-true_xfm.json"
    return json.loads(path.read_text())


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine


def centre_of_mass(labels: np.ndarray, affine: np.ndarray, ids) -> np.ndarray:
    ijk = np.argwhere(np.isin(labels, ids)).mean(axis=0)
    return (affine @ np.append(ijk, 1.0))[:3]


def test_native_layout_has_true_atlas_transform_and_template_but_no_plain_dseg(native):
    files = {str(p.relative_to(native)) for p in native.rglob("*") if p.is_file()}
    for s in ("01", "02"):
        assert f"sub-{s}/anat/sub-{s}_T1w.nii.gz" in files
        assert f"derivatives/petbind-sim/sub-{s}/anat/sub-{s}_desc-true_xfm.json" in files
        for c in ("baseline", "ketamine"):
            for suffix in ("desc-true_dseg.nii.gz", "desc-true_dseg.tsv",
                           "desc-true_bpnd.nii.gz", "desc-noisefree_tacs.tsv"):
                assert str(deriv(native, suffix, s=s, c=c).relative_to(native)) in files
    assert not [f for f in files if f.endswith("_dseg.nii.gz") and "desc-true" not in f
                and "/template/" not in f]
    for f in ("T1w.nii.gz", "dseg.nii.gz", "dseg.tsv"):
        assert f"{TPL}_{f}" in files
    tpl_dseg = nib.load(native / f"{TPL}_dseg.nii.gz")
    assert tpl_dseg.get_data_dtype() == np.int16
    table = pd.read_csv(native / f"{TPL}_dseg.tsv", sep="\t")
    assert list(table.columns) == ["index", "name", "region"]
    assert set(np.unique(np.asarray(tpl_dseg.dataobj))) == {0, *table["index"]}
    side = json.loads(deriv(native, "desc-true_bpnd.json").read_text())
    assert side["Sources"] == ["sub-01_ses-baseline_trc-DASB_desc-true_dseg.nii.gz"]


def test_native_matrix_is_the_documented_rigid_motion_of_its_parameters(native):
    t1w = nib.load(native / "sub-01/anat/sub-01_T1w.nii.gz")
    poses = []
    for s in ("01", "02"):
        x = xfm(native, s)
        tx, ty, tz, ax, ay, az = x["Parameters"]
        assert max(abs(tx), abs(ty), abs(tz)) <= 5.0
        assert max(abs(ax), abs(ay), abs(az)) <= 8.0
        # x -> R (x - c) + c + t with R = Rz Ry Rx, right-handed about RAS axes (built here)
        a, b, g = np.deg2rad([ax, ay, az])
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        rz = np.array([[np.cos(g), -np.sin(g), 0], [np.sin(g), np.cos(g), 0], [0, 0, 1]])
        r = rz @ ry @ rx
        c = np.array(x["RotationCentre"])
        want = np.eye(4)
        want[:3, :3] = r
        want[:3, 3] = c - r @ c + [tx, ty, tz]
        np.testing.assert_allclose(x["Matrix"], want, atol=1e-12)
        # the centre of rotation is the centre of the field of view
        mid = t1w.affine @ np.append((np.array(t1w.shape) - 1) / 2.0, 1.0)
        np.testing.assert_allclose(c, mid[:3], atol=1e-9)
        poses.append(x["Parameters"])
    assert poses[0] != poses[1]


def test_native_atlas_regions_sit_at_matrix_times_their_template_centres(native):
    tpl, tpl_aff = load(native / f"{TPL}_dseg.nii.gz")
    table = pd.read_csv(native / f"{TPL}_dseg.tsv", sep="\t")
    for s in ("01", "02"):
        m = np.array(xfm(native, s)["Matrix"])
        dseg, aff = load(deriv(native, "desc-true_dseg.nii.gz", s=s))
        for region in LARGE:
            ids = table.loc[table["region"] == region, "index"].to_numpy()
            before = centre_of_mass(tpl, tpl_aff, ids)
            after = centre_of_mass(dseg, aff, ids)
            assert np.linalg.norm((m @ np.append(before, 1.0))[:3] - after) < 0.5, (s, region)
            assert np.linalg.norm(before - after) > 1.0  # the pose did move it


def test_native_t1w_resampled_back_through_the_matrix_is_the_template_t1w(native):
    from scipy import ndimage

    tpl, tpl_aff = load(native / f"{TPL}_T1w.nii.gz")
    brain = load(native / f"{TPL}_dseg.nii.gz")[0] > 0
    nat, nat_aff = load(native / "sub-01/anat/sub-01_T1w.nii.gz")
    m = np.array(xfm(native)["Matrix"])
    world = tpl_aff[:3, :3] @ np.indices(tpl.shape).reshape(3, -1) + tpl_aff[:3, 3:4]

    def corr(to_native):  # sample the native T1w at to_native @ (template voxel centres)
        w = to_native[:3, :3] @ world + to_native[:3, 3:4]
        inv = np.linalg.inv(nat_aff)
        v = ndimage.map_coordinates(nat.astype(float), inv[:3, :3] @ w + inv[:3, 3:4],
                                    order=1).reshape(tpl.shape)
        return np.corrcoef(v[brain], tpl[brain].astype(float))[0, 1]

    assert corr(m) > 0.99
    assert corr(np.eye(4)) < 0.9
    assert corr(np.linalg.inv(m)) < 0.9


def test_native_pet_is_the_template_pet_moved_by_the_matrix(native, twin):
    m = np.array(xfm(native)["Matrix"])
    a, a_aff = load(pet_path(twin))
    b, b_aff = load(pet_path(native))
    for frame in (3, 28):
        wa, wb = a[..., frame].astype(float), b[..., frame].astype(float)
        ca = a_aff[:3, :3] @ (np.argwhere(np.ones(wa.shape, bool)).T @ wa.ravel()) / wa.sum()
        ca += a_aff[:3, 3]
        cb = b_aff[:3, :3] @ (np.argwhere(np.ones(wb.shape, bool)).T @ wb.ravel()) / wb.sum()
        cb += b_aff[:3, 3]
        np.testing.assert_allclose(cb, (m @ np.append(ca, 1.0))[:3], atol=0.05)
        # nothing left the field of view: total activity (kBq/mL x mL) is kept
        vol_a, vol_b = abs(np.linalg.det(a_aff[:3, :3])), abs(np.linalg.det(b_aff[:3, :3]))
        assert wb.sum() * vol_b == pytest.approx(wa.sum() * vol_a, rel=2e-3)
    # every scan of a subject shows the same native position; subjects differ
    same = deriv(native, "desc-true_dseg.nii.gz", c="ketamine").read_bytes()
    assert deriv(native, "desc-true_dseg.nii.gz").read_bytes() == same
    assert deriv(native, "desc-true_dseg.nii.gz", s="02").read_bytes() != same


@pytest.mark.parametrize("which", ["native", "twin"])
def test_noisefree_tacs_are_region_means_of_the_noise_free_image_over_the_true_atlas(
        which, request):
    root = request.getfixturevalue(which)
    dseg_name = "desc-true_dseg" if which == "native" else "dseg"
    for c in (("baseline", "ketamine") if which == "native" else ("baseline",)):
        img = load(pet_path(root, c=c))[0]
        dseg = load(deriv(root, f"{dseg_name}.nii.gz", c=c))[0]
        table = pd.read_csv(deriv(root, f"{dseg_name}.tsv", c=c), sep="\t")
        got = pd.read_csv(deriv(root, "desc-noisefree_tacs.tsv", c=c), sep="\t")
        want = region_means(img, dseg, table)
        for region in REGIONS:
            np.testing.assert_allclose(got[region], want[region], rtol=1e-5, err_msg=region)
        true = pd.read_csv(deriv(root, "desc-true_tacs.tsv", c=c), sep="\t")
        # blurred: small regions lose activity to their surroundings (partial volume)
        assert got["VP"].iloc[-1] < 0.9 * true["VP"].iloc[-1]


def test_native_true_maps_follow_the_native_atlas(native):
    truth = pd.read_csv(native / "derivatives/petbind-sim/truth.tsv", sep="\t",
                        dtype={"subject": str})
    want = truth.query("subject == '02' and condition == 'ketamine'").set_index("region")
    bp = load(deriv(native, "desc-true_bpnd.nii.gz", s="02", c="ketamine"))[0]
    dseg = load(deriv(native, "desc-true_dseg.nii.gz", s="02", c="ketamine"))[0]
    table = pd.read_csv(deriv(native, "desc-true_dseg.tsv", s="02", c="ketamine"), sep="\t")
    nacc = table.loc[table["region"] == "NAcc", "index"].to_numpy()
    np.testing.assert_allclose(bp[np.isin(dseg, nacc)], want.loc["NAcc", "bp_nd"], rtol=1e-6)
    assert np.all(bp[dseg == 0] == 0)


def test_subject_pose_is_reproducible_and_independent_of_the_rest_of_the_design():
    from petbind.simulate.study import subject_transform

    centre = np.array([0.0, -2.0, 0.0])
    small_design = native_design()
    d = copy.deepcopy(DEFAULT)
    d.update(subjects=6)
    d["anatomy"]["native_position"] = True
    big_design = parse_config(d)
    for i in range(2):
        p_small, m_small = subject_transform(small_design, i, centre)
        p_big, m_big = subject_transform(big_design, i, centre)
        np.testing.assert_array_equal(p_small, p_big)
        np.testing.assert_array_equal(m_small, m_big)
    other = subject_transform(_with_seed(small_design, 1), 0, centre)[0]
    assert not np.allclose(other, subject_transform(small_design, 0, centre)[0])


def test_native_padding_keeps_the_brain_in_view_at_the_extreme_poses():
    from petbind.simulate.phantom import make_phantom
    from petbind.simulate.scanner import move_rigid, rigid_matrix
    from petbind.simulate.study import fov_centre, native_padding, pad_phantom

    cfg = native_design()
    ph = make_phantom(1.0, 7)
    pad = native_padding(cfg, ph)
    assert pad % cfg.pet_factor == 0 and pad > 0
    big = pad_phantom(ph, pad)
    centre = fov_centre(big.labels.shape, big.affine)
    np.testing.assert_allclose(centre, fov_centre(ph.labels.shape, ph.affine))
    n_brain = np.count_nonzero(ph.labels)
    psf = int(np.ceil(3.5 * cfg.fwhm_mm / 2.3548))
    for signs in ([1, 1, 1], [-1, -1, -1], [1, -1, 1], [-1, 1, -1]):
        params = np.array(signs * 2) * ([5.0] * 3 + [8.0] * 3)
        moved = move_rigid(big.labels, big.affine, rigid_matrix(params, centre), order=0)
        assert np.count_nonzero(moved) == pytest.approx(n_brain, rel=5e-3)
        rim = np.ones(moved.shape, bool)
        rim[psf:-psf, psf:-psf, psf:-psf] = False
        assert not moved[rim].any(), signs


def test_switching_position_modes_in_one_folder_leaves_no_stale_truth(tmp_path):
    out = tmp_path / "ds"
    nat = small(anatomy={"native_position": True})
    simulate_study(nat, out)
    assert deriv(out, "desc-true_dseg.nii.gz").exists()
    simulate_study(small(), out)
    names = {p.name for p in out.rglob("*")}
    assert not [n for n in names if "desc-true_dseg" in n or "desc-true_xfm" in n]
    assert deriv(out, "dseg.nii.gz").exists()
    simulate_study(nat, out)
    assert not deriv(out, "dseg.nii.gz").exists()
    assert not deriv(out, "dseg.tsv").exists()


def test_written_design_omits_an_anatomy_table_at_its_defaults_and_keeps_any_other(native,
                                                                                  clean):
    def written(root):
        return tomllib.loads((root / "derivatives/petbind-sim/simulate_config.toml")
                             .read_text(encoding="utf-8"))

    assert "anatomy" not in written(clean)  # as before the table existed: same bytes
    assert written(native)["anatomy"] == {"native_position": True, "max_offset_mm": 5.0,
                                          "max_rotation_deg": 8.0}
    assert parse_config(written(native)).native_position is True


def test_noisefree_tacs_of_a_region_without_atlas_voxels_are_nan():
    from petbind.simulate.study import Geometry, noisefree_tacs

    # two PET voxels, two labels: label 1 (region 0) fills voxel 0, label 2 (region 1)
    # has weight in voxel 1 but no atlas voxel
    weights = np.array([[0.75, 0.25], [0.5, 0.0]], dtype=np.float32)
    geo = Geometry(phantom=None, shape=(2, 1, 1), affine=np.eye(4), weights=weights,
                   dseg=np.array([[[1]], [[0]]], dtype=np.int16),
                   label_region=np.array([0, 1]))
    tacs = np.zeros((len(REGIONS), 3))
    tacs[0] = [1.0, 2.0, 4.0]
    tacs[1] = [10.0, 10.0, 10.0]
    got = noisefree_tacs(geo, tacs)
    np.testing.assert_allclose(got[0], 0.75 * tacs[0] + 0.25 * tacs[1])
    assert np.isnan(got[1:]).all()


# ---------------------------------------------------------------- subjects as tasks
# Issue 18: the demo simulates its subjects as tasks of its local cluster.

def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("scheduler", ["threads:2", pytest.param("local:2",
                                                                  marks=pytest.mark.slow)])
def test_subjects_as_parallel_tasks_write_the_same_bytes_as_the_serial_simulation(
        tmp_path, scheduler):
    # native position (one anatomy per subject) with motion and noise: every random stream
    # (2 mm phantom = PET grid, to keep it fast)
    cfg = small(subjects=2, noise=0.05, fwhm=2.8, anatomy={"native_position": True},
                motion={"enabled": True})
    seen: list[tuple[int, int, str]] = []
    serial = _tree_bytes(simulate_study(cfg, tmp_path / "serial"))
    parallel = _tree_bytes(simulate_study(cfg, tmp_path / "parallel", scheduler=scheduler,
                                          progress=lambda *a: seen.append(a)))
    assert len(serial) > 2 * 10 and serial.keys() == parallel.keys()
    assert [k for k in serial if serial[k] != parallel[k]] == []
    # progress still counts every scan once, up to the total
    assert [n for n, _, _ in seen] == [1, 2] and {t for _, t, _ in seen} == {2}
    # and a template-position study (one shared geometry) likewise
    flat = small(subjects=2, conditions=("baseline", "ketamine"), noise=0.05)
    assert (_tree_bytes(simulate_study(flat, tmp_path / "flat1"))
            == _tree_bytes(simulate_study(flat, tmp_path / "flat2", scheduler=scheduler)))
