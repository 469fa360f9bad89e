"""One compute adapter: where petbind's tasks run (in-process, threads, dask).

Every command that fans work out (``petbind run``, ``petbind demo``,
``petbind parametric``) takes the same ``--scheduler`` words, parsed here
by :func:`parse_scheduler`, and runs its work through :func:`open_engine`:

=====================  ====================================================
word                   where the tasks run
=====================  ====================================================
``sync``               in this process, one after another (alias ``none``)
``threads[:N]``        a pool of N threads in this process (default: the
                       usable CPUs; no dask)
``local[:N]``          a dask ``LocalCluster`` on this machine: N worker
                       processes of one thread each (default: the usable
                       CPUs, at most one per task)
``HOST:PORT``          a running ``dask scheduler`` at that address
``tcp://HOST:PORT``    (workers started with ``dask worker ADDRESS``)
=====================  ====================================================

A library caller may also pass a ``distributed.Client``. Work is a list of
:class:`Task` with dependencies (a scan's task waits for its subject's
registration), run as one dask graph on a cluster, on a pool of threads
(each task once its predecessors are done), or in topological order
in-process, so the results do not depend on where they ran. Worker
processes that this module starts run with one thread each for BLAS, OpenMP
and ITK (``OMP_NUM_THREADS`` etc.), the pipeline's tasks keep SimpleITK
single-threaded themselves (bit-identical registrations), and a task whose
worker dies is rerun by the dask scheduler on another worker.

dask and distributed are imported only when a cluster is used (``local``,
an address or a client), so a command that runs in this process (``sync``,
``threads``) does not pay for them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from petbind.errors import PetbindError

#: The ``--scheduler`` help text shared by every command.
SCHEDULER_HELP = ("Where the work runs: 'sync' (this process), 'threads[:N]' (threads in this "
                  "process), 'local[:N]' (N worker processes on this machine) or HOST:PORT / "
                  "tcp://HOST:PORT of a running 'dask scheduler'.")
#: Environment of worker processes started by ``local``: one thread per worker for every
#: numerical library (the parallelism is across tasks; nested threads oversubscribe the CPUs
#: and make ITK's registration metrics sum in a thread-dependent order).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "NUMEXPR_NUM_THREADS": "1"}
#: glibc malloc settings of worker processes started by ``local`` (set before they start, in
#: place of distributed's ``MALLOC_TRIM_THRESHOLD_=65536``): arrays up to 32 MiB (a scan's
#: 4-D image) come from the heap and freed memory is kept for the next task instead of being
#: returned to the system and faulted in again, zero-filled, at every allocation. With
#: distributed's setting the realistic demo's workers spent 69 s of CPU in the kernel
#: against 6 s in-process (issue 18; a loop of 15 MB numpy arrays: 2.8 s of system time
#: against 0.05 s with these settings).
WORKER_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(256 * 2**20),
                     "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}
#: dask settings of worker processes started by ``local``: no statistical profiler. It keeps
#: a call tree of every second of work for an hour, for dask's dashboard (which petbind
#: does not open): drawing the 128-scan cohort's report on 2 fresh workers, their RSS crept
#: from 178 to 190 MiB and peaked at 206 / 194 MiB with it, stayed at 163 and peaked at
#: 178 / 176 MiB without it (issue 18), and its sampling thread took about 1-2 CPU-s of the
#: workers' 33 each. A ``dask worker`` started by hand gets the same with
#: ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False`` in its environment.
WORKER_DASK_CONFIG = {"distributed.worker.profile.enabled": False}
#: Seconds to wait for a scheduler at an address before giving up.
CONNECT_TIMEOUT_S = 10.0
_KINDS = ("sync", "threads", "local", "address", "client")


def usable_cpus() -> int:
    """CPUs this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - platforms without affinity


