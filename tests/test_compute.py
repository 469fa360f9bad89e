"""The compute adapter: one set of --scheduler words, dependencies honoured on every
engine, an unreachable scheduler named, and a CLI that imports no heavy library."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from petbind.compute import Scheduler, Task, open_engine, parse_scheduler, usable_cpus
from petbind.errors import PetbindError

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.mark.parametrize(("word", "expected"), [
    (None, Scheduler("sync")),
    ("sync", Scheduler("sync")),
    ("none", Scheduler("sync")),
    ("threads", Scheduler("threads")),
    ("threads:3", Scheduler("threads", workers=3)),
    ("local", Scheduler("local")),
    ("LOCAL:2", Scheduler("local", workers=2)),
    ("127.0.0.1:8786", Scheduler("address", address="tcp://127.0.0.1:8786")),
    ("scheduler.example.org:8786", Scheduler("address",
                                             address="tcp://scheduler.example.org:8786")),
    ("tcp://10.0.0.5:8786", Scheduler("address", address="tcp://10.0.0.5:8786")),
])
def test_every_command_word_parses_to_one_scheduler(word, expected):
    assert parse_scheduler(word) == expected


def test_the_default_word_is_the_callers():
    assert parse_scheduler(None, default="threads") == Scheduler("threads")


@pytest.mark.parametrize("word", ["thread", "local:0", "threads:x", "8786", "cluster", 3.5])
def test_unknown_words_are_errors_naming_the_option(word):
    with pytest.raises(PetbindError) as e:
        parse_scheduler(word)
    assert e.value.field == "--scheduler"
    assert e.value.fix


def test_a_client_like_object_is_used_as_is():
    class FakeClient:
        def submit(self): ...
        def scatter(self): ...

    c = FakeClient()
    spec = parse_scheduler(c)
    assert spec.kind == "client" and spec.client is c


def _graph(log: list[str], lock: threading.Lock, pause: float) -> list[Task]:
    def work(name: str) -> str:
        with lock:
            log.append(f"start {name}")
        time.sleep(pause)
        with lock:
            log.append(f"end {name}")
        return name.upper()

    # b and c wait for a; d waits for b and c; e is free
    return [Task("d", work, ("d",), after=("b", "c")),
            Task("b", work, ("b",), after=("a",)),
            Task("a", work, ("a",)),
            Task("c", work, ("c",), after=("a",)),
            Task("e", work, ("e",))]


@pytest.mark.parametrize("word", ["sync", "threads:3"])
def test_tasks_start_only_after_the_tasks_they_wait_for(word):
    log: list[str] = []
    seen: list[tuple[str, str]] = []
    with open_engine(word) as engine:
        out = engine.run(_graph(log, threading.Lock(), 0.05),
                         lambda t, r: seen.append((t.key, r)))
    assert out == {k: k.upper() for k in "abcde"}
    assert sorted(seen) == sorted(out.items())
    pos = {e: i for i, e in enumerate(log)}
    for task, waits in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
        assert pos[f"start {task}"] > pos[f"end {waits}"], log
    if word == "sync":
        # in-process: given order where the dependencies allow it, one at a time
        assert [e for e in log if e.startswith("start")] == [
            "start a", "start e", "start b", "start c", "start d"]


def test_threads_run_independent_tasks_at_the_same_time():
    log: list[str] = []
    tasks = [Task(k, lambda k=k: (log.append(f"start {k}"), time.sleep(0.3),
                                  log.append(f"end {k}"))) for k in "xy"]
    with open_engine("threads:2") as engine:
        engine.run(tasks)
    assert log.index("start y") < log.index("end x") or log.index("start x") < log.index("end y")


def test_a_cycle_or_an_unknown_dependency_is_refused():
    with open_engine("sync") as engine:
        with pytest.raises(ValueError, match="cycle"):
            engine.run([Task("a", str, after=("b",)), Task("b", str, after=("a",))])
        with pytest.raises(ValueError, match="unknown"):
            engine.run([Task("a", str, after=("z",))])


def test_a_failing_task_raises_its_own_error():
    def bad() -> None:
        raise PetbindError("broken scan", field="x", fix="y")

    for word in ("sync", "threads:2"):
        with open_engine(word) as engine, pytest.raises(PetbindError, match="broken scan"):
            engine.run([Task("ok", int), Task("bad", bad, after=("ok",))])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_an_error_naming_the_address_and_the_fix():
    port = _free_port()
    t = time.monotonic()
    with pytest.raises(PetbindError) as e, open_engine(f"127.0.0.1:{port}",
                                                       connect_timeout_s=1.0):
        pass
    assert time.monotonic() - t < 20
    assert f"tcp://127.0.0.1:{port}" in str(e.value)
    assert e.value.field == "--scheduler"
    assert "dask scheduler" in e.value.fix and "--scheduler local" in e.value.fix


@pytest.mark.parametrize("command", ["run", "parametric"])
def test_cli_reports_an_unknown_scheduler_word_in_one_line_before_any_work(tmp_path, command):
    env = {**os.environ, "PYTHONPATH": SRC}
    args = {"run": [str(tmp_path / "no-such-dataset")],
            "parametric": [str(tmp_path / "no_pet.nii.gz"), "--ref-tac", "x.tsv:cb"]}[command]
    done = subprocess.run([sys.executable, "-m", "petbind", command, *args,
                           "--scheduler", "bogus-word"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "unknown scheduler 'bogus-word'" in done.stderr and "--scheduler" in done.stderr


def test_threads_default_to_the_usable_cpus():
    with open_engine("threads") as engine:
        assert engine.n_workers == usable_cpus()
        assert engine.describe() == f"threads ({usable_cpus()} workers)"


FORBIDDEN = ("dask", "distributed", "SimpleITK", "dipy", "matplotlib", "pandas")


def test_importing_the_cli_imports_no_heavy_library():
    env = {**os.environ, "PYTHONPATH": SRC}
    code = ("import sys, petbind.cli; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('petbind'))))")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    traced = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
              if line.startswith("import time:")}
    assert "petbind.cli" in traced
    # every command is registered (importlib.import_module is not traced by -X importtime)
    assert {"petbind.commands.run", "petbind.commands.parametric"} <= set(done.stdout.split())
    heavy = sorted(m for m in traced if m.split(".")[0] in FORBIDDEN)
    assert not heavy, heavy
    code = ("import sys, petbind.cli; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout


def _slow_value(v: int) -> int:
    time.sleep(0.2)
    return v


def test_two_runs_with_the_same_task_names_on_one_cluster_keep_their_own_results():
    from concurrent.futures import ThreadPoolExecutor

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}) as cluster, \
            Client(cluster, set_as_default=False) as client, \
            open_engine(client) as engine:
        assert engine.describe().startswith("dask distributed")

        def one(v: int) -> dict:
            return engine.run([Task("same-name", _slow_value, (v,))])

        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(one, (1, 2))
    assert a == {"same-name": 1} and b == {"same-name": 2}


def test_a_local_cluster_runs_the_graph_in_worker_processes():
    import dask

    with open_engine("local:2", n_tasks=2) as engine:
        assert engine.n_workers == 2 and not engine.shares_memory
        out = engine.run([Task("a", os.getpid), Task("b", os.getpid, after=("a",)),
                          Task("omp", os.getenv, ("OMP_NUM_THREADS",)),
                          Task("itk", os.getenv, ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",)),
                          Task("trim", os.getenv, ("MALLOC_TRIM_THRESHOLD_",)),
                          Task("mmap", os.getenv, ("MALLOC_MMAP_THRESHOLD_",)),
                          Task("profile", dask.config.get,
                               ("distributed.worker.profile.enabled",))])
    assert os.getpid() not in (out["a"], out["b"])
    # one thread per worker for OpenMP/BLAS and ITK: parallelism is across tasks
    assert out["omp"] == "1" and out["itk"] == "1"
    # freed memory stays with the worker (not distributed's 64 KiB trim threshold)
    assert int(out["trim"]) >= 2**27 and int(out["mmap"]) >= 2**24
    # no statistical profiler: its call trees grew a worker's RSS with the run's length
    assert out["profile"] is False


def test_a_shared_local_scheduler_is_one_cluster_for_several_runs():
    from petbind.compute import shared_scheduler

    with shared_scheduler("sync") as word:
        assert word == "sync"
    with shared_scheduler("local:1") as client:
        pids = []
        for _ in range(2):  # two runs, as petbind demo's two analyses
            with open_engine(client) as engine:
                pids.append(engine.run([Task("pid", os.getpid)])["pid"])
    assert pids[0] == pids[1] != os.getpid()


def _nbytes(a: np.ndarray) -> int:
    return int(a.nbytes)


def test_large_task_arguments_do_not_print_distributed_advice():
    # a report figure's data or a subject's geometry travels as a task argument (a few
    # MiB): distributed's "Sending large graph" UserWarning is not the user's to act on
    import warnings

    from distributed import Client, LocalCluster

    big = np.ones(12 * 2**20 // 8)  # 12 MiB, over distributed's 10 MB advice threshold
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}) as cluster, \
            Client(cluster, set_as_default=False) as client, \
            open_engine(client) as engine, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = engine.run([Task("n", _nbytes, (big,))])
    assert out == {"n": big.nbytes}
    assert not [w for w in seen if "large graph" in str(w.message)], [str(w.message) for w in seen]


def test_threads_run_without_importing_dask():
    # the thread engine is a pool of this process's threads: `petbind parametric` on its
    # default scheduler pays no dask import (issue 18)
    env = {**os.environ, "PYTHONPATH": SRC}
    code = ("import sys; from petbind.compute import Task, open_engine\n"
            "with open_engine('threads:2') as e:\n"
            "    out = e.run([Task('a', int, ('7',)), Task('b', int, ('8',), after=('a',))])\n"
            "print(out, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dask', 'distributed')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'a': 7, 'b': 8} []"


def test_after_a_failure_on_threads_no_waiting_task_starts():
    started: list[str] = []

    def bad() -> None:
        started.append("bad")
        raise PetbindError("broken scan", field="x", fix="y")

    tasks = [Task("bad", bad), *[Task(f"t{i}", started.append, (f"t{i}",), after=("bad",))
                                 for i in range(5)]]
    with open_engine("threads:2") as engine, pytest.raises(PetbindError, match="broken"):
        engine.run(tasks)
    assert started == ["bad"]


def _stamp(name: str) -> tuple[str, float, float]:
    start = time.monotonic()
    time.sleep(0.02)
    return name, start, time.monotonic()


@pytest.mark.parametrize("limit", [1, 2])
def test_max_in_flight_submits_the_next_task_as_one_finishes(limit):
    # the sign-flip test's slab tasks carry 16 MiB of values each: a cluster must not get
    # them all at once (each is sent to a worker, with its arguments, when submitted)
    from distributed import Client, LocalCluster

    submitted: list[int] = []
    finished: list[str] = []
    # b and c wait for a; d waits for b and c; the rest are free
    tasks = [Task("d", _stamp, ("d",), after=("b", "c")), Task("b", _stamp, ("b",), after=("a",)),
             Task("a", _stamp, ("a",)), Task("c", _stamp, ("c",), after=("a",)),
             *[Task(f"free{i}", _stamp, (f"free{i}",)) for i in range(5)]]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}) as cluster, \
            Client(cluster, set_as_default=False) as client, \
            open_engine(client) as engine:
        real = client.submit

        def counting(*args, **kwargs):
            submitted.append(1)
            assert len(submitted) - len(finished) <= limit
            return real(*args, **kwargs)

        client.submit = counting
        out = engine.run(tasks, lambda t, r: finished.append(t.key), max_in_flight=limit)
    assert sorted(out) == sorted(t.key for t in tasks)
    assert all(out[k][0] == k for k in out)
    assert len(submitted) == len(tasks) == len(finished)
    for task, waits in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
        assert out[task][1] >= out[waits][2]


def test_release_free_heap_returns_a_workers_kept_heap_to_the_system():
    """Under the workers' malloc settings, freed 1-MiB arrays stay in RSS until the trim."""
    import subprocess
    import sys

    from petbind.compute import WORKER_MALLOC_ENV

    code = (
        "import numpy as np\n"
        "from petbind.compute import release_free_heap\n"
        "def rss():\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS'))"
        ".split()[1]) // 1024\n"
        "base = rss()\n"
        "arrays = [np.ones(2**17) for _ in range(150)]\n"   # 150 x 1 MiB from the heap
        "del arrays\n"
        "kept = rss()\n"
        "print(base, kept, release_free_heap(), rss())\n"
    )
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc (Linux)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **WORKER_MALLOC_ENV}, check=True).stdout.split()
    base, kept, released, after = int(out[0]), int(out[1]), out[2] == "True", int(out[3])
    assert kept - base > 100          # the freed arrays are kept by malloc (MiB)
    assert released and after < kept - 100


