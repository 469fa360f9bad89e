"""One output folder, one run, one config (issue 17): lock, temporary sweep, stale outputs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import pytest

from petbind.errors import PetbindError
from petbind.io.atomic import atomic_path, is_temporary
from petbind.study.config import load_config
from petbind.study.outdir import lock_output, sweep_temporaries
from petbind.study.pipeline import run_study


@pytest.fixture
def study_copy(noise_free_study, tmp_path):
    """The noise-free study's outputs copied to a folder of this test."""
    out = tmp_path / "out"
    shutil.copytree(noise_free_study["out"], out)
    # an earlier run's files: older than the run under test by more than the slack
    # (outdir.MTIME_SLACK_S) within which a file counts as that run's own, also when
    # the session's fixture was built just before this test
    old = time.time() - 60
    for f in out.rglob("*"):
        os.utime(f, (old, old))
    return noise_free_study["bids"], noise_free_study["config"], out


def test_second_run_on_a_locked_folder_fails_fast_naming_the_holder(study_copy):
    bids, cfg, out = study_copy
    with lock_output(out, command="petbind run (test holder)"):
        with pytest.raises(PetbindError) as e:
            run_study(bids, load_config(cfg), out_dir=out, progress=False)
    msg = str(e.value)
    assert e.value.field == "--out" and f"pid {os.getpid()}" in msg
    assert socket.gethostname() in msg and "started" in msg and "test holder" in msg
    # released: the next run goes through
    run_study(bids, load_config(cfg), out_dir=out, progress=False)


def test_temporaries_of_a_killed_run_are_swept(study_copy):
    bids, cfg, out = study_copy
    target = next(out.glob("sub-*/ses-*/pet/*_fits.tsv"))
    ctx = atomic_path(target)
    tmp = ctx.__enter__()  # a write that never finished (the process was killed)
    tmp.write_text("partial")
    assert is_temporary(tmp.name) and not is_temporary(target.name)
    run_study(bids, load_config(cfg), out_dir=out, progress=False)
    assert not tmp.exists()
    assert not [p for p in out.rglob("*") if is_temporary(p.name)]
    assert sweep_temporaries(out) == []


def test_changed_config_removes_what_it_no_longer_produces(study_copy, tmp_path):
    bids, cfg, out = study_copy
    assert list(out.glob("sub-*/ses-*/pet/*_model-mrtm2_bpnd.nii.gz"))
    assert list((out / "group" / "voxel").glob("*stat-t.nii.gz"))
    (out / "report.html").write_text("<html>old report</html>")
    os.utime(out / "report.html", (1e9, 1e9))  # built after the earlier run, before this one
    text = cfg.read_text().replace('map_model = "mrtm2"\n', 'map_model = ""\n')
    text = text.replace("[statistics.voxel]\n", "[statistics.voxel]\nenabled = false\n")
    new_cfg = tmp_path / "study2.toml"
    new_cfg.write_text(text)
    run_study(bids, load_config(new_cfg), out_dir=out, progress=False)
    assert not list(out.glob("sub-*/ses-*/pet/*_model-mrtm2_*"))
    assert not list((out / "group").rglob("*voxel*/*"))
    assert not (out / "report.html").exists()
    prov = json.loads((out / "group" / "provenance.json").read_text())
    removed = prov["removed_outputs"]
    assert "report.html" in removed
    assert any(r.endswith("_model-mrtm2_bpnd.nii.gz") for r in removed)
    assert any(r.startswith("group/voxel/") for r in removed)
    assert prov["previous_config_sha256"] != prov["config_sha256"]
    # what the new config produces is all there
    for f in out.glob("sub-*/ses-*/pet/*_provenance.json"):
        for rel in json.loads(f.read_text())["outputs"]:
            assert (out / rel).exists()


def test_lock_held_by_another_process_makes_the_cli_run_fail_at_once(study_copy, capsys):
    import subprocess
    import sys
    import time

    from petbind.cli import main

    bids, cfg, out = study_copy
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from petbind.study.outdir import lock_output\n"
         f"with lock_output(Path({str(out)!r})):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        with pytest.raises(SystemExit) as e:
            main(["run", str(bids), "--config", str(cfg), "--out", str(out), "--no-progress"])
        assert e.value.code == 2 and time.perf_counter() - t0 < 10
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "another petbind run" in err
    finally:
        holder.kill()
        holder.wait()


def test_files_written_by_this_run_are_never_removed_as_stale(tmp_path):
    import time
    from types import SimpleNamespace

    from petbind.study.outdir import remove_stale_outputs

    out = tmp_path / "out"
    (out / "group" / "voxel").mkdir(parents=True)
    old = out / "group" / "voxel" / "trc-X_model-logan_stat-t.nii.gz"
    new = out / "group" / "power.tsv"  # another step's output, in no list
    kept = out / "group" / "outcomes.tsv"
    for f in (old, new, kept):
        f.write_text("x")
    t_run = time.time()
    os.utime(old, (t_run - 3600, t_run - 3600))
    os.utime(kept, (t_run - 3600, t_run - 3600))
    scan_dir = out / "sub-01" / "pet"
    scan_dir.mkdir(parents=True)
    (scan_dir / "S_provenance.json").write_text(json.dumps({"outputs": {
        "sub-01/pet/S_fits.tsv": "0"}}))
    (scan_dir / "S_fits.tsv").write_text("x")
    (scan_dir / "S_run-2_provenance.json").write_text(json.dumps({"outputs": {
        "sub-01/pet/S_run-2_fits.tsv": "0"}}))
    stale_map = scan_dir / "S_model-logan_bpnd.nii.gz"
    other = scan_dir / "S_run-2_fits.tsv"  # another scan's (longer stem)
    for f in (stale_map, other):
        f.write_text("x")
        os.utime(f, (t_run - 3600, t_run - 3600))
    scans = [SimpleNamespace(rel_dir="sub-01/pet", stem="S"),
             SimpleNamespace(rel_dir="sub-01/pet", stem="S_run-2")]
    removed = remove_stale_outputs(out, scans, [kept], config_changed=False, started=t_run)
    assert sorted(removed) == ["group/voxel/trc-X_model-logan_stat-t.nii.gz",
                               "sub-01/pet/S_model-logan_bpnd.nii.gz"]
    assert new.exists() and kept.exists() and other.exists()
    assert not (out / "group" / "voxel").exists()  # emptied folder removed


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path):
    out = tmp_path / "derivatives" / "mine"
    with pytest.raises(RuntimeError), lock_output(out):
        raise RuntimeError("discovery failed")
    assert not out.exists()
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("x")
    with lock_output(out):
        pass
    assert (out / "keep.txt").exists()
