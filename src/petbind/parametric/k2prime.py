"""k2' for MRTM2 / SRTM2 / Logan maps from voxel curves (the voxel-specific part only)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import DataError, ModelError
from petbind.timing import FrameTiming

#: Fraction of voxels (highest late tissue/reference ratio) forming the default
#: high-binding region for k2' "auto" / "pooled".
K2PRIME_TOP_FRACTION = 0.02


def _map_policy(k2prime: Any) -> Any:
    """The map's k2' policy (:func:`petbind.models.k2prime.parse_k2prime`)."""
    from petbind.models.k2prime import parse_k2prime

    return parse_k2prime(k2prime, field="k2prime")


def _late_ratio(curves_t: NDArray[np.float32], ref: NDArray[np.float64],
                timing: FrameTiming) -> NDArray[np.float64]:
    """Duration-weighted late (mid >= half the scan) tissue / reference ratio per voxel.

    ``np.einsum("t,tv->v", w, curves_t, dtype=np.float64) / (w . ref)`` by blocks of
    voxels on the usable CPUs (:func:`petbind.parametric.chunks._by_blocks`; the same
    per-voxel arithmetic).
    """
    from petbind.parametric.chunks import _by_blocks

    late = timing.mid >= 0.5 * timing.end[-1]
    w = timing.duration * late
    den = float(np.dot(w, ref))
    out = np.empty(curves_t.shape[1], dtype=np.float64)

    def part(a: int, b: int) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[a:b] = np.einsum("t,tv->v", w, curves_t[:, a:b], dtype=np.float64) / den

    _by_blocks(curves_t.shape[1], part)
    return out


def estimate_k2prime(
    curves: ArrayLike,
    ref_tac: ArrayLike,
    timing: FrameTiming,
    *,
    model: str = "mrtm2",
    method: str = "auto",
    top_fraction: float = K2PRIME_TOP_FRACTION,
    region: ArrayLike | None = None,
    usable: ArrayLike | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[float, dict[str, Any]]:
    """Estimate k2' (1/min) for MRTM2 / SRTM2 / Logan from voxel curves.

    The voxel-specific part only: which voxels form the high-binding region
    (a user region, else the top ``top_fraction`` by late tissue/reference
    ratio, never an unusable row) and whether they are averaged (``auto``)
    or fitted one by one (``pooled``). The fit and the pooling are the
    engine's :func:`petbind.models.k2prime.estimate_k2prime`, the same
    function the region-level pipeline calls.

    Parameters
    ----------
    curves : array_like, shape (V, n_frames)
        Voxel (or region) curves in kBq/mL, all finite.
    ref_tac : array_like, shape (n_frames,)
        Reference curve (kBq/mL).
    timing : FrameTiming
        Frames.
    model : str
        The model k2' is for: ``srtm2`` uses SRTM for the estimate (Wu &
        Carson 2002); every other model uses MRTM (Ichise et al. 2003).
    method : {"auto", "pooled"}
        ``"auto"``: fit the mean curve of the high-binding voxels; ``"pooled"``:
        the median of voxelwise MRTM k2' over the valid high-binding voxels.
    top_fraction : float
        Fraction of voxels (highest late tissue-to-reference ratio) forming
        the high-binding region, when ``region`` is not given.
    region : array_like of bool, shape (V,), optional
        Voxels of a user-chosen high-binding region instead.
    usable : array_like of bool, shape (V,), optional
        Rows that may be used (default all); the others (non-finite, no
        signal) are never selected. Lets a caller pass a view of all its
        curves instead of a filtered copy.
    settings : mapping, optional
        Settings passed to the model used for the estimate (window, weights).

    Returns
    -------
    k2prime : float
        Estimated k2' in 1/min.
    info : dict
        How it was obtained (method, model used, number of voxels), for sidecars.
    """
    ref = np.asarray(ref_tac, dtype=np.float64)
    c = np.asarray(curves)
    if c.ndim != 2 or c.shape[1] != timing.n_frames:
        raise DataError(f"curves must be (V, {timing.n_frames}), got {c.shape}",
                        field="curves", fix="give voxel curves on the image's frames")
    ok = (np.ones(c.shape[0], dtype=bool) if usable is None
          else np.asarray(usable, dtype=bool))
    if region is not None:
        sel = np.flatnonzero(np.asarray(region, dtype=bool) & ok)
        rule = "user region"
    else:
        if not 0 < top_fraction <= 1:
            raise DataError(f"top_fraction must lie in (0, 1], got {top_fraction}",
                            field="top_fraction", fix="use e.g. 0.02")
        with np.errstate(invalid="ignore"):
            ratio = np.where(ok, _late_ratio(c.T, ref, timing), -np.inf)
        n_top = min(max(1, round(top_fraction * int(ok.sum()))), int(ok.sum()))
        sel = np.argpartition(-ratio, n_top - 1)[:n_top] if n_top else np.zeros(0, int)
        rule = (f"top {top_fraction:g} of voxels by late (mid >= half the scan) "
                "tissue/reference ratio")
    if sel.size == 0:
        raise DataError("the high-binding region for k2' has no voxels", field="k2prime",
                        fix="give k2' as a number or a larger region")
    from petbind.models.k2prime import K2PrimePolicy
    from petbind.models.k2prime import estimate_k2prime as engine_estimate

    # the catalogue's estimator for ``model``; "mrtm" / "srtm" name it directly
    est_model = K2PrimePolicy("auto").estimator(model) if model not in ("mrtm", "srtm") \
        else model
    kw = dict(settings or {})
    kw.pop("k2prime", None)
    info: dict[str, Any] = {"method": method, "model": est_model, "region_rule": rule,
                            "n_voxels": int(sel.size)}
    if method == "auto":
        region_tac = np.mean(c[sel], axis=0, dtype=np.float64)[None, :]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k2, _ = engine_estimate(timing, ref, region_tac, method=est_model, **kw)
    elif method == "pooled":
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k2, eng = engine_estimate(timing, ref, np.asarray(c[sel], dtype=np.float64),
                                      method=est_model, high_binding=np.arange(sel.size),
                                      **kw)
        info["n_valid"] = len(eng["selected"])
        info["pool"] = "median"
    else:
        raise ModelError(f"unknown k2' method {method!r}", field="k2prime",
                         fix="use a number, 'auto' or 'pooled'")
    info["k2prime"] = k2
    return k2, info
