"""The [pvc] section in the study pipeline (src/petbind/study/pvc.py): desc-pvc outputs,
statistics, reruns, resume."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from petbind.errors import ConfigError
from petbind.study.config import load_config, parse_config
from petbind.study.pipeline import run_study


def _study_helpers():
    """The pipeline tests' small-study helpers (tests/study/conftest.py), loaded by path."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "_petbind_study_conftest", Path(__file__).parents[1] / "study" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_h = _study_helpers()
STUDY_TOML, kill_when, small_sim_config, tree_digest = (
    _h.STUDY_TOML, _h.kill_when, _h.small_sim_config, _h.tree_digest)

PVC_TOML = STUDY_TOML + """
[pvc]
method = "gtm"
atlas = "derivatives/petbind-sim/template/tpl-petbindphantom_dseg.nii.gz"
"""


@pytest.fixture(scope="module")
def pvc_study(tmp_path_factory):
    """Noise-free, 2.8 mm PSF, 4 mm voxels; PSF from the sidecar, 1 mm template atlas."""
    from petbind.simulate.study import simulate_study

    root = tmp_path_factory.mktemp("pvc")
    bids = root / "bids"
    simulate_study(small_sim_config(0.0, 2.8, subjects=2), bids)
    cfg = root / "study.toml"
    cfg.write_text(PVC_TOML)
    result = run_study(bids, load_config(cfg), progress=False)
    return {"bids": bids, "config": cfg, "out": result.out_dir, "result": result}


def _bp(path, region):
    f = pd.read_csv(path, sep="\t")
    return float(f[(f["region"] == region) & (f["model"] == "srtm")]["bp_nd"].iloc[0])


def test_desc_pvc_outputs_beside_the_uncorrected_ones(pvc_study):
    out = pvc_study["out"]
    scan = sorted(out.glob("sub-*/ses-*/pet"))[0]
    stem = next(scan.glob("*_provenance.json")).name.removesuffix("_provenance.json")
    for name in ("tacs.tsv", "fits.tsv", "desc-pvc_tacs.tsv", "desc-pvc_tacs.json",
                 "desc-pvc_fits.tsv", "desc-pvcfitted_tacs.tsv"):
        assert (scan / f"{stem}_{name}").exists(), name
    side = json.loads((scan / f"{stem}_desc-pvc_tacs.json").read_text())
    info = side["PartialVolumeCorrection"]
    assert info["Method"] == "gtm" and info["PSF"]["FWHMmm"] == [2.8] * 3
    assert "ReconFilterSize" in info["PSF"]["Source"] and info["AtlasVoxelsPerPETVoxelEdge"] == 4
    assert 0 < info["RecoveryCoefficient"]["NAcc"] < info["RecoveryCoefficient"]["cerebellum"]
    group = out / "group"
    assert (group / "desc-pvc_outcomes.tsv").exists() and (group / "roi_stats.tsv").exists()
    roi = pd.read_csv(group / "desc-pvc_roi_stats.tsv", sep="\t")
    assert set(roi["region"]) >= {"NAcc", "VP"}
    summary = json.loads((group / "summary.json").read_text())
    assert summary["pvc"]["method"] == "gtm" and summary["pvc"]["highlights"]
    assert summary["pvc"]["psf"][0]["FWHMmm"] == [2.8] * 3


