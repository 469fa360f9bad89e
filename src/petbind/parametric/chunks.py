"""Chunked fitting of voxel curves, in-process, on threads or on dask.

Chunks are independent, so the maps do not depend on the scheduler or the chunk size.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from petbind.models.catalogue import CATALOGUE
from petbind.timing import FrameTiming

#: Largest number of voxels per chunk chosen automatically.
MAX_CHUNK_VOXELS = 100_000
#: Smallest number of voxels per chunk chosen automatically (per-call overhead).
MIN_CHUNK_VOXELS = 2_000
#: Working memory of one model fit, bytes per voxel and frame, beyond the float32
#: curves (``ModelSpec.work_bytes`` of the catalogue, which says how it was measured).
WORK_BYTES = {s.name: int(s.work_bytes) for s in CATALOGUE if s.work_bytes is not None}
#: Floor of the working-memory budget (bytes) for small images.
MIN_WORK_BUDGET = 64 * 2**20


# ----------------------------------------------------------------------------
# models (the engine's registry; nothing re-implemented here)
# ----------------------------------------------------------------------------
def _make_model(name: str, timing: FrameTiming, ref_tac: NDArray[np.float64],
                k2prime: float | None, settings: Mapping[str, Any]) -> Any:
    """Configure a model of the engine's registry for ``ref_tac`` on ``timing``."""
    from petbind.models import make_model

    kw = dict(settings)
    if k2prime is not None:
        kw["k2prime"] = k2prime
    return make_model(name, timing, ref_tac, **kw)


