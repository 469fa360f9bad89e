"""The study graph on a real multi-process dask cluster: a ``dask scheduler`` and two
``dask worker`` processes started here (loopback only), preprocessing included.

Outputs must be byte-identical to the in-process run, and a worker SIGKILLed in the
middle of the run, while the scheduler lists a task as running on it, must not corrupt
them: the scheduler reruns its task on the other worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from petbind.compute import WORKER_ENV
from petbind.study.config import parse_config
from petbind.study.pipeline import run_study

from . import prep_dataset as ds
from .conftest import tree_digest

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[2] / "src")
DASK = [sys.executable, "-m", "dask"]
#: Files that differ between runs by design (timestamps, wall times, the command line).
SKIP = ("group/provenance.json", ".petbind.lock")  # the lock: the run's, not an output


_BY_CONTENT = (".h5", ".json")


def _normalised(obj, root: str):
    """A JSON record with the output root replaced by ``OUT`` and without the SHA-256 of
    files compared by content (``.h5`` transforms, JSON records; see :func:`_differences`)."""
    if isinstance(obj, dict):
        return {k.replace(root, "OUT"): _normalised(v, root) for k, v in obj.items()
                if not (str(k).endswith(_BY_CONTENT) or (
                    k == "sha256" and str(obj.get("path", "")).endswith(_BY_CONTENT)))}
    if isinstance(obj, list):
        return [_normalised(v, root) for v in obj]
    return obj.replace(root, "OUT") if isinstance(obj, str) else obj


def _differences(ref: Path, out: Path, skip_names: set[str] = frozenset()) -> list[str]:
    """Files of ``out`` that differ from ``ref`` (or exist in only one of them).

    Byte equality for every file except where a run's own facts enter: ITK's HDF5
    transform files (``.h5``) store object time stamps, so two in-process runs already
    write different bytes for the same transform (their parameters are compared,
    exactly); and JSON records, which name files under the output folder and hold the
    SHA-256 of files that do (compared with the output folder replaced and without the
    hashes of files that are themselves compared by content). Every NIfTI and TSV
    output must be byte-identical.
    """
    import SimpleITK as sitk

    a = tree_digest(ref, SKIP)
    b = {k: v for k, v in tree_digest(out, SKIP).items() if k not in skip_names}
    bad = sorted(set(a) ^ set(b))
    for k in sorted(set(a) & set(b)):
        if a[k] == b[k]:
            continue
        if k.endswith(".h5"):
            ta, tb = (sitk.ReadTransform(str(r / k)) for r in (ref, out))
            same = (ta.GetParameters() == tb.GetParameters()
                    and ta.GetFixedParameters() == tb.GetFixedParameters())
        elif k.endswith(".json"):
            ja, jb = (_normalised(json.loads((r / k).read_text()), str(r.resolve()))
                      for r in (ref, out))
            same = ja == jb
        else:
            same = False
        if not same:
            bad.append(k)
    return bad


def _wait(pred, timeout_s: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        for p in procs:
            assert p.poll() is None, f"{what}: a dask process exited ({p.args})"
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.1)


class _Cluster:
    """``dask scheduler`` + N ``dask worker`` processes on 127.0.0.1; stopped on close."""

    def __init__(self, folder: Path, n_workers: int = 2) -> None:
        self.env = {**os.environ, **WORKER_ENV, "PYTHONPATH": SRC,
                    "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.log = folder / "dask.log"
        sfile = folder / "scheduler.json"
        self._logf = self.log.open("w")
        self.procs.append(subprocess.Popen(
            [*DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sfile)], env=self.env, stdout=self._logf,
            stderr=subprocess.STDOUT))
        _wait(lambda: sfile.exists() and sfile.stat().st_size > 0, 60, "scheduler",
              self.procs)
        self.address = json.loads(sfile.read_text())["address"]
        for i in range(n_workers):
            self.add_worker(f"w{i}")
        self.wait_workers(n_workers)

    def add_worker(self, name: str) -> subprocess.Popen:
        # --no-nanny: the worker is the process we kill (a nanny would restart it)
        p = subprocess.Popen(
            [*DASK, "worker", self.address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--host", "127.0.0.1", "--name", name,
             "--death-timeout", "60"], env=self.env, stdout=self._logf,
            stderr=subprocess.STDOUT)
        self.procs.append(p)
        self.workers.append(p)
        return p

    def busy_worker(self, client) -> tuple[subprocess.Popen, list[str]] | None:
        """A worker process that is running (or holds queued) tasks now, with their keys."""
        info = client.scheduler_info()["workers"]
        for address, keys in client.processing().items():
            name = info.get(address, {}).get("name")
            if keys and isinstance(name, str) and name.startswith("w"):
                return self.workers[int(name[1:])], [str(k) for k in keys]
        return None

    def wait_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s", set_as_default=False) as c:
            c.wait_for_workers(n, timeout=120)

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self._logf.close()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The preprocessing test study (2 subjects x 2 conditions, native poses, motion, T1w)
    and its in-process outputs."""
    root = tmp_path_factory.mktemp("cluster_study")
    raw = ds.build(root / "raw", aligned=False)
    cfg = parse_config(tomllib.loads(ds.STUDY + ds.PREPROCESS))
    res = run_study(raw, cfg, out_dir=root / "inprocess", progress=False)
    return {"raw": raw, "cfg": cfg, "ref": res.out_dir, "root": root}


