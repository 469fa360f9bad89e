"""A small pipeline output folder written independently of petbind, per docs/outputs.md.

The generator below writes every file the report reads (per-scan TACs, fits,
fitted curves, maps, provenance; group tables; voxel statistics; summary and
provenance JSON; an input dataset with PET sidecars) from closed-form curves
and fixed numbers, so that report tests know every value they look for
without running any petbind numerics.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

XSS = "<script>alert(1)</script>"
SUBJECTS = ["01", "02", "03"]
CONDITIONS = ["baseline", "ketamine", "ketaminenbqx"]
TRACER = "AZ10419369"
REGIONS = ["NAcc", "VP", XSS, "cerebellum"]
TARGETS = ["NAcc", "VP", XSS]
MODELS = ["srtm", "logan"]
SHAPE = (12, 14, 10)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
# T1w: 1 mm voxels over the PET grid's field of view (voxel centres half a mm in)
T1_SHAPE = (24, 28, 20)
T1_AFFINE = np.array([[1.0, 0, 0, -0.5], [0, 1.0, 0, -0.5], [0, 0, 1.0, -0.5], [0, 0, 0, 1]])
# Frame schedule (s): 4 x 30, 4 x 120, 4 x 600 -> 12 frames, 3000 s.
DURATIONS_S = np.array([30.0] * 4 + [120.0] * 4 + [600.0] * 4)
STARTS_S = np.concatenate([[0.0], np.cumsum(DURATIONS_S)[:-1]])
BP_TRUE = {"NAcc": 1.2, "VP": 1.8, XSS: 0.9, "cerebellum": 0.0}
EFFECT = {"baseline": 0.0, "ketamine": 0.20, "ketaminenbqx": 0.0}
INJECTED_MBQ = {"01": 101.5, "02": 98.25, "03": 120.0}

#: roi_stats rows (primary model srtm): region -> contrast -> values.
ROI_STATS = {
    ("NAcc", "ketamine - baseline"): dict(pct=18.34, lo=6.12, hi=30.56, t=6.45, p=0.0232,
                                          p_holm=0.0464, p_bh=0.0348, power=0.91, n80=3,
                                          dz=3.72, true=20.0),
    ("VP", "ketamine - baseline"): dict(pct=21.07, lo=-2.5, hi=44.64, t=3.85, p=0.0613,
                                        p_holm=0.0613, p_bh=0.0613, power=0.55, n80=5,
                                        dz=2.22, true=20.0),
    (XSS, "ketamine - baseline"): dict(pct=4.4, lo=-20.0, hi=28.8, t=0.77, p=0.52,
                                       p_holm=0.52, p_bh=0.52, power=0.08, n80=28, dz=0.45,
                                       true=5.0),
    ("NAcc", "(ketamine - baseline) - (ketaminenbqx - baseline)"): dict(
        pct=17.9, lo=-1.2, hi=37.0, t=4.03, p=0.0564, p_holm=0.169, p_bh=0.0846, power=0.6,
        n80=5, dz=2.33, true=20.0),
    ("VP", "(ketamine - baseline) - (ketaminenbqx - baseline)"): dict(
        pct=15.2, lo=-10.0, hi=40.4, t=2.6, p=0.121, p_holm=0.242, p_bh=0.121, power=0.3,
        n80=7, dz=1.5, true=20.0),
    (XSS, "(ketamine - baseline) - (ketaminenbqx - baseline)"): dict(
        pct=-3.0, lo=-30.0, hi=24.0, t=-0.48, p=0.68, p_holm=0.68, p_bh=0.68, power=0.06,
        n80=40, dz=-0.28, true=5.0),
}
CONTRAST_IDS = {
    "ketamine - baseline": "ketamineVsBaseline",
    "(ketamine - baseline) - (ketaminenbqx - baseline)":
        "ketamineVsBaselineMinusKetaminenbqxVsBaseline",
}
SHA_PET = "ab" * 32


def reference_curve(t_min: np.ndarray) -> np.ndarray:
    """A bolus-like reference curve (kBq/mL): 60 (exp(-0.1 t) - exp(-1.5 t))."""
    return 60.0 * (np.exp(-0.1 * t_min) - np.exp(-1.5 * t_min))


def target_curve(t_min: np.ndarray, bp: float) -> np.ndarray:
    """A target curve that washes out slower with larger BP_ND (kBq/mL)."""
    k = 0.1 / (1.0 + bp)
    return 60.0 * (1.0 + 0.3 * bp) * (np.exp(-k * t_min) - np.exp(-1.5 * t_min))


def _tsv(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, sep="\t", index=False, na_rep="n/a")


def _json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _nii(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))


def t1_image(subject_index: int) -> np.ndarray:
    """The fixture's T1w of a subject (1 mm, ``T1_SHAPE``)."""
    return 100.0 + 10.0 * subject_index + np.arange(
        np.prod(T1_SHAPE), dtype=float).reshape(T1_SHAPE) % 7


