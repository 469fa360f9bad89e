"""The study pipeline on small simulated studies: truth recovered, outputs as documented,
reruns skip, a SIGKILLed run resumes to identical outputs, dask equals in-process."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from petbind.errors import DataError, PetbindError
from petbind.study.config import load_config
from petbind.study.pipeline import check_output_location, run_study

from .conftest import kill_when, tree_digest

HIGH_BINDING = 1.0  # truth BP_ND at or above which the reference models are expected to work


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                       dtype={"subject": str})


def test_noise_free_outcomes_recover_the_truth(noise_free_study):
    o = _read(noise_free_study["out"] / "group" / "outcomes.tsv")
    assert o["valid"].all()
    assert {"bp_nd_true", "r1_true"} <= set(o.columns)
    high = o[o["bp_nd_true"] >= HIGH_BINDING]
    assert set(high["region"]) >= {"midbrain", "thalamus", "caudate", "putamen"}
    rel = (high["bp_nd"] - high["bp_nd_true"]) / high["bp_nd_true"]
    # 2TCM targets with blood volume, 4 mm voxels: the reference models are biased a little
    assert rel.abs().max() < 0.20
    # every scan's estimates follow its own truth across regions
    for _, g in o[o["model"] == "mrtm2"].groupby(["subject", "condition"]):
        assert np.corrcoef(g["bp_nd"], g["bp_nd_true"])[0, 1] > 0.95


def test_noise_free_percent_change_matches_the_truth(noise_free_study):
    r = _read(noise_free_study["out"] / "group" / "roi_stats.tsv")
    o = _read(noise_free_study["out"] / "group" / "outcomes.tsv")
    high = set(o.loc[o["bp_nd_true"] >= HIGH_BINDING, "region"])
    sel = r[r["region"].isin(high)]
    assert len(sel) == 3 * len(high)
    # the simulator's ketamine effect on DASB is -10 % outside NAcc / VP
    np.testing.assert_allclose(sel["pct_change_true"], -10.0, atol=1e-6)
    assert (sel["pct_change"] - sel["pct_change_true"]).abs().max() < 2.5


def test_noisy_outcomes_track_the_truth(noisy_study):
    r = _read(noisy_study["out"] / "group" / "roi_stats.tsv")
    o = _read(noisy_study["out"] / "group" / "outcomes.tsv")
    high = o[(o["bp_nd_true"] >= HIGH_BINDING) & o["valid"]]
    rel = (high["bp_nd"] - high["bp_nd_true"]) / high["bp_nd_true"]
    assert rel.abs().median() < 0.15
    sel = r[r["region"].isin(set(high["region"]))]
    assert (sel["pct_change"] - sel["pct_change_true"]).abs().median() < 8.0
    # with 3 subjects and 10 % noise no test may claim certainty
    assert (r["power"].dropna() <= 1).all() and (r["p"].dropna() > 0).all()


def test_image_truth_equals_the_estimate_on_noise_free_unblurred_data(noise_free_study):
    """Noise 0, no blur, no motion: the image's region means are the noise-free curves."""
    o = _read(noise_free_study["out"] / "group" / "outcomes.tsv")
    cols = list(o.columns)
    assert cols.index("bp_nd_true_image") == cols.index("bp_nd_true") + 1
    prim = o[o["model"] == "srtm"]
    assert prim["bp_nd_true_image"].notna().all()
    np.testing.assert_allclose(prim["bp_nd_true_image"], prim["bp_nd"], rtol=1e-6)
    # only the primary model is fitted to the noise-free curves
    assert o.loc[o["model"] != "srtm", "bp_nd_true_image"].isna().all()


def test_image_truth_separates_noise_from_partial_volume(noisy_study):
    o = _read(noisy_study["out"] / "group" / "outcomes.tsv")
    prim = o[(o["model"] == "srtm") & o["valid"]]
    est, img, tissue = prim["bp_nd"], prim["bp_nd_true_image"], prim["bp_nd_true"]
    # the estimates scatter around the image truth, not around the tissue truth
    assert (est - img).abs().median() < (est - tissue).abs().median()
    assert ((est - img).abs() > 1e-6).any()
    # blur (2.8 mm) and 4 mm voxels: small high-binding regions lose binding in the image
    nacc = prim[prim["region"] == "NAcc"]
    assert (nacc["bp_nd_true_image"] < nacc["bp_nd_true"]).all()