def test_corrected_bpnd_matches_srtm_on_the_true_tissue_curves(pvc_study):
    """Corrected BP_ND within 2 % of SRTM on the simulator's unblurred curves, NAcc/VP included.

    (SRTM itself is biased by a few % on the simulator's 2TCM curves, docs/simulate.md;
    comparing with SRTM on the true curves isolates what partial volume and its
    correction do.)
    """
    from petbind.io.tables import read_tacs
    from petbind.models import make_model

    out, bids = pvc_study["out"], pvc_study["bids"]
    raw = pd.read_csv(out / "group" / "outcomes.tsv", sep="\t", dtype={"subject": str})
    pvc = pd.read_csv(out / "group" / "desc-pvc_outcomes.tsv", sep="\t",
                      dtype={"subject": str})
    regions = ["NAcc", "VP", "caudate", "putamen", "thalamus", "midbrain"]
    n = 0
    for path in sorted(bids.glob("derivatives/petbind-sim/sub-*/ses-*/pet/*_desc-true_tacs.tsv")):
        true = read_tacs(path)
        fit = make_model("srtm", true.timing, true.curve("cerebellum")).fit(
            np.stack([true.curve(r) for r in regions]))
        subject = path.name.split("_")[0].removeprefix("sub-")
        condition = path.name.split("_")[1].removeprefix("ses-")
        for d, tol in ((pvc, 0.02), (raw, None)):
            sel = d[(d["subject"] == subject) & (d["condition"] == condition)
                    & (d["model"] == "srtm")].set_index("region")["bp_nd"]
            for r, want in zip(regions, np.asarray(fit.params["bp_nd"]), strict=True):
                if tol is not None:
                    assert sel[r] == pytest.approx(want, rel=tol), (path.name, r)
                    n += 1
                elif r in sel:  # 4 mm voxels, 2.8 mm PSF: every region loses over 3 %
                    assert sel[r] < 0.97 * want, (path.name, r)
    assert n == 4 * len(regions)
    # at 4 mm NAcc and VP hold no majority voxel: only the 1 mm atlas's GTM measures them
    assert "NAcc" not in set(raw["region"]) and "NAcc" in set(pvc["region"])


def test_rerun_skips_and_a_changed_method_recomputes(pvc_study, tmp_path):
    out = pvc_study["out"]
    before = tree_digest(out, skip=("group/provenance.json",))
    run_study(pvc_study["bids"], load_config(pvc_study["config"]), progress=False)
    prov = json.loads((out / "group" / "provenance.json").read_text())
    assert len(prov["skipped_scans"]) == 4
    assert tree_digest(out, skip=("group/provenance.json",)) == before
    cfg = tmp_path / "sgtm.toml"
    cfg.write_text(PVC_TOML.replace('method = "gtm"', 'method = "sgtm"'))
    other = tmp_path / "out"
    import shutil

    shutil.copytree(out, other)
    run_study(pvc_study["bids"], load_config(cfg), out_dir=other, progress=False)
    prov = json.loads((other / "group" / "provenance.json").read_text())
    assert prov["skipped_scans"] == []