def test_a_cluster_task_gives_the_free_heap_back_after_it_ran_and_after_it_failed(monkeypatch):
    from petbind import compute

    calls = []
    monkeypatch.setattr(compute, "release_free_heap", lambda: calls.append(1) or True)
    assert compute._call_after(lambda a, b=0: a + b, (2,), {"b": 3}) == 5
    with pytest.raises(ZeroDivisionError):
        compute._call_after(lambda: 1 / 0, (), {})
    assert calls == [1, 1]


def test_a_shared_local_scheduler_starts_its_cluster_only_when_used(monkeypatch):
    import petbind.compute as compute

    started = []

    @contextlib.contextmanager
    def fake_cluster(n):
        started.append(n)
        yield SimpleNamespace(nthreads=lambda: {"w1": 1, "w2": 1}, submit=None, scatter=None)

    monkeypatch.setattr(compute, "_local_cluster", fake_cluster)
    with compute.shared_scheduler("local:2") as lazy:
        assert compute.parse_scheduler(lazy).kind == "client"  # passed on as a client
        assert not lazy.started and started == []
    assert started == []  # nothing used it: no worker process
    with compute.shared_scheduler("local:2") as lazy:
        with open_engine(lazy) as engine:  # a stage with work opens an engine on it
            assert engine.n_workers == 2
        with open_engine(lazy):
            pass
        assert lazy.started
    assert started == [2]  # one cluster for every stage