def test_outputs_are_those_listed_in_docs_outputs(noise_free_study):
    out = noise_free_study["out"]
    assert out == noise_free_study["bids"] / "derivatives" / "petbind"
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert load_config(out / "study_config.toml").tracers["DASB"].map_model == "mrtm2"
    stem = "sub-01_ses-baseline_trc-DASB"
    scan = out / "sub-01" / "ses-baseline" / "pet"
    for suffix in ("_tacs.tsv", "_tacs.json", "_fits.tsv", "_desc-fitted_tacs.tsv",
                   "_model-mrtm2_bpnd.nii.gz", "_model-mrtm2_bpnd.json",
                   "_model-mrtm2_r1.nii.gz", "_model-mrtm2_mask.nii.gz", "_provenance.json"):
        assert (scan / f"{stem}{suffix}").is_file(), suffix
    tacs = _read(scan / f"{stem}_tacs.tsv")
    assert list(tacs.columns[:2]) == ["frame_start", "frame_end"]
    assert "cerebellum" in tacs.columns and "NAcc_L" not in tacs.columns
    fits = _read(scan / f"{stem}_fits.tsv")
    assert set(fits["model"]) == {"srtm", "mrtm2", "logan"}
    assert {"region", "model", "bp_nd", "aic", "r2", "n_frames_used", "valid"} <= set(fits)
    curves = _read(scan / f"{stem}_desc-fitted_tacs.tsv")
    assert list(curves.columns) == ["model", "region", "frame", "frame_start", "frame_end",
                                    "frame_mid", "measured", "fitted"]
    g = out / "group"
    o = _read(g / "outcomes.tsv")
    assert list(o.columns[:6]) == ["subject", "condition", "tracer", "run", "region", "model"]
    r = _read(g / "roi_stats.tsv")
    for col in ("tracer", "model", "region", "contrast", "contrast_id", "kind", "n",
                "pct_change", "pct_ci_low", "pct_ci_high", "t", "df", "p", "p_wilcoxon",
                "cohen_dz", "p_holm", "p_bh", "power", "n_for_80_power", "pct_change_true"):
        assert col in r.columns, col
    m = _read(g / "mixed_model.tsv")
    assert {"estimate", "se", "z", "p", "converged", "boundary"} <= set(m.columns)
    assert set(m["model"]) == {"srtm"}
    pre = g / "voxel" / "trc-DASB_model-mrtm2_contrast-ketamineVsBaseline"
    for tag in ("stat-t", "stat-effect", "stat-p", "stat-pfwe", "stat-pfdr", "mask"):
        assert Path(f"{pre}_{tag}.nii.gz").is_file(), tag
    side = json.loads(Path(f"{pre}_stat-t.json").read_text())
    assert side["exact"] is True and side["n_flips"] == 8
    assert side["min_attainable_p"] == pytest.approx(1 / 8)
    clusters = _read(Path(f"{pre}_clusters.tsv"))
    assert list(clusters.columns) == ["cluster_id", "sign", "size_voxels", "size_mm3", "peak_t",
                                      "peak_x", "peak_y", "peak_z", "peak_i", "peak_j",
                                      "peak_k", "peak_region", "p_fwe_cluster"]
    summary = json.loads((g / "summary.json").read_text())
    assert summary["n_scans"] == 6 and summary["simulated"] is True
    assert all(h["model"] == "srtm" for h in summary["highlights"])
    prov = json.loads((g / "provenance.json").read_text())
    assert {"petbind_version", "config_sha256", "scans", "run_seconds"} <= set(prov)


def test_input_dataset_is_not_modified(noise_free_study):
    after = tree_digest(noise_free_study["bids"], skip=("derivatives/petbind/",))
    assert after == noise_free_study["input_before"]


def test_rerun_skips_every_scan_and_rewrites_identical_outputs(noise_free_study):
    out = noise_free_study["out"]
    before = tree_digest(out, skip=("group/provenance.json",))
    again = run_study(noise_free_study["bids"], load_config(noise_free_study["config"]),
                      progress=False)
    prov = json.loads((out / "group" / "provenance.json").read_text())
    assert len(prov["skipped_scans"]) == 6
    assert again.seconds["scans"] < noise_free_study["result"].seconds["scans"]
    assert tree_digest(out, skip=("group/provenance.json",)) == before