def blob(centre: tuple[float, float, float], width: float) -> np.ndarray:
    """A Gaussian blob on the fixture grid (voxel units)."""
    i, j, k = np.indices(SHAPE, dtype=float)
    return np.exp(-((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2)
                  / (2 * width ** 2))


#: The atlas on the PET grid (index -> region): NAcc a 7-voxel ball (radius 1 voxel) at
#: the t map's peak (6, 7, 5); XSS the shell around it out to radius 1.8 voxels (20
#: voxels), so that the 27-voxel cluster (t = 6 exp(-r^2 / 4.5) > 2.92, r < 1.8) is
#: 20 XSS + 7 NAcc voxels; VP a 7-voxel ball at (6, 7, 8); cerebellum the slab i >= 10.
ATLAS_REGIONS = {1: "NAcc", 2: "VP", 3: XSS, 4: "cerebellum"}


def atlas_labels() -> np.ndarray:
    i, j, k = np.indices(SHAPE, dtype=float)
    r_peak = np.sqrt((i - 6) ** 2 + (j - 7) ** 2 + (k - 5) ** 2)
    r_vp = np.sqrt((i - 6) ** 2 + (j - 7) ** 2 + (k - 8) ** 2)
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[i >= 10] = 4
    labels[r_peak < 1.8] = 3
    labels[r_peak <= 1.0] = 1
    labels[r_vp <= 1.0] = 2
    return labels


def _write_atlas(stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(atlas_labels(), AFFINE), str(stem) + ".nii.gz")
    _tsv(Path(str(stem) + ".tsv"), pd.DataFrame(
        {"index": list(ATLAS_REGIONS), "name": list(ATLAS_REGIONS.values()),
         "region": list(ATLAS_REGIONS.values())}))


def write_outputs(root: Path, *, voxel: bool = True) -> dict:
    """Write the fixture output folder at ``root / 'out'`` and its dataset at ``root / 'bids'``.

    Returns
    -------
    dict
        ``out`` (Path), ``bids`` (Path), ``n_scans``.
    """
    out = root / "out"
    bids = root / "bids"
    mid_min = (STARTS_S + DURATIONS_S / 2) / 60.0
    _json(out / "dataset_description.json",
          {"Name": "fixture", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
           "GeneratedBy": [{"Name": "petbind", "Version": "0.1.0"}]})
    (out / "study_config.toml").write_text(
        f"[tracers.{TRACER}]\n"
        'reference_region = "cerebellum"\n'
        'target_regions = ["NAcc", "VP", "<script>alert(1)</script>"]\n'
        'models = ["srtm", "logan"]\nprimary_model = "srtm"\nmap_model = "srtm"\n'
        'k2prime = "srtm"\nk2prime_region = "VP"\n'
        f"[tracers.{TRACER}.model_settings.srtm]\n"
        'weights = "duration"\n'
        f"[tracers.{TRACER}.model_settings.logan]\n"
        'weights = "duration"\n'
        "[[contrasts]]\n"
        'expr = "ketamine - baseline"\nname = "ketamineVsBaseline"\n'
        "[[contrasts]]\n"
        'expr = "(ketamine - baseline) - (ketaminenbqx - baseline)"\n'
        'name = "ketamineVsBaselineMinusKetaminenbqxVsBaseline"\n'
        "[statistics]\n"
        'baseline_condition = "baseline"\nalpha = 0.05\n'
        "[statistics.voxel]\n"
        "smoothing_fwhm_mm = 4.0\n")
    outcomes = []
    scans = []
    for s_i, sub in enumerate(SUBJECTS):
        # anatomy at 1 mm over the same field of view as the 2 mm PET grid
        _nii(bids / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz", t1_image(s_i), T1_AFFINE)
        for cond in CONDITIONS:
            stem = f"sub-{sub}_ses-{cond}_trc-{TRACER}"
            folder = out / f"sub-{sub}" / f"ses-{cond}" / "pet"
            bp = {r: BP_TRUE[r] * (1 + EFFECT[cond]) * (1 + 0.05 * (s_i - 1)) for r in REGIONS}
            curves = {r: (reference_curve(mid_min) if r == "cerebellum"
                          else target_curve(mid_min, bp[r])) for r in REGIONS}
            tacs = pd.DataFrame({"frame_start": STARTS_S, "frame_end": STARTS_S + DURATIONS_S,
                                 **curves})
            _tsv(folder / f"{stem}_tacs.tsv", tacs)
            _json(folder / f"{stem}_tacs.json", {"Units": "kBq/mL", "regions": REGIONS})
            fit_rows, long_rows = [], []
            for m_i, model in enumerate(MODELS):
                for r in TARGETS:
                    est = bp[r] * (1.0 + 0.01 * (m_i + 1))
                    fit_rows.append({"region": r, "model": model, "bp_nd": est,
                                     "r1": 1.0 if model == "srtm" else None,
                                     "k2": 0.1 if model == "srtm" else None,
                                     "k2prime": 0.1, "dvr": est + 1, "bp_nd_se": 0.05,
                                     "aic": -20.0 - m_i, "r2": 0.999, "n_frames_used": 12,
                                     "valid": "true"})
                    outcomes.append({"subject": sub, "condition": cond, "tracer": TRACER,
                                     "run": None, "region": r, "model": model, "bp_nd": est,
                                     "bp_nd_se": 0.05, "r1": 1.0, "k2": 0.1, "k2prime": 0.1,
                                     "aic": -20.0, "r2": 0.999, "valid": "true",
                                     "bp_nd_true": bp[r], "r1_true": 1.0})
                    fitted = curves[r] * (1.0 + 0.02 * np.sin(np.arange(12) + m_i))
                    if model == "logan":
                        fitted[:4] = np.nan  # before t*
                    for f in range(12):
                        long_rows.append({
                            "model": model, "region": r, "frame": f,
                            "frame_start": STARTS_S[f], "frame_end": STARTS_S[f] + DURATIONS_S[f],
                            "frame_mid": STARTS_S[f] + DURATIONS_S[f] / 2,
                            "measured": curves[r][f], "fitted": fitted[f]})
            _tsv(folder / f"{stem}_fits.tsv", pd.DataFrame(fit_rows))
            _tsv(folder / f"{stem}_desc-fitted_tacs.tsv", pd.DataFrame(long_rows))
            bpmap = bp["NAcc"] * blob((6, 7, 5), 2.5)
            _nii(folder / f"{stem}_model-srtm_bpnd.nii.gz", bpmap)
            _nii(bids / "derivatives" / "petbind-sim" / f"sub-{sub}" / f"ses-{cond}" / "pet"
                 / f"{stem}_desc-true_bpnd.nii.gz", bpmap)
            _nii(folder / f"{stem}_model-srtm_mask.nii.gz", (bpmap > 0.01).astype(np.float32))
            dseg = f"derivatives/petbind-sim/sub-{sub}/ses-{cond}/pet/{stem}_dseg"
            _write_atlas(bids / dseg)
            _json(folder / f"{stem}_provenance.json",
                  {"inputs": {"pet": {"path": f"sub-{sub}/ses-{cond}/pet/{stem}_pet.nii.gz",
                                      "sha256": SHA_PET},
                              "dseg": {"path": f"{dseg}.nii.gz", "sha256": SHA_PET}},
                   "petbind_version": "0.1.0"})
            pet_rel = f"sub-{sub}/ses-{cond}/pet/{stem}_pet.nii.gz"
            _json(bids / pet_rel.replace(".nii.gz", ".json"),
                  {"TracerName": TRACER, "TracerRadionuclide": "C11",
                   "InjectedRadioactivity": INJECTED_MBQ[sub],
                   "InjectedRadioactivityUnits": "MBq"})
            scans.append({"subject": sub, "condition": cond, "tracer": TRACER, "run": None,
                          "pet": pet_rel, "provenance": f"{folder.relative_to(out)}/"
                                                        f"{stem}_provenance.json"})
    group = out / "group"
    _tsv(group / "outcomes.tsv", pd.DataFrame(outcomes))
    stats = []
    for model in MODELS:
        for (region, contrast), v in ROI_STATS.items():
            kind = "interaction" if contrast.startswith("(") else "simple"
            stats.append({
                "tracer": TRACER, "model": model, "region": region, "contrast": contrast,
                "contrast_id": CONTRAST_IDS[contrast], "kind": kind, "n": 3,
                "mean_a": 1.4, "mean_b": 1.2, "mean_diff": 0.2, "pct_change": v["pct"],
                "pct_ci_low": v["lo"], "pct_ci_high": v["hi"], "t": v["t"], "df": 2,
                "p": v["p"], "p_wilcoxon": 0.25, "cohen_dz": v["dz"], "p_holm": v["p_holm"],
                "p_bh": v["p_bh"], "power": v["power"], "n_for_80_power": v["n80"],
                "pct_change_true": v["true"], "mean_diff_true": 0.24})
    roi = pd.DataFrame(stats)
    _tsv(group / "roi_stats.tsv", roi)
    _tsv(group / "mixed_model.tsv", pd.DataFrame([
        {"tracer": TRACER, "model": "srtm", "region": r, "contrast": "ketamine - baseline",
         "contrast_id": "ketamineVsBaseline", "estimate": 0.21, "se": 0.05, "z": 4.2,
         "p": 0.0001, "ci_low": 0.11, "ci_high": 0.31, "p_holm": 0.0003, "p_bh": 0.0003,
         "n_obs": 9, "n_subjects": 3, "converged": "true"} for r in TARGETS]))
    if voxel:
        vox = group / "voxel"
        prefix = f"trc-{TRACER}_model-srtm_contrast-ketamineVsBaseline"
        tmap = 6.0 * blob((6, 7, 5), 1.5) - 3.0 * blob((3, 3, 3), 1.0)
        _nii(vox / f"{prefix}_stat-t.nii.gz", tmap)
        _nii(vox / f"{prefix}_stat-effect.nii.gz", 20.0 * blob((6, 7, 5), 1.5))
        _nii(vox / f"{prefix}_mask.nii.gz", np.ones(SHAPE, dtype=np.float32))
        _json(vox / f"{prefix}_stat-t.json",
              {"n_subjects": 3, "n_flips": 8, "exact": True, "min_attainable_p": 0.125,
               "cluster_forming_t": 2.92, "cluster_forming_p": 0.1,
               "smoothing_fwhm_mm": 4.0, "seed": 7, "mask_voxels": 1680})
        _tsv(vox / f"{prefix}_clusters.tsv", pd.DataFrame([
            {"cluster_id": 1, "sign": 1, "size_voxels": 27, "size_mm3": 216.0, "peak_t": 6.0,
             "peak_x": 12.0, "peak_y": 14.0, "peak_z": 10.0, "peak_i": 6, "peak_j": 7,
             "peak_k": 5, "peak_region": XSS, "p_fwe_cluster": 0.125}]))
    highlights = roi[roi["model"] == "srtm"].to_dict("records")
    _json(group / "summary.json", {
        "n_scans": len(scans), "n_subjects": len(SUBJECTS), "conditions": CONDITIONS,
        "tracers": [TRACER], "models": MODELS, "contrasts": list(CONTRAST_IDS),
        "run_seconds": {"fits": 1.5, "stats": 0.5},
        "warnings": [f"sub-01_ses-ketamine_trc-{TRACER}: frame 3 shorter than stated"],
        "n_invalid_fits": 0, "skipped_scans": [], "simulated": True,
        "highlights": highlights, "paths": {}})
    _json(group / "provenance.json", {
        "petbind_version": "0.1.0", "python": "3.11.2", "numpy": "2.4.6",
        "scipy": "1.16.0", "statsmodels": "0.14.4", "command": ["petbind", "run", str(bids)],
        "config": {}, "config_sha256": "cd" * 32, "dataset": str(bids),
        "started": "2026-11-27T18:00:00Z", "finished": "2026-11-27T18:01:00Z",
        "scans": scans, "seed": 7})
    return {"out": out, "bids": bids, "n_scans": len(scans)}


#: Preprocessing fixture: FD threshold (mm) and the frames that move (frame -> FD, mm).
FD_THRESHOLD = 0.5
MOTION_SPIKES = {("02", "ketamine"): {3: 0.8, 7: 1.25}}
#: Registration blocks of the 12 frames: the four 30 s frames pooled into one.
BLOCKS = np.array([0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
#: Size (px) of the fixture's QC PNGs: wider than the report's QC width, so they shrink.
QC_PNG_SIZE = (900, 300)


def fixture_fd(subject: str, condition: str) -> np.ndarray:
    """Framewise displacement (mm) of a scan: a small ramp, plus the spikes above."""
    fd = 0.02 * (np.arange(len(DURATIONS_S)) % 4) + 0.01 * int(subject)
    fd[0] = 0.0
    for frame, value in MOTION_SPIKES.get((subject, condition), {}).items():
        fd[frame] = value
    return fd


def qc_png(path: Path, colour: tuple[int, int, int]) -> None:
    """A QC figure stand-in: a solid colour with a white band (PNG, ``QC_PNG_SIZE``)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", QC_PNG_SIZE, colour)
    img.paste((255, 255, 255), (0, 100, QC_PNG_SIZE[0], 200))
    img.save(path, format="PNG")


def write_preprocess(out: Path, stems: list[tuple[str, str]] | None = None) -> dict:
    """Preprocessing outputs of ``petbind run`` for (subject, condition) pairs under ``out``.

    Per scan: ``_desc-motion_timeseries.tsv`` (FD from :func:`fixture_fd`,
    flagged above ``FD_THRESHOLD``) with its sidecar, and the three QC PNGs.
    Returns ``{stem: fd}``.
    """
    pairs = stems if stems is not None else [(s, c) for s in SUBJECTS for c in CONDITIONS]
    written = {}
    for sub, cond in pairs:
        stem = f"sub-{sub}_ses-{cond}_trc-{TRACER}"
        folder = out / "preprocess" / f"sub-{sub}" / f"ses-{cond}" / "pet"
        fd = fixture_fd(sub, cond)
        n = len(fd)
        _tsv(folder / f"{stem}_desc-motion_timeseries.tsv", pd.DataFrame({
            "frame": np.arange(n), "frame_start": STARTS_S, "frame_duration": DURATIONS_S,
            "trans_x": np.cumsum(fd) / 3, "trans_y": 0.0, "trans_z": 0.0, "rot_x": 0.0,
            "rot_y": 0.0, "rot_z": 0.0, "framewise_displacement": fd,
            "flagged": fd > FD_THRESHOLD, "block": BLOCKS}))
        _json(folder / f"{stem}_desc-motion_timeseries.json",
              {"Description": "fixture", "ReferenceFrames": [8, 9, 10],
               "Settings": {"fd_threshold_mm": FD_THRESHOLD, "fd_radius_mm": 50.0}})
        for i, kind in enumerate(("motion", "pet2t1w", "t1w2template")):
            qc_png(folder / f"{stem}_desc-{kind}_qc.png", (40 * i, 120, 200 - 40 * i))
        written[stem] = fd
    return written


def _shared_once(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> Path:
    """Run ``make(folder)`` once per test session, even across pytest-xdist workers.

    Under xdist every worker has its own session fixtures; the workers share
    the parent of their base temp folder, so the first one builds there while
    the others wait for its ``done`` marker (the pattern in pytest-xdist's docs).
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        folder = tmp_path_factory.getbasetemp() / name
        if not (folder / "done").exists():
            make(folder)
            (folder / "done").touch()
        return folder
    root = tmp_path_factory.getbasetemp().parent
    folder = root / name
    try:
        os.close(os.open(root / f"{name}.lock", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        deadline = time.monotonic() + 600
        while not (folder / "done").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"another worker did not finish {folder}") from None
            time.sleep(0.2)
        return folder
    make(folder)
    (folder / "done").touch()
    return folder


def _build(folder: Path) -> None:
    from petbind.report import build_report

    write_outputs(folder)
    write_preprocess(folder / "out")
    build_report(folder / "out")


@pytest.fixture(scope="session")
def built_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The fixture output folder with its report, built once per session (``report``,
    ``html``, ``out``, ``bids``, ``n_scans``)."""
    folder = _shared_once(tmp_path_factory, "report_study", _build)
    report = folder / "out" / "report.html"
    return {"out": folder / "out", "bids": folder / "bids",
            "n_scans": len(SUBJECTS) * len(CONDITIONS), "report": report,
            "html": report.read_text(encoding="utf-8")}


@pytest.fixture(scope="session")
def study_outputs(built_report: dict) -> dict:
    """The fixture output folder (written once per session, shared with ``built_report``)."""
    return {k: built_report[k] for k in ("out", "bids", "n_scans")}