def test_start_soon_starts_the_cluster_in_the_background_once(monkeypatch):
    import threading

    import petbind.compute as compute

    started, closed = [], []
    go = threading.Event()

    @contextlib.contextmanager
    def slow_cluster(n):
        go.wait(timeout=10)  # the start takes a while: the caller goes on meanwhile
        started.append(threading.current_thread().name)
        yield SimpleNamespace(nthreads=lambda: {"w1": 1}, submit=None, scatter=None)
        closed.append(n)

    monkeypatch.setattr(compute, "_local_cluster", slow_cluster)
    with compute.shared_scheduler("local:2") as lazy:
        lazy.start_soon()
        lazy.start_soon()  # one start
        assert not lazy.started  # the caller was not held up
        go.set()
        client = lazy.client  # waits for the start under way
        assert lazy.started and lazy.client is client
    assert started == ["petbind-cluster-start"] and closed == [2]
    # a start that fails in the background is retried, and raises, at the first use
    fails = [RuntimeError("no ports"), None]

    @contextlib.contextmanager
    def flaky(n):
        err = fails.pop(0)
        if err is not None:
            raise err
        yield SimpleNamespace(nthreads=lambda: {"w1": 1}, submit=None, scatter=None)

    monkeypatch.setattr(compute, "_local_cluster", flaky)
    lazy = compute.LazyClient(1)
    lazy.start_soon()
    lazy._starter.join()
    assert not lazy.started
    assert lazy.client is not None and fails == []
    lazy.close()