@pytest.fixture
def cluster(tmp_path):
    c = _Cluster(tmp_path, 2)
    try:
        yield c
    finally:
        c.close()


def test_scheduler_and_two_worker_processes_give_the_in_process_outputs(study, cluster,
                                                                       tmp_path):
    out = tmp_path / "out"
    res = run_study(study["raw"], study["cfg"], out_dir=out, scheduler=cluster.address,
                    progress=False)
    assert not res.warnings or all("moved" in w for w in res.warnings)
    assert (out / "preprocess/sub-01/anat").is_dir()
    assert _differences(study["ref"], out) == []
    prov = json.loads((out / "group" / "provenance.json").read_text())
    assert prov["skipped_scans"] == []


def test_a_worker_killed_mid_run_does_not_corrupt_the_outputs(study, cluster, tmp_path):
    out = tmp_path / "out"
    (study["root"] / "study.toml").write_text(ds.STUDY + ds.PREPROCESS)
    cmd = [sys.executable, "-m", "petbind", "run", str(study["raw"]), "--config",
           str(study["root"] / "study.toml"), "--out", str(out), "--no-progress",
           "--no-report", "--scheduler", cluster.address]
    env = {**os.environ, "PYTHONPATH": SRC}
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    from distributed import Client

    victim = None
    try:
        with Client(cluster.address, timeout="30s", set_as_default=False) as client:
            # once a subject is registered (outputs exist, scans are being processed),
            # kill a worker while the scheduler says it is running a task
            def busy() -> bool:
                nonlocal victim
                if not any(out.glob("preprocess/sub-*/anat/*_provenance.json")):
                    return False
                victim = cluster.busy_worker(client)
                return victim is not None

            _wait(busy, 300, "a worker busy after the first subject registration", [run])
            proc, _keys = victim
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            # the scheduler notices the lost worker and gives its tasks to the other one
            _wait(lambda: len(client.scheduler_info()["workers"]) == 1, 60,
                  "the scheduler dropping the killed worker")
        _, stderr = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, stderr[-3000:]
    assert victim[0].returncode == -signal.SIGKILL, victim   # killed holding victim[1]
    # the killed worker may leave its unfinished temporary files (".NAME.XXXX.part"),
    # never a partial file under an output's name; .petbind.lock is the run's advisory lock
    temp = {k for k in tree_digest(out) if Path(k).name.startswith(".")}
    assert all(".part" in Path(k).name or Path(k).name == ".petbind.lock" for k in temp), temp
    assert _differences(study["ref"], out, temp) == []
