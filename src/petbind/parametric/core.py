"""The public entry point: mask, gather, estimate k2', fit in chunks, assemble the maps."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.compute import open_engine, parse_scheduler, usable_cpus
from petbind.errors import DataError, ModelError
from petbind.models.catalogue import CATALOGUE, model_names
from petbind.parametric.chunks import (
    _auto_chunk,
    _by_blocks,
    _fit_chunk,
    _make_model,
    _run_chunks,
    _single_threaded_blas,
    _Sink,
)
from petbind.parametric.images import (
    RefCurve,
    _as_image,
    _as_mask,
    _check_fraction,
    _check_ref,
    _gather,
    _image_path,
    _label_mask,
    _ref_from_any,
    _tac_curve,
    _WholeScan,
)
from petbind.parametric.k2prime import _map_policy, estimate_k2prime
from petbind.parametric.provenance import _background, _hash_inputs
from petbind.parametric.result import ParametricResult
from petbind.parametric.smoothing import check_fwhm, smooth_curves, voxel_sizes
from petbind.parametric.smoothing import describe as describe_smoothing
from petbind.timing import FrameTiming

#: Models a parametric map can use (the catalogue's models with ``work_bytes``).
MAP_MODELS = model_names("reference", mappable=True)
#: Models given the map's k2' (fixed or estimated) unless it is None / "none".
K2PRIME_MODELS = tuple(s.name for s in CATALOGUE if s.mappable and s.k2prime_by_default)
#: Fraction of voxels (highest late tissue/reference ratio) forming the default


def parametric_maps(
    image: Any,
    *,
    model: str = "mrtm2",
    ref_curve: RefCurve | ArrayLike | str | os.PathLike,
    mask: Any = None,
    k2prime: float | str | None = "auto",
    k2prime_region: Any = None,
    chunk_voxels: int | None = None,
    scheduler: Any = None,
    mask_fraction: float = 0.1,
    model_settings: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    pet_fwhm_mm: float = 0.0,
) -> ParametricResult:
    """Fit a reference-tissue model to every voxel of a brain mask.

    Parameters
    ----------
    image : DynamicImage or path
        4D PET image in kBq/mL, decay-corrected to injection (as
        :func:`petbind.io.bids.load_pet` returns it); a path is loaded with it.
    model : str
        One of :data:`MAP_MODELS` (``mrtm2``, ``srtm2``, ``bfsrtm``, ``srtm``,
        ``mrtm``, ``logan``, ``suvr``).
    ref_curve : RefCurve, array_like or path
        Reference region: a :class:`RefCurve`, a 1-D TAC (kBq/mL per frame),
        a 3-D boolean mask on the PET grid, or the path of a mask image.
    mask : array_like, nibabel image or path, optional
        Brain mask on the PET grid (same shape and affine). Default: derived
        by :func:`brain_mask` with ``mask_fraction``.
    k2prime : float, "auto", "pooled", "median", "mrtm@...", "none" or None
        The k2' policy (:mod:`petbind.models.k2prime`) for ``mrtm2``/``srtm2``/
        ``logan`` (ignored by the other models): k2' in 1/min; ``"auto"`` /
        ``"pooled"`` (= ``"median"``) estimate it (:func:`estimate_k2prime`);
        ``"mrtm"`` / ``"srtm"`` fit that model to the mean curve of
        ``k2prime_region``. ``None`` or ``"none"`` runs ``logan`` without the
        k2' term (and is refused for ``mrtm2``/``srtm2``). The policy is
        recorded in the sidecars (``K2PrimeSource``).
    k2prime_region : array_like, image, path or (atlas, name), optional
        A high-binding region for ``"auto"`` / ``"pooled"``: a mask on the PET
        grid or an atlas label as for :class:`RefCurve`; default: the top 2 %
        of voxels by late tissue/reference ratio (see module docs).
    chunk_voxels : int, optional
        Voxels per fitted chunk. Default: chosen so that the working memory of
        all workers stays within half the 4D input in float32 (at least
        64 MiB), between 2,000 and 100,000 voxels, and every worker has a
        chunk (:func:`_auto_chunk`).
    scheduler : None, a ``--scheduler`` word or distributed.Client
        Where chunks run (:func:`petbind.compute.parse_scheduler`). ``None``:
        a pool of threads in this process, one per CPU it may use (no dask;
        in-process when there is one CPU or one chunk); ``"sync"``:
        in-process, one chunk after another; ``"threads:N"``, ``"local[:N]"``,
        a dask scheduler address (``"tcp://host:8786"``) or a
        ``distributed.Client``: there. Results do not depend on it.
    mask_fraction : float
        Fraction of the robust maximum for the derived brain mask.
    model_settings : mapping, optional
        Further model settings (window, weights, t*, basis grid ...), passed
        to the model engine unchanged.
    progress : callable, optional
        ``progress(done_voxels, total_voxels)``, called as chunks finish.
    pet_fwhm_mm : float
        3D Gaussian smoothing (FWHM, mm) of every frame inside the brain mask
        before the fits (:mod:`petbind.parametric.smoothing`); 0 (default): none.
        Recorded in the sidecars (``Settings.pet_smoothing``).

    Returns
    -------
    ParametricResult

    Raises
    ------
    DataError
        Image not 4D; mask or reference mask of another shape or affine;
        empty brain or reference mask; reference curve without signal.
    ModelError
        Unknown model; k2' that cannot be estimated.
    """
    if model not in MAP_MODELS:
        raise ModelError(f"unknown model {model!r} for parametric maps", field="model",
                         fix=f"use one of: {', '.join(MAP_MODELS)}")
    sched = parse_scheduler(scheduler, default="threads" if usable_cpus() > 1 else "sync",
                            where="scheduler")
    if chunk_voxels is not None and int(chunk_voxels) < 1:
        raise DataError(f"chunk_voxels must be >= 1, got {chunk_voxels}",
                        field="chunk_voxels", fix="use e.g. 100000")
    pet_fwhm = check_fwhm(pet_fwhm_mm)
    img = _as_image(image)
    timing: FrameTiming = img.timing
    settings_m = dict(model_settings or {})
    paths: list[str | None] = [_image_path(img)]

    # -- brain mask
    scan: _WholeScan | None = None
    if mask is None:
        # one pass over the scan for the mask and the curves (a .nii.gz decompressed once)
        _check_fraction(mask_fraction)
        scan = _WholeScan(img)
        bmask = scan.brain_mask(fraction=mask_fraction)
        mask_desc: dict[str, Any] = {
            "rule": f"duration-weighted mean image > {mask_fraction:g} x its 99th "
                    "percentile (positive finite voxels), finite in every frame"}
    else:
        bmask, mpath = _as_mask(mask, img, "brain mask")
        paths.append(mpath)
        mask_desc = {"source": mpath or "array"}
    if not bmask.any():
        raise DataError("the brain mask has no voxels", path=mask_desc.get("source"),
                        field="mask", fix="check the mask (or lower mask_fraction)")

    # -- reference
    ref_spec = ref_curve if isinstance(ref_curve, RefCurve) else _ref_from_any(ref_curve)
    ref_mask = None
    ref_where: str | None = None
    if ref_spec.mask is not None:
        ref_mask, ref_where = _as_mask(ref_spec.mask, img, "reference mask")
    elif ref_spec.label is not None:
        ref_mask, ref_where = _label_mask(img, *ref_spec.label)
    if ref_mask is not None and not ref_mask.any():
        raise DataError("the reference region has no voxels", path=ref_where,
                        field="reference", fix="check the reference mask / label name")
    paths.append(ref_where)

    curves_t, ref = (_gather(img, bmask, ref_mask) if scan is None
                     else scan.gather(bmask, ref_mask))
    scan = None
    # the image's SHA-256 (a second pass over the file) runs beside the checks, k2' and
    # the fits: started after the reading, whose threads (read-ahead, gather) use every
    # CPU, and before the single-threaded k2' estimate leaves one idle
    image_hashes = _background(_hash_inputs, paths[:1])
    voxel_mm = voxel_sizes(img.affine)
    smooth_curves(curves_t, bmask, pet_fwhm, voxel_mm)  # in place; nothing when 0
    if ref is None:
        ref, ref_where = _tac_curve(ref_spec.tac, timing)
        paths.append(ref_where)
    _check_ref(ref, ref_where, timing)

    # -- voxels that cannot be fitted
    n_mask = curves_t.shape[1]
    finite, signal = _usable_voxels(curves_t, timing.duration)
    good = finite & signal
    counts = {"n_mask": int(n_mask), "n_nonfinite": int((~finite).sum()),
              "n_no_signal": int((finite & ~signal).sum())}

    # -- k2'
    k2_used: float | None = None
    k2_info: dict[str, Any] = {}
    policy = _map_policy(k2prime)
    if model in K2PRIME_MODELS and policy.kind != "none":
        if policy.estimates:
            if policy.kind == "region" and k2prime_region is None:
                raise ModelError(f"k2' policy {policy.text!r} needs a region", field="k2prime",
                                 fix="give k2prime_region (--k2prime-region): a mask or an "
                                 "atlas label")
            region = None
            if k2prime_region is not None:
                if isinstance(k2prime_region, tuple):
                    rmask, rpath = _label_mask(img, *k2prime_region)
                else:
                    rmask, rpath = _as_mask(k2prime_region, img, "k2' region")
                paths.append(rpath)
                region = rmask[bmask]
            # a view of all mask voxels (no filtered copy), unusable rows excluded
            method = "pooled" if policy.kind == "median" else "auto"
            k2_used, k2_info = estimate_k2prime(
                curves_t.T, ref, timing, model=policy.model or model, method=method,
                region=region, usable=good, settings=settings_m)
            k2_info = policy.describe(**k2_info)
        else:
            k2_used = policy.value
            k2_info = policy.describe(method="user")
    elif model_spec(model).k2prime == "required":
        raise ModelError(f"{model} needs k2'", field="k2prime",
                         fix="give --k2prime VALUE, 'auto' or 'pooled'")
    elif model in K2PRIME_MODELS:
        k2_info = policy.describe()

    fmodel = _make_model(model, timing, ref, k2_used, settings_m)
    drop = ("k2prime",) if k2_used is not None else ()

    # -- chunks of the good voxels: views of the gathered curves where contiguous
    good_idx = np.flatnonzero(good)
    n_total = int(good_idx.size)
    # a cluster at an address or a client says how many workers it has; the others are
    # opened once the chunks are known (a local cluster: at most one worker per chunk)
    stack = contextlib.ExitStack()
    engine = (stack.enter_context(open_engine(sched))
              if sched.kind in ("address", "client") else None)
    n_workers = (engine.n_workers if engine is not None else 1 if sched.kind == "sync"
                 else sched.workers or usable_cpus())
    input_bytes = int(np.prod(img.dataobj.shape)) * 4
    if chunk_voxels is None:
        step = _auto_chunk(model, n_total, timing.n_frames, n_workers, input_bytes)
    else:
        step = max(1, int(chunk_voxels))
    ranges = [(a, min(a + step, n_total)) for a in range(0, n_total, step)]
    if len(ranges) <= 1 and sched.kind == "threads":
        sched = parse_scheduler("sync")

    def block(a: int, b: int) -> NDArray:
        idx = good_idx[a:b]
        if idx[-1] - idx[0] == b - a - 1:
            return curves_t[:, idx[0]:idx[-1] + 1].T
        return curves_t[:, idx].T

    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], n_total)

    # the maps: each fitted voxel's flat position in the volumes (the chunks fill them)
    shape3 = tuple(bmask.shape)
    flat_good = np.flatnonzero(bmask)[good_idx]
    with stack:
        if engine is None:
            engine = stack.enter_context(open_engine(sched, n_tasks=len(ranges)))
        t0 = time.perf_counter()
        c0 = time.process_time()
        sink: _Sink | None = None
        sched_desc = "none"
        if n_total:
            probe = min(n_total, 4)
            with _single_threaded_blas():
                sink = _Sink(shape3, flat_good, _fit_chunk(fmodel, block(0, probe), drop))
                sched_desc = _run_chunks(fmodel, block, ranges, sink, drop, engine, tick)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
    curves_t = np.empty((0, 0), dtype=np.float32)  # release the curves

    maps: dict[str, NDArray[np.float32]] = {} if sink is None else sink.params
    ses: dict[str, NDArray[np.float32]] = {} if sink is None else sink.se
    valid = np.zeros(shape3, dtype=bool) if sink is None else sink.valid
    n_valid = int(valid.sum())
    counts.update(n_fitted=n_total, n_valid=n_valid, n_fit_failed=n_total - n_valid)

    settings = {
        "model": model, "model_settings": settings_m,
        "chunk_voxels": step, "n_chunks": len(ranges), "scheduler": sched_desc,
        "brain_mask": mask_desc, "reference": ref_spec.describe(),
        "pet_smoothing": describe_smoothing(pet_fwhm, voxel_mm),
        "k2prime": k2_used, "k2prime_estimate": k2_info,
        "voxels_not_fitted_rule": "non-finite in any frame, or duration-weighted mean "
                                  "activity <= 0",
    }
    return ParametricResult(
        model=model, maps=maps, se=ses, valid=valid, mask=bmask,
        affine=np.asarray(img.affine, dtype=np.float64), timing=timing, ref_tac=ref,
        k2prime=k2_used, counts=counts, settings=settings,
        inputs=_hash_inputs(paths, image_hashes.result()), elapsed_s=elapsed, cpu_s=cpu)


def _usable_voxels(curves_t: NDArray[np.float32], duration: NDArray[np.float64]
                   ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Per voxel (column of ``curves_t``): finite in every frame; duration-weighted sum > 0.

    ``np.all(np.isfinite(curves_t), axis=0)`` and ``np.einsum("t,tv->v", duration,
    curves_t, dtype=np.float64) > 0``, computed by blocks of voxels on the usable
    CPUs (:func:`~petbind.parametric.chunks._by_blocks`): the same per-voxel
    arithmetic, without a frames x voxels boolean temporary (29 MB for 1 M voxels,
    0.07-0.09 s of page faults and cache misses in the whole command; issue 18).
    """
    n = curves_t.shape[1]
    finite = np.empty(n, dtype=bool)
    signal = np.empty(n, dtype=bool)

    def part(a: int, b: int) -> None:
        block = curves_t[:, a:b]
        finite[a:b] = np.all(np.isfinite(block), axis=0)
        with np.errstate(invalid="ignore"):
            signal[a:b] = np.einsum("t,tv->v", duration, block, dtype=np.float64) > 0

    _by_blocks(n, part)
    return finite, signal


def model_spec(name: str) -> Any:
    """The catalogue entry of a map model (:func:`petbind.models.model_spec`)."""
    from petbind.models.registry import model_spec as spec

    return spec(name)