def test_petbind_run_starts_the_cluster_early_only_when_its_report_will_use_it(monkeypatch,
                                                                               tmp_path):
    import petbind.compute as compute
    from petbind.commands import run as run_cmd

    soon = []
    monkeypatch.setattr(compute.LazyClient, "start_soon", lambda self: soon.append(
        self.n_workers))

    def stop(*a, **k):
        raise SystemExit(0)

    import petbind.study.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run_study", stop)
    cfg = tmp_path / "study.toml"
    from petbind.study.config import DEFAULT_CONFIG

    cfg.write_text(DEFAULT_CONFIG)
    for sched, no_report, want in (("local:2", False, [2]), ("local:2", True, []),
                                   ("local:1", False, []), ("sync", False, [])):
        soon.clear()
        with pytest.raises(SystemExit):
            run_cmd.run(tmp_path, config=cfg, out=tmp_path / "out", scheduler=sched,
                        print_config=False, no_progress=True, no_report=no_report)
        assert soon == want, (sched, no_report)


def test_a_failed_task_on_a_local_cluster_prints_no_worker_traceback(tmp_path, capfd):
    from petbind.errors import PetbindError
    from petbind.io.bids import load_pet

    missing = tmp_path / "sub-01_pet.nii.gz"
    from petbind.compute import shared_scheduler

    with shared_scheduler("local:1") as lazy, open_engine(lazy) as engine:
        with pytest.raises(PetbindError, match="sidecar is missing"):
            engine.run([Task("scan", load_pet, (str(missing),))])
    err = capfd.readouterr().err  # the worker processes write to this process's stderr
    assert "Traceback" not in err and "Compute Failed" not in err, err