@dataclass(frozen=True)
class Scheduler:
    """A parsed ``--scheduler`` value.

    Attributes
    ----------
    kind : str
        ``sync``, ``threads``, ``local``, ``address`` or ``client``.
    workers : int or None
        Threads (``threads``) or worker processes (``local``); None = automatic.
    address : str or None
        ``tcp://HOST:PORT`` of a running scheduler (``address``).
    client : distributed.Client or None
        An existing client (``client``); not owned, never closed here.
    """

    kind: str
    workers: int | None = None
    address: str | None = None
    client: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown scheduler kind {self.kind!r}")


def _bad(value: Any, where: str) -> PetbindError:
    return PetbindError(f"unknown scheduler {value!r}", field=where,
                        fix="use 'sync', 'threads', 'threads:N', 'local', 'local:N', a dask "
                            "scheduler address HOST:PORT / tcp://HOST:PORT, or (from Python) a "
                            "distributed.Client")


def parse_scheduler(value: Any, *, default: str = "sync",
                    where: str = "--scheduler") -> Scheduler:
    """The one parser of ``--scheduler`` words (see the module docstring).

    Parameters
    ----------
    value : None, str, Scheduler or distributed.Client
        None means ``default``.
    default : str
        The command's default word (``run``: ``sync``; ``parametric``: ``threads``).
    where : str
        Option or argument name for error messages.

    Raises
    ------
    PetbindError
        Unknown word, or a worker count that is not a positive integer.
    """
    if isinstance(value, Scheduler):
        return value
    if value is None:
        value = default
    if not isinstance(value, str):
        if hasattr(value, "submit") and hasattr(value, "scatter"):
            return Scheduler("client", client=value)
        raise _bad(value, where)
    s = value.strip()
    low = s.lower()
    if low in ("sync", "synchronous", "single-threaded", "none", "in-process"):
        return Scheduler("sync")
    head, _, tail = low.partition(":")
    if head in ("threads", "local"):
        if not tail:
            return Scheduler(head)
        if not tail.isdigit() or int(tail) < 1:
            raise PetbindError(f"the number of {head} workers must be a positive integer, "
                               f"got {tail!r}", field=where, fix=f"e.g. {head}:2")
        return Scheduler(head, workers=int(tail))
    if "://" in s:
        return Scheduler("address", address=s)
    host, sep, port = s.rpartition(":")
    if sep and host and port.isdigit():
        return Scheduler("address", address=f"tcp://{s}")
    raise _bad(value, where)


@dataclass
class Task:
    """One unit of work.

    Attributes
    ----------
    key : str
        Unique name (a dask key: shown on the dashboard and in errors).
    func : callable
        Called as ``func(*args, **kwargs)``; must be picklable for clusters.
    args, kwargs
        Its arguments.
    after : tuple of str
        Keys of tasks that must finish first (their results are not passed).
    """

    key: str
    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()


def _ordered(tasks: Sequence[Task]) -> list[Task]:
    """Tasks in a dependency order, keeping the given order where free (Kahn's algorithm)."""
    by_key = {t.key: t for t in tasks}
    if len(by_key) != len(tasks):
        raise ValueError("task keys must be unique")
    for t in tasks:
        for d in t.after:
            if d not in by_key:
                raise ValueError(f"task {t.key} waits for unknown task {d}")
    done: set[str] = set()
    out: list[Task] = []
    pending = list(tasks)
    while pending:
        ready = [t for t in pending if all(d in done for d in t.after)]
        if not ready:
            raise ValueError("the tasks' dependencies form a cycle")
        for t in ready:
            out.append(t)
            done.add(t.key)
        pending = [t for t in pending if t.key not in done]
    return out


def release_free_heap() -> bool:
    """Return this process's free heap memory to the system (glibc ``malloc_trim(0)``).

    Worker processes keep up to 256 MiB of freed heap between allocations
    (:data:`WORKER_MALLOC_ENV`), which saves the kernel's zero-filling inside a
    task but leaves a worker's RSS at its largest task plus that heap for the
    rest of the run. Called once after each task on a cluster
    (:func:`_call_after`): the next task faults its memory in again once, not
    at every allocation.

    Returns
    -------
    bool
        True if memory was returned; False if none was, or the C library has
        no ``malloc_trim`` (not glibc).
    """
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False