def test_reference_region_missing_from_the_atlas_is_a_named_error(noise_free_study, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(noise_free_study["bids"], bids,
                    ignore=shutil.ignore_patterns("petbind"))
    out = tmp_path / "out"
    shutil.copytree(noise_free_study["out"], out)
    tsv = next(bids.glob("derivatives/petbind-sim/sub-01/ses-baseline/pet/*_dseg.tsv"))
    tsv.write_text(tsv.read_text().replace("\tcerebellum\n", "\tcerebellum_cortex\n"))
    with pytest.raises(DataError) as e:
        run_study(bids, load_config(noise_free_study["config"]), out_dir=out, progress=False)
    # the reference region is missing from the edited atlas: named, with the file
    assert e.value.field == "region" and "cerebellum" in str(e.value)
    assert tsv.name in str(e.value)


@pytest.mark.parametrize("where", ["sub-01", ".", "derivatives", "derivatives/petbind-sim",
                                   "derivatives/petbind-sim/x"])
def test_output_folder_inside_the_input_tree_is_refused(noise_free_study, where):
    bids = noise_free_study["bids"]
    with pytest.raises(PetbindError) as e:
        check_output_location(bids, bids / where)
    assert e.value.field == "--out"


def test_output_folders_under_derivatives_that_are_ours_or_new_are_allowed(tmp_path):
    bids = tmp_path / "bids"
    (bids / "derivatives" / "mine").mkdir(parents=True)
    (bids / "derivatives" / "mine" / "dataset_description.json").write_text(
        json.dumps({"Name": "petbind outputs"}))
    (bids / "derivatives" / "atlases").mkdir()
    (bids / "derivatives" / "atlases" / "x.nii.gz").write_bytes(b"")
    check_output_location(bids, bids / "derivatives" / "petbind")
    check_output_location(bids, bids / "derivatives" / "new")
    check_output_location(bids, bids / "derivatives" / "mine")
    check_output_location(bids, tmp_path / "elsewhere")
    with pytest.raises(PetbindError):
        check_output_location(bids, bids / "derivatives" / "atlases")


@pytest.mark.slow
def test_sigkilled_run_resumes_to_identical_outputs(noise_free_study, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "petbind", "run", str(noise_free_study["bids"]),
           "--config", str(noise_free_study["config"]), "--out", str(out), "--no-progress",
           "--no-report"]  # the report shows run times; the fixture's run wrote none
    # kill once the first scan has finished, i.e. in the middle of the scans
    _, env = kill_when(cmd, out, "sub-*/ses-*/pet/*_provenance.json", 120)
    assert not (out / "group" / "summary.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    prov = json.loads((out / "group" / "provenance.json").read_text())
    assert len(prov["skipped_scans"]) >= 1
    skip = ("group/provenance.json",)
    assert tree_digest(out, skip) == tree_digest(noise_free_study["out"], skip)


@pytest.mark.slow
def test_dask_cluster_at_an_address_gives_the_same_outputs(noise_free_study, tmp_path):
    from distributed import LocalCluster

    # a thread-based cluster: the HOST:PORT path without spawning worker processes
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}) as cluster:
        address = cluster.scheduler_address.removeprefix("tcp://")
        out = tmp_path / "out"
        run_study(noise_free_study["bids"], load_config(noise_free_study["config"]),
                  out_dir=out, scheduler=address, progress=False)
    skip = ("group/provenance.json",)
    assert tree_digest(out, skip) == tree_digest(noise_free_study["out"], skip)



def test_on_a_cluster_the_voxel_flips_run_while_the_region_statistics_are_made(
        noise_free_study, tmp_path, monkeypatch):
    import threading

    from distributed import LocalCluster

    import petbind.study.pipeline as pipeline
    from petbind.stats import voxel_null
    from petbind.study import group_stage

    flipping = threading.Event()
    seen: list[tuple[bool, bool]] = []
    finished: list[bool] = []
    real_flips, real_region = voxel_null.run_flip_tasks, pipeline._region_statistics
    real_finish = group_stage.VoxelStatistics.finish

    def flips(*args, **kwargs):
        flipping.set()
        return real_flips(*args, **kwargs)

    def region(*args, **kwargs):
        # the flips were sent before the region statistics (serially they came after),
        # and their results are taken only after them
        seen.append((flipping.wait(timeout=30), bool(finished)))
        return real_region(*args, **kwargs)

    def finish(self):
        finished.append(True)
        return real_finish(self)

    monkeypatch.setattr(voxel_null, "run_flip_tasks", flips)
    monkeypatch.setattr(pipeline, "_region_statistics", region)
    monkeypatch.setattr(group_stage.VoxelStatistics, "finish", finish)
    out = tmp_path / "out"
    shutil.copytree(noise_free_study["out"], out)  # scans current: only the study level runs
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}) as cluster:
        run_study(noise_free_study["bids"], load_config(noise_free_study["config"]),
                  out_dir=out, scheduler=cluster.scheduler_address, progress=False)
    assert seen == [(True, False)] and finished == [True]
    skip = ("group/provenance.json",)
    assert tree_digest(out, skip) == tree_digest(noise_free_study["out"], skip)


