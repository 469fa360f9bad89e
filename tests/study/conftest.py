"""Small simulated studies for the pipeline tests (built once per test session)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

STUDY_TOML = """
[dataset]
atlas = "derivatives/petbind-sim"

[tracers.DASB]
reference_region = "cerebellum"
models = ["srtm", "mrtm2", "logan"]
primary_model = "srtm"
map_model = "mrtm2"
k2prime = "mrtm"
k2prime_region = "midbrain"

[[contrasts]]
expr = "ketamine - baseline"

[statistics.voxel]
cluster_forming_p = 0.05
"""


def small_sim_config(noise: float, fwhm_mm: float, subjects: int = 3):
    """3 subjects x {baseline, ketamine} x DASB on a coarse 4 mm grid (fast)."""
    from petbind.simulate.config import default_config_text, parse_config

    raw = tomllib.loads(default_config_text())
    raw.update(subjects=subjects, tracers=["DASB"], conditions=["baseline", "ketamine"])
    raw["scanner"].update(voxel_mm=4.0, fwhm_mm=fwhm_mm, noise=noise)
    raw["variability"].update(scan_cv_cortex=0.0, scan_cv_subcortex=0.0)
    return parse_config(raw)


def tree_digest(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not any(rel.startswith(s) for s in skip):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def kill_when(cmd: list[str], out: Path, pattern: str, timeout_s: float
              ) -> tuple[list[Path], dict[str, str]]:
    """Run ``cmd``; SIGKILL it as soon as a file matching ``out/pattern`` exists.

    Returns the matching files and the environment the command ran with (for
    the rerun). Fails if the command ends first or nothing appears in time.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + timeout_s
    try:
        while not (found := sorted(out.glob(pattern))):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return found, env


def _build(tmp_path_factory, name: str, noise: float, fwhm: float):
    from petbind.simulate.study import simulate_study
    from petbind.study.config import load_config
    from petbind.study.pipeline import run_study

    root = tmp_path_factory.mktemp(name)
    bids = root / "bids"
    simulate_study(small_sim_config(noise, fwhm), bids)
    cfg_path = root / "study.toml"
    cfg_path.write_text(STUDY_TOML)
    before = tree_digest(bids)
    result = run_study(bids, load_config(cfg_path), progress=False)
    return {"bids": bids, "config": cfg_path, "result": result, "out": result.out_dir,
            "input_before": before}


@pytest.fixture(scope="session")
def noise_free_study(tmp_path_factory):
    """Noise-free, no point-spread: outputs in the default BIDS_DIR/derivatives/petbind."""
    return _build(tmp_path_factory, "noisefree", noise=0.0, fwhm=0.0)


@pytest.fixture(scope="session")
def noisy_study(tmp_path_factory):
    """Noise 10 % at peak and a 2.8 mm point-spread."""
    return _build(tmp_path_factory, "noisy", noise=0.1, fwhm=2.8)