def _fit_params(model: Any, curves: NDArray) -> Any:
    """``model.fit`` on the curves with numerical warnings silenced.

    The float32 view is passed as it is: models that screen their input
    (``screens``) cast it to float64 block by block inside their kernel (the
    frames-by-voxels layout of the gathered curves is the one they read
    fastest); the others cast the chunk to float64 themselves.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(curves)


# ----------------------------------------------------------------------------
# chunked fitting, in-process or on dask
# ----------------------------------------------------------------------------
ChunkOut = tuple[dict[str, NDArray[np.float32]], dict[str, NDArray[np.float32]],
                 NDArray[np.bool_]]


def _fit_chunk(model: Any, block: NDArray, drop: tuple[str, ...]) -> ChunkOut:
    """Fit one (n, n_frames) block; float32 parameters, SEs and validity."""
    fit = _fit_params(model, block)
    valid = np.asarray(fit.valid, dtype=bool).reshape(-1).copy()
    n = valid.size
    params: dict[str, NDArray[np.float32]] = {}
    for k, v in fit.params.items():
        if k in drop:
            continue
        a = np.broadcast_to(v, (n,)).astype(np.float32)
        valid &= np.isfinite(a)
        params[k] = a
    se = {k: np.broadcast_to(v, (n,)).astype(np.float32)
          for k, v in fit.se.items() if k in params}
    bad = ~valid
    if bad.any():
        for d in (params, se):
            for a in d.values():
                a[bad] = np.nan
    return params, se, valid


class _Sink:
    """The float32 maps, one volume per parameter and SE, filled as chunks finish.

    Row ``i`` of the fitted curves is the voxel at flat (C-order) position
    ``where[i]`` of volumes of ``shape``; a chunk's results go straight to those
    positions (NaN, and ``valid`` False, everywhere else). Before, chunks filled
    flat per-voxel arrays that were then copied into fresh volumes: two
    allocations and a scatter per map in the main thread after the fits
    (0.05 s for nine 1 M-voxel maps; issue 18). The values and places are the
    same.
    """

    def __init__(self, shape: tuple[int, ...], where: NDArray[np.intp], first: ChunkOut
                 ) -> None:
        self.where = where
        self.params = {k: np.full(shape, np.nan, dtype=np.float32) for k in first[0]}
        self.se = {k: np.full(shape, np.nan, dtype=np.float32) for k in first[1]}
        self.valid = np.zeros(shape, dtype=bool)

    def put(self, a: int, b: int, out: ChunkOut) -> None:
        at = self.where[a:b]
        for dst, src in ((self.params, out[0]), (self.se, out[1])):
            for k, v in src.items():
                if k in dst:
                    dst[k].reshape(-1)[at] = v
        self.valid.reshape(-1)[at] = out[2]


def _run_chunks(
    model: Any,
    block: Callable[[int, int], NDArray],
    ranges: list[tuple[int, int]],
    sink: _Sink,
    drop: tuple[str, ...],
    engine: Any,
    tick: Callable[[int], None],
) -> str:
    """Fit every ``(a, b)`` range of curves on ``engine`` and store the results in ``sink``.

    In-process and on threads (:attr:`petbind.compute.Engine.shares_memory`)
    each task reads its block (a view or a small copy of the gathered curves)
    and writes its own rows of the outputs; on a cluster the blocks travel to
    the workers and the results are stored as they come back. Chunks are
    independent, so the outputs do not depend on the scheduler or the chunk
    size.
    """
    from petbind.compute import Task

    if engine.shares_memory:
        def task(a: int, b: int) -> int:
            sink.put(a, b, _fit_chunk(model, block(a, b), drop))
            return b - a

        tasks = [Task(f"petbind-parametric-chunk-{i}", task, (a, b))
                 for i, (a, b) in enumerate(ranges)]
        engine.run(tasks, lambda _t, n: tick(n))
        return engine.describe()
    m = engine.scatter(model)
    where = {}
    tasks = []
    for i, (a, b) in enumerate(ranges):
        key = f"petbind-parametric-chunk-{i}"
        where[key] = (a, b)
        tasks.append(Task(key, _fit_chunk, (m, block(a, b), drop)))

    def store(t: Any, out: ChunkOut) -> None:
        a, b = where[t.key]
        sink.put(a, b, out)
        tick(b - a)

    engine.run(tasks, store)
    return engine.describe()


#: Voxels per block of :func:`_by_blocks` (29 frames of float32: a 4 MB slice, 1 MB of
#: boolean temporaries).
COLUMN_BLOCK = 32_768


def _by_blocks(n: int, part: Callable[[int, int], None]) -> None:
    """``part(a, b)`` for consecutive column blocks ``[a, b)`` of ``n`` voxels, on the
    usable CPUs (numpy releases the GIL in the ufuncs and einsum ``part`` runs).

    For per-voxel arithmetic over the gathered curves: each voxel's result does
    not depend on the block it falls in, so the results equal the whole-array
    computation, without its frames x voxels temporaries.
    """
    from petbind.compute import usable_cpus

    starts = range(0, n, COLUMN_BLOCK)
    if len(starts) < 2 or usable_cpus() < 2:
        for a in starts:
            part(a, min(a + COLUMN_BLOCK, n))
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(usable_cpus(), len(starts)),
                            thread_name_prefix="petbind-blocks") as pool:
        list(pool.map(lambda a: part(a, min(a + COLUMN_BLOCK, n)), starts))


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread while chunks run (measured faster, and no oversubscription).

    The products inside the fits are small (n_frames x n_frames or x basis
    size); OpenBLAS's own threads cost more than they give there, and with
    one dask thread per CPU they would oversubscribe the machine.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _auto_chunk(model: str, n_good: int, n_frames: int, n_workers: int,
                input_bytes: int) -> int:
    """Voxels per chunk: working memory of all workers within half the float32 input.

    ``n_workers * chunk * n_frames * WORK_BYTES[model] <= max(input / 2, 64 MiB)``,
    clipped to [:data:`MIN_CHUNK_VOXELS`, :data:`MAX_CHUNK_VOXELS`] and to an
    equal share per worker, so that every worker has a chunk.
    """
    per_voxel = n_frames * WORK_BYTES.get(model, 200)
    budget = max(input_bytes // 2, MIN_WORK_BUDGET)
    chunk = budget // (per_voxel * max(n_workers, 1))
    chunk = int(np.clip(chunk, MIN_CHUNK_VOXELS, MAX_CHUNK_VOXELS))
    share = -(-n_good // max(n_workers, 1))
    return max(1, min(chunk, share))