def test_a_failed_region_stage_stops_waiting_for_the_flips_and_writes_no_voxel_output(
        noise_free_study, tmp_path, monkeypatch):
    from distributed import LocalCluster

    import petbind.study.pipeline as pipeline
    from petbind.errors import DataError

    def region(*args, **kwargs):
        raise DataError("broken outcome table", field="outcomes", fix="none")

    monkeypatch.setattr(pipeline, "_region_statistics", region)
    out = tmp_path / "out"
    shutil.copytree(noise_free_study["out"], out)
    for f in (out / "group").rglob("*"):
        if f.is_file() and "voxel" in f.relative_to(out).as_posix():
            f.unlink()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}) as cluster:
        with pytest.raises(DataError, match="broken outcome table"):
            run_study(noise_free_study["bids"], load_config(noise_free_study["config"]),
                      out_dir=out, scheduler=cluster.scheduler_address, progress=False)
    assert not [f for f in (out / "group").rglob("*")
                if f.is_file() and "voxel" in f.relative_to(out).as_posix()]


def test_cli_run_prints_the_tables_and_the_output_path(noise_free_study, tmp_path, capsys):
    from petbind.cli import main

    out = tmp_path / "out"
    shutil.copytree(noise_free_study["out"], out)  # scans are current: only the study level runs
    argv = ["run", str(noise_free_study["bids"]), "--config", str(noise_free_study["config"]),
            "--out", str(out), "--no-progress"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    captured = capsys.readouterr()
    assert e.value.code == 0, captured.err
    stdout = captured.out
    assert "ketamine - baseline" in stdout and "truth" in stdout
    assert "outputs:" in stdout and out.name in stdout


def test_counts_weights_take_the_sidecars_radionuclide_and_methods_say_so():
    import dataclasses

    from petbind.models import make_model
    from petbind.report.build import _settings_text
    from petbind.study.config import TracerConfig
    from petbind.study.region_fits import fit_regions, model_kwargs
    from petbind.tac import TACTable
    from petbind.timing import FrameTiming

    timing = FrameTiming.from_seconds(np.arange(12) * 300.0, np.full(12, 300.0))
    t = timing.mid
    ref = 10 * t * np.exp(-t / 20)
    tgt = 14 * t * np.exp(-t / 30)
    tacs = TACTable(timing, np.stack([ref, tgt]), ["cerebellum", "putamen"],
                    metadata={"isotope": "C-11"})
    tracer = TracerConfig(name="DASB", reference_region="cerebellum", models=("srtm",),
                          model_settings={"srtm": {"weights": "counts"}})
    assert model_kwargs(tracer, "srtm", tacs)["isotope"] == "C-11"
    used: dict = {}
    fits, _ = fit_regions(tracer, tacs, ["putamen"], None, used)
    assert used["srtm"]["isotope"] == "C-11"
    assert used["srtm"]["isotope_source"] == "TracerRadionuclide"
    # the same fit as with the isotope given by hand, not the uniform one
    by_hand = make_model("srtm", timing, ref, weights="counts", isotope="C-11").fit(tgt[None])
    uniform = make_model("srtm", timing, ref).fit(tgt[None])
    assert fits["bp_nd"].iloc[0] == pytest.approx(float(by_hand.to_frame(["p"])["bp_nd"][0]),
                                                  rel=1e-12)
    assert not np.allclose(by_hand.fitted, uniform.fitted, rtol=1e-9)
    given = dataclasses.replace(tracer, model_settings={"srtm": {"weights": "counts",
                                                                 "isotope": "F-18"}})
    assert model_kwargs(given, "srtm", tacs)["isotope"] == "F-18"

    scan = type("S", (), {"tracer": "DASB", "provenance": {"models": used}})()
    study = type("Study", (), {"scans": (scan,)})()
    text = _settings_text(study, "DASB", ["srtm"], {})
    assert "Frames were weighted by counts" in text
    assert "radionuclide C11 taken from the sidecars' TracerRadionuclide" in text.replace(
        "C-11", "C11")


def _copy_study(study, tmp_path):
    """The fixture's dataset and outputs copied (modification times kept), to edit freely."""
    bids, out = tmp_path / "bids", tmp_path / "out"
    shutil.copytree(study["bids"], bids, ignore=shutil.ignore_patterns("petbind"))
    shutil.copytree(study["out"], out)
    return bids, out


def _record_tasks(monkeypatch):
    """Keys of every task sent to an engine; a local cluster started is an error."""
    import petbind.compute as compute

    sent: list[str] = []
    real_run = compute.Engine.run

    def run(self, tasks, *a, **k):
        sent.extend(t.key for t in tasks)
        return real_run(self, tasks, *a, **k)

    def no_cluster(n):
        raise AssertionError("a local cluster was started")

    monkeypatch.setattr(compute.Engine, "run", run)
    monkeypatch.setattr(compute, "_local_cluster", no_cluster)
    return sent


def test_rerun_over_complete_outputs_submits_no_scan_task_and_starts_no_cluster(
        noise_free_study, tmp_path, monkeypatch):
    bids, out = _copy_study(noise_free_study, tmp_path)
    cfg = load_config(noise_free_study["config"])
    # the config below differs at the study level; the description names the moved dataset
    skip = ("group/", "study_config.toml", "dataset_description.json")
    before = tree_digest(out, skip=skip)
    sent = _record_tasks(monkeypatch)
    # the scan stage alone, on a local cluster that starts only when it is sent work
    from petbind.compute import shared_scheduler
    from petbind.study.discover import discover_scans
    from petbind.study.pipeline import run_scans

    scans, _ = discover_scans(bids, cfg, out_dir=out)
    with shared_scheduler("local:2") as lazy:
        results = run_scans(scans, cfg, out, scheduler=lazy, progress=False)
        assert not lazy.started
    assert sent == []
    assert [r.stem for r in results] == [s.stem for s in scans]
    assert all(r.skipped for r in results)
    # the whole study without its voxel statistics (whose flips are tasks): nothing starts
    no_voxel = dataclasses.replace(cfg, statistics=dataclasses.replace(
        cfg.statistics, voxel=dataclasses.replace(cfg.statistics.voxel, enabled=False)))
    run_study(bids, no_voxel, out_dir=out, scheduler="local:2", progress=False)
    assert sent == []
    prov = json.loads((out / "group" / "provenance.json").read_text())
    assert len(prov["skipped_scans"]) == len(scans) == 6
    assert tree_digest(out, skip=skip) == before


def test_a_changed_input_reruns_exactly_that_scan(noise_free_study, tmp_path, monkeypatch):
    bids, out = _copy_study(noise_free_study, tmp_path)
    cfg = load_config(noise_free_study["config"])
    stem = "sub-02_ses-ketamine_trc-DASB"
    skip = ("group/", "dataset_description.json")  # it names the dataset, moved here
    before = tree_digest(out, skip=skip)
    # one byte of the scan's sidecar changed with the size and modification time kept
    # (as `cp -p` of another file would): only the bytes' hash can tell
    side = next(bids.rglob(f"{stem}_pet.json"))
    st = side.stat()
    text = side.read_bytes()
    assert text.endswith(b"}\n")
    time.sleep(0.05)
    side.write_bytes(text[:-1] + b" ")
    os.utime(side, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert side.stat().st_size == st.st_size and side.stat().st_mtime_ns == st.st_mtime_ns
    sent = _record_tasks(monkeypatch)
    run_study(bids, cfg, out_dir=out, progress=False)
    assert [k for k in sent if k.startswith("petbind-scan-")] == [f"petbind-scan-{stem}"]
    prov = json.loads((out / "group" / "provenance.json").read_text())
    assert stem not in prov["skipped_scans"] and len(prov["skipped_scans"]) == 5
    after = tree_digest(out, skip=skip)
    assert set(after) == set(before)
    changed = sorted(k for k in before if after[k] != before[k])
    # only that scan's files were written again: its provenance (the new sidecar's hash)
    # and the sidecars that name the moved dataset's atlas; its numbers are the same
    assert f"sub-02/ses-ketamine/pet/{stem}_provenance.json" in changed
    assert all(k.startswith(f"sub-02/ses-ketamine/pet/{stem}_") and k.endswith(".json")
               for k in changed), changed