@functools.cache
def _libc() -> Any:
    """The C library, found once per process (``find_library`` runs ``ldconfig`` in a
    child process at each call: a fork of a worker at the end of every task)."""
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _call_after(func: Callable[..., Any], args: tuple, kwargs: dict, *_after: Any) -> Any:
    """Run ``func`` once the tasks it waits for (``_after``, ignored) are done; then give
    the worker's free heap back (:func:`release_free_heap`)."""
    try:
        return func(*args, **kwargs)
    finally:
        release_free_heap()


class Engine:
    """An open place to run tasks (from :func:`open_engine`).

    Attributes
    ----------
    scheduler : Scheduler
    n_workers : int
        Parallel workers (threads or processes) the tasks can use.
    shares_memory : bool
        True when tasks run in this process (``sync``, ``threads``), so a task
        may write its results into arrays of the caller.
    client : distributed.Client or None
    """

    def __init__(self, scheduler: Scheduler, n_workers: int, client: Any = None) -> None:
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.client = client
        self.shares_memory = scheduler.kind in ("sync", "threads")

    def describe(self) -> str:
        """One line for logs and sidecars (e.g. ``threads (2 workers)``)."""
        k = self.scheduler.kind
        if k == "sync":
            return "sync"
        if k == "threads":
            return f"threads ({self.n_workers} workers)"
        if k == "local":
            return f"dask local cluster ({self.n_workers} worker processes)"
        return f"dask distributed ({self.client.scheduler.address})"

    def scatter(self, obj: Any) -> Any:
        """``obj`` ready to be passed to many tasks (sent once to every worker on a cluster)."""
        if self.client is None:
            return obj
        [fut] = self.client.scatter([obj], broadcast=True)
        return fut

    def run(self, tasks: Sequence[Task],
            on_done: Callable[[Task, Any], None] | None = None, *,
            max_in_flight: int | None = None) -> dict[str, Any]:
        """Run every task after the ones it waits for; ``{key: result}``.

        ``on_done(task, result)`` is called in this thread as each task
        finishes (in completion order on dask). The first task that raises
        stops the run and its exception is raised here (a
        :class:`~petbind.errors.PetbindError` keeps its message and fields).

        ``max_in_flight`` (dask clusters): submit at most that many tasks at a
        time, the next one as one finishes (in the given dependency order).
        Tasks submitted one by one are each sent to a worker at once, with
        their arguments, so without a limit a worker holds the arguments of
        every task queued on it (the sign-flip test's slab tasks: each holds
        8 MiB of contrast values). None: every task at once. On a cluster a
        task's result leaves the workers once it is here and no task waits for it.
        """
        order = _ordered(tasks)
        results: dict[str, Any] = {}
        if not order:
            return results

        def done(t: Task, r: Any) -> None:
            results[t.key] = r
            if on_done is not None:
                on_done(t, r)

        if self.scheduler.kind == "sync":
            for t in order:
                done(t, t.func(*t.args, **t.kwargs))
            return results
        if self.scheduler.kind == "threads":
            self._run_threads(order, done)
            return results
        from distributed import as_completed

        # a task's arguments travel in the graph (figure data, a subject's geometry): a
        # few MiB is expected here and distributed's "Sending large graph" advice is
        # not the user's to act on, so it is not printed among the study's messages
        warnings.filterwarnings("ignore", message="Sending large graph",
                                category=UserWarning, module="distributed")
        # one run's keys must not meet another's on a shared scheduler (same names)
        run_id = uuid.uuid4().hex[:8]
        futures: dict[str, Any] = {}
        by_fut: dict[str, Task] = {}
        waited_for = {d for t in order for d in t.after}

        def submit(t: Task) -> Any:
            fut = self.client.submit(
                _call_after, t.func, t.args, t.kwargs, *[futures[d] for d in t.after],
                key=f"{t.key}-{run_id}", pure=False)
            futures[t.key] = fut
            by_fut[fut.key] = t
            return fut

        limit = len(order) if not max_in_flight else max(1, int(max_in_flight))
        later = iter(order[limit:])
        try:
            running = as_completed([submit(t) for t in order[:limit]], loop=self.client.loop)
            for fut in running:
                t = by_fut[fut.key]
                done(t, fut.result())
                if t.key not in waited_for:
                    fut.release()
                nxt = next(later, None)
                if nxt is not None:
                    running.add(submit(nxt))
        finally:
            for fut in futures.values():
                fut.release()
        return results

    def _run_threads(self, order: list[Task], done: Callable[[Task, Any], None]) -> None:
        # A pool of threads in this process runs every task whose predecessors are done;
        # ``done`` is called here, in the caller's thread, as tasks finish. Not dask's
        # threaded scheduler: importing dask cost 0.10-0.2 CPU-s of every
        # ``petbind parametric`` run (issue 18) for what a thread pool does (the tasks
        # and their order of dependencies are the same, so are the results).
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        waiting = {t.key: set(t.after) for t in order}
        after_me: dict[str, list[Task]] = {t.key: [] for t in order}
        for t in order:
            for d in t.after:
                after_me[d].append(t)
        ready = [t for t in order if not waiting[t.key]]
        running: dict[Any, Task] = {}
        with ThreadPoolExecutor(max_workers=self.n_workers,
                                thread_name_prefix="petbind-task") as pool:
            try:
                while ready or running:
                    for t in ready:
                        running[pool.submit(t.func, *t.args, **t.kwargs)] = t
                    ready = []
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        t = running.pop(fut)
                        done(t, fut.result())  # the first failure is raised here
                        for nxt in after_me[t.key]:
                            waiting[nxt.key].discard(t.key)
                            if not waiting[nxt.key]:
                                ready.append(nxt)
            finally:
                for fut in running:  # after a failure: tasks not started never start
                    fut.cancel()