@pytest.mark.slow
def test_sigkilled_run_with_pvc_resumes_to_identical_outputs(pvc_study, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "petbind", "run", str(pvc_study["bids"]),
           "--config", str(pvc_study["config"]), "--out", str(out), "--no-progress",
           "--no-report"]  # the report shows run times; the fixture's run wrote none
    _, env = kill_when(cmd, out, "sub-*/ses-*/pet/*_desc-pvc_fits.tsv", 120)
    assert not (out / "group" / "summary.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    skip = ("group/provenance.json",)
    got = tree_digest(out, skip)
    # a kill inside an atomic write leaves the writer's hidden temporary file
    # (".NAME.<random>.part.<ext>"); the rerun does not remove it (not ours to clean)
    temp = {k for k in got if k.rsplit("/", 1)[-1].startswith(".") and ".part" in k}
    assert {k: v for k, v in got.items() if k not in temp} == tree_digest(pvc_study["out"], skip)


def test_a_moved_study_with_a_pvc_atlas_is_current(pvc_study, tmp_path):
    """The dataset and its outputs moved elsewhere (``cp -rp``): nothing is refitted; an
    atlas file with other bytes at the same place still refits every scan."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(pvc_study["bids"], moved)
    out = moved / "derivatives" / "petbind"
    assert out.is_dir()
    skip = ("group/", "dataset_description.json")
    before = tree_digest(out, skip=skip)
    run_study(moved, load_config(pvc_study["config"]), progress=False)
    prov = json.loads((out / "group" / "provenance.json").read_text())
    assert len(prov["skipped_scans"]) == 4
    assert tree_digest(out, skip=skip) == before
    atlas = moved / "derivatives/petbind-sim/template/tpl-petbindphantom_dseg.nii.gz"
    import nibabel as nib

    img = nib.load(atlas)
    img.header["descrip"] = b"edited"  # other bytes, the same labels
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), atlas)
    run_study(moved, load_config(pvc_study["config"]), progress=False)
    prov = json.loads((out / "group" / "provenance.json").read_text())
    assert prov["skipped_scans"] == []


def test_pvc_section_is_validated():
    base = parse_config(__import__("tomllib").loads(STUDY_TOML))
    assert base.pvc.method == "none" and not base.pvc.enabled
    import tomllib

    ok = parse_config(tomllib.loads(STUDY_TOML + '[pvc]\nmethod = "rbv"\nfwhm_mm = [2, 2, 3]\n'))
    assert ok.pvc.fwhm_mm == (2.0, 2.0, 3.0)
    assert parse_config(tomllib.loads(ok.to_toml())).pvc == ok.pvc
    for bad, field in (('method = "pvc"', "pvc.method"), ("fwhm_mm = [1, 2]", "pvc.fwhm_mm"),
                       ("fwhm = 2", "pvc.fwhm"), ("iterations = 0", "pvc.iterations")):
        with pytest.raises(ConfigError) as e:
            parse_config(tomllib.loads(STUDY_TOML + f"[pvc]\n{bad}\n"), source="s.toml")
        assert e.value.field == field


def test_voxel_method_writes_the_corrected_image_and_its_maps(pvc_study, tmp_path):
    from petbind.io.bids import load_pet

    cfg = tmp_path / "rbv.toml"
    cfg.write_text(PVC_TOML.replace('method = "gtm"', 'method = "rbv"'))
    out = tmp_path / "out"
    run_study(pvc_study["bids"], load_config(cfg), out_dir=out, progress=False)
    scan = out / "sub-01" / "ses-baseline" / "pet"
    stem = "sub-01_ses-baseline_trc-DASB"
    img = load_pet(scan / f"{stem}_desc-pvc_pet.nii.gz")
    raw = load_pet(next(pvc_study["bids"].glob(f"sub-01/ses-baseline/pet/{stem}_pet.nii.gz")))
    assert img.shape == raw.shape
    for suffix in ("_desc-pvc_model-mrtm2_bpnd.nii.gz", "_desc-pvc_model-mrtm2_mask.nii.gz",
                   "_desc-pvc_fits.tsv", "_model-mrtm2_bpnd.nii.gz"):
        assert (scan / f"{stem}{suffix}").is_file(), suffix
    # the corrected map is higher than the uncorrected one where binding is high
    import nibabel as nib

    bp = np.asarray(nib.load(scan / f"{stem}_model-mrtm2_bpnd.nii.gz").dataobj)
    bpc = np.asarray(nib.load(scan / f"{stem}_desc-pvc_model-mrtm2_bpnd.nii.gz").dataobj)
    ok = np.isfinite(bp) & np.isfinite(bpc) & (bp > np.nanpercentile(bp, 90))
    assert np.median(bpc[ok] / bp[ok]) > 1.05
    roi = pd.read_csv(out / "group" / "desc-pvc_roi_stats.tsv", sep="\t")
    assert not roi.empty


def test_with_preprocessing_each_scans_atlas_replaces_a_template_space_pvc_atlas(tmp_path):
    import tomllib

    from petbind.study.pvc import resolve_config

    tpl = "derivatives/petbind-sim/template/tpl-petbindphantom_T1w.nii.gz"
    text = PVC_TOML + f'[preprocess]\nenabled = true\ntemplate = "{tpl}"\n'
    cfg = parse_config(tomllib.loads(text))
    assert cfg.pvc.atlas.endswith("_dseg.nii.gz")
    assert resolve_config(cfg, tmp_path).pvc.atlas == ""
    plain = parse_config(tomllib.loads(PVC_TOML))
    assert resolve_config(plain, tmp_path).pvc.atlas == str(
        (tmp_path / plain.pvc.atlas).resolve())


def test_each_scans_own_atlas_when_no_pvc_atlas_is_given(pvc_study, tmp_path):
    """The path preprocessing takes: GTM on the PET-grid atlas (4 mm voxels here)."""
    cfg = tmp_path / "own.toml"
    cfg.write_text(STUDY_TOML + '[pvc]\nmethod = "gtm"\nfwhm_mm = 2.8\n')
    out = tmp_path / "out"
    run_study(pvc_study["bids"], load_config(cfg), out_dir=out, progress=False)
    tsv = out / "sub-01" / "ses-baseline" / "pet" / "sub-01_ses-baseline_trc-DASB_desc-pvc_tacs.tsv"
    info = json.loads(tsv.with_suffix(".json").read_text())["PartialVolumeCorrection"]
    assert info["AtlasVoxelsPerPETVoxelEdge"] == 1 and info["Atlas"].endswith("_dseg.nii.gz")
    raw = pd.read_csv(out / "group" / "outcomes.tsv", sep="\t")
    pvc = pd.read_csv(out / "group" / "desc-pvc_outcomes.tsv", sep="\t")
    assert set(pvc["region"]) == set(raw["region"])  # the same labels, corrected
    pick = (raw["model"] == "srtm") & (raw["region"] == "putamen")
    assert (pvc.loc[pick.to_numpy(), "bp_nd"].to_numpy() > raw.loc[pick, "bp_nd"].to_numpy()).all()


@pytest.mark.slow
def test_pvc_after_preprocessing_uses_each_scans_preprocessed_atlas(tmp_path):
    """Raw scans (native positions, motion): GTM on preprocessing's PET-space atlas."""
    import importlib.util
    import tomllib
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "_petbind_prep_dataset", Path(__file__).parents[1] / "study" / "prep_dataset.py")
    ds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ds)
    raw = ds.build(tmp_path / "raw", aligned=False, subjects=("01",))
    text = ds.STUDY + ds.PREPROCESS + (
        '\n[pvc]\nmethod = "gtm"\nfwhm_mm = 3.0\n'
        'atlas = "derivatives/template/tpl-phantom_dseg.nii.gz"\n')
    res = run_study(raw, parse_config(tomllib.loads(text), source="raw.toml"), progress=False)
    pvc = res.summary["pvc"]
    assert pvc["method"] == "gtm" and "preprocessing" in pvc["atlas"]
    tacs = sorted(res.out_dir.glob("sub-01/ses-*/pet/*_desc-pvc_tacs.tsv"))
    assert len(tacs) == 2
    info = json.loads(tacs[0].with_suffix(".json").read_text())["PartialVolumeCorrection"]
    assert "preprocess" in info["Atlas"] and info["AtlasVoxelsPerPETVoxelEdge"] == 1
    out = pd.read_csv(res.out_dir / "group" / "desc-pvc_outcomes.tsv", sep="\t")
    assert out["valid"].all() and set(out["region"]) >= {"caudate", "putamen"}


def test_an_unknown_psf_stops_the_run_before_any_scan(pvc_study, tmp_path):
    """No pvc.fwhm_mm and a sidecar without the PSF: the scan stage's error, named with
    that sidecar, before any scan is processed."""
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(pvc_study["bids"], bids)
    side = sorted(bids.glob("sub-*/ses-*/pet/*_pet.json"))[-1]
    meta = json.loads(side.read_text())
    meta.pop("ReconFilterSize", None)
    meta.pop("ScannerResolutionFWHM", None)
    side.write_text(json.dumps(meta))
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as e:
        run_study(bids, load_config(pvc_study["config"]), out_dir=out, progress=False)
    assert e.value.field == "pvc.fwhm_mm" and e.value.path == str(side)
    assert not list(out.glob("sub-*")), "no scan's outputs before the check"