def _connect(address: str, timeout_s: float) -> Any:
    from distributed import Client

    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise PetbindError(
            f"cannot reach the dask scheduler at {address} (no answer within {timeout_s:g} s)",
            field="--scheduler",
            fix=f"start one on that machine ('dask scheduler', then 'dask worker {address}' "
                "on each worker machine), check the host, port and firewall, or run on this "
                "machine with --scheduler local (or sync)") from exc


@contextlib.contextmanager
def open_engine(scheduler: Any, *, n_tasks: int | None = None, default: str = "sync",
                connect_timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Engine]:
    """An :class:`Engine` for ``scheduler`` (any value :func:`parse_scheduler` takes).

    A ``local`` cluster is started (at most one worker per task, ``n_tasks``)
    and shut down on exit; a client made for an address is closed on exit; a
    client passed in is left open.

    Raises
    ------
    PetbindError
        Unknown scheduler word, or no scheduler answering at the address
        (naming the address and how to start one).
    """
    spec = parse_scheduler(scheduler, default=default)
    n_cpu = usable_cpus()
    if spec.kind == "sync":
        yield Engine(spec, 1)
        return
    if spec.kind == "threads":
        yield Engine(spec, spec.workers or n_cpu)
        return
    if spec.kind == "client":
        try:
            n = sum(spec.client.nthreads().values())
        except Exception:  # any client that cannot say: assume the local CPUs
            n = n_cpu
        yield Engine(spec, max(int(n), 1), spec.client)
        return
    if spec.kind == "address":
        client = _connect(spec.address, connect_timeout_s)
        try:
            n = sum(client.nthreads().values()) or 1
            yield Engine(spec, n, client)
        finally:
            client.close()
        return
    n = spec.workers or n_cpu
    if n_tasks is not None:
        n = max(1, min(n, n_tasks))
    with _local_cluster(n) as client:
        yield Engine(spec, n, client)


@contextlib.contextmanager
def _local_cluster(n: int) -> Iterator[Any]:
    """A client of a new ``LocalCluster`` of ``n`` single-threaded worker processes."""
    import dask
    from distributed import Client, LocalCluster

    # malloc settings must be in the environment before a worker process starts
    key = "distributed.nanny.pre-spawn-environ"
    pre_spawn = {**(dask.config.get(key, default=None) or {}), **WORKER_MALLOC_ENV}
    with warnings.catch_warnings(), dask.config.set({key: pre_spawn, **WORKER_DASK_CONFIG}):
        warnings.simplefilter("ignore")
        # a task's failure reaches the caller as its own error (Engine.run raises it, a
        # PetbindError as one line); the workers' own log of it (its traceback, the
        # cancelled tasks after it) would put a traceback on the user's terminal
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, env=dict(WORKER_ENV),
                               silence_logs=logging.CRITICAL)
    client = Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class LazyClient:
    """The ``distributed.Client`` of a ``LocalCluster`` that starts on first use.

    What :func:`shared_scheduler` yields for ``local``: passed around like a
    client (it has ``submit`` and ``scatter``, so :func:`parse_scheduler` reads
    it as one), it starts the cluster only when something uses it, e.g.
    :func:`open_engine` for a stage that has tasks. A rerun over complete
    outputs, which sends no task, starts no worker process.
    """

    def __init__(self, n_workers: int) -> None:
        self.n_workers = n_workers
        self._stack = contextlib.ExitStack()
        self._client: Any = None
        self._lock = threading.Lock()
        self._starter: threading.Thread | None = None

    def start_soon(self) -> None:
        """Start the cluster now, in a background thread, for a caller that will use it
        (``petbind run`` with a report on several workers: its figures are tasks), so
        that the workers start while this process imports, discovers and checks.

        A start that fails there is retried, and its error raised, by the first use.
        """
        if self._client is None and self._starter is None:
            self._starter = threading.Thread(target=self._start_quietly, daemon=True,
                                             name="petbind-cluster-start")
            self._starter.start()

    def _start_quietly(self) -> None:
        with contextlib.suppress(Exception):  # raised again by the first use
            _ = self.client

    @property
    def started(self) -> bool:
        """True once the cluster has been started."""
        return self._client is not None

    @property
    def client(self) -> Any:
        """The started cluster's client (started now if it was not)."""
        with self._lock:  # one cluster, whichever thread asks first
            if self._client is None:
                self._client = self._stack.enter_context(_local_cluster(self.n_workers))
        return self._client

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """``Client.submit`` of the started cluster."""
        return self.client.submit(*args, **kwargs)

    def scatter(self, *args: Any, **kwargs: Any) -> Any:
        """``Client.scatter`` of the started cluster."""
        return self.client.scatter(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy / pickle / repr probes start nothing
            raise AttributeError(name)
        return getattr(self.client, name)

    def close(self) -> None:
        """Shut the cluster down if it was started (waiting for a start under way)."""
        if self._starter is not None:
            self._starter.join()
            self._starter = None
        self._stack.close()
        self._client = None


@contextlib.contextmanager
def shared_scheduler(scheduler: Any, *, default: str = "sync") -> Iterator[Any]:
    """One scheduler for several runs (e.g. ``petbind demo``'s two analyses).

    A ``local`` value yields a :class:`LazyClient`: one ``LocalCluster``, started
    the first time a stage sends it work, so every :func:`open_engine` inside
    reuses the same worker processes (which import petbind and its libraries
    once) instead of starting a cluster per run, and a run with nothing to
    compute starts none; any other value is yielded unchanged.
    """
    spec = parse_scheduler(scheduler, default=default)
    if spec.kind != "local":
        yield scheduler
        return
    lazy = LazyClient(spec.workers or usable_cpus())
    try:
        yield lazy
    finally:
        lazy.close()
