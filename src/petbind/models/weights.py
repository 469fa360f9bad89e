"""Frame weights and fit windows for the kinetic models.

Weights are relative inverse variances of the frame means; only their ratios
matter. Every model multiplies them by a window mask (0 outside
``[start, end]``) so that frames outside the window take no part in the fit,
while the input curve is still used from injection.

Schemes
-------
``uniform``
    ``w_i = 1``.
``duration``
    ``w_i = d_i`` (frame duration, minutes): counts grow with duration.
``counts``
    Decay- and duration-aware Poisson weights. A decay-corrected frame mean
    ``C_i`` of a frame of duration ``d_i`` with decay-correction factor
    ``DF_i`` holds ``C_i d_i / DF_i`` (scaled) true counts, so
    ``var(C_i) ~ C_i DF_i / d_i`` and ``w_i = d_i / (C_i DF_i)``
    (Mazoyer et al. 1986; Turku PET Centre "Weighting of PET data",
    https://www.turkupetcentre.net/petanalysis/model_weighting.html).
    ``C_i`` is a weighting curve shared by the batch (by default the
    reference-region curve), so the weights do not depend on the noise of
    the curve being fitted. Values below 1 % of the curve's maximum are
    raised to that floor.
user-given
    Any array broadcastable to the curves, ``>= 0`` and finite.

All schemes are normalised to mean 1 over the frames used.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import ModelError
from petbind.isotopes import Isotope
from petbind.timing import FrameTiming

#: Names accepted by :func:`frame_weights`.
SCHEMES: tuple[str, ...] = ("uniform", "duration", "counts")


def frame_weights(
    scheme: str | ArrayLike | None,
    timing: FrameTiming,
    *,
    curve: ArrayLike | None = None,
    isotope: Isotope | str | None = None,
    decay_corrected: bool = True,
    window: NDArray[np.bool_] | None = None,
) -> NDArray[np.float64]:
    """Frame weights for a fit.

    Parameters
    ----------
    scheme : {"uniform", "duration", "counts"} or array_like or None
        Weighting scheme, or user weights (shape ``(n_frames,)`` or
        ``(..., n_frames)``). None means uniform.
    timing : FrameTiming
        Frames (minutes).
    curve : array_like, shape (n_frames,), optional
        Weighting curve (kBq/mL, decay-corrected), required for ``counts``.
    isotope : Isotope or str, optional
        Radionuclide, required for ``counts`` when ``decay_corrected``.
    decay_corrected : bool
        Whether ``curve`` is decay-corrected to injection (petbind's
        convention); if False the decay factor is 1.
    window : ndarray of bool, optional
        Frames used; weights are 0 elsewhere.

    Returns
    -------
    ndarray
        Weights, mean 1 over the window, 0 outside.

    Raises
    ------
    ModelError
        Unknown scheme, missing curve or isotope, negative or non-finite
        user weights, or no frame with positive weight.
    """
    n = timing.n_frames
    if scheme is None or (isinstance(scheme, str) and scheme == "uniform"):
        w = np.ones(n)
    elif isinstance(scheme, str) and scheme == "duration":
        w = timing.duration.copy()
    elif isinstance(scheme, str) and scheme == "counts":
        if curve is None:
            raise ModelError("counts weights need a weighting curve", field="weights",
                             fix="give the reference curve or use --weights duration")
        c = np.asarray(curve, dtype=float)
        if c.shape != (n,) or not np.all(np.isfinite(c)) or np.max(c) <= 0:
            raise ModelError("the weighting curve must be finite, positive somewhere and "
                             "have one value per frame", field="weights",
                             fix="use --weights duration")
        c = np.maximum(c, 0.01 * np.max(c))
        if decay_corrected:
            if isotope is None:
                raise ModelError("counts weights of decay-corrected data need the "
                                 "radionuclide", field="TracerRadionuclide",
                                 fix="give the isotope (e.g. --isotope C-11) or use "
                                 "--weights duration")
            df = timing.decay_factors(isotope, 0.0)
        else:
            df = np.ones(n)
        w = timing.duration / (c * df)
    elif isinstance(scheme, str):
        raise ModelError(f"unknown weighting scheme {scheme!r}", field="weights",
                         fix=f"use one of {', '.join(SCHEMES)} or give an array")
    else:
        w = np.array(scheme, dtype=float)
        if w.shape[-1:] != (n,):
            raise ModelError(f"weights have shape {w.shape}, expected (..., {n})",
                             field="weights", fix="give one weight per frame")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ModelError("weights must be finite and >= 0", field="weights",
                             fix="replace NaN or negative weights")
    if window is not None:
        w = w * np.asarray(window, dtype=bool)
    total = np.sum(w, axis=-1, keepdims=True)
    used = np.sum(w > 0, axis=-1, keepdims=True)
    if np.any(total <= 0):
        raise ModelError("no frame has a positive weight inside the window", field="weights",
                         fix="widen --start/--end or check the weights")
    return w * (used / total)


def window_mask(timing: FrameTiming, start: float | None = None,
                end: float | None = None, *, min_frames: int = 1) -> NDArray[np.bool_]:
    """Frames lying wholly inside ``[start, end]`` (minutes after injection).

    Raises
    ------
    ModelError
        If fewer than ``min_frames`` frames fall in the window.
    """
    if start is not None and end is not None and end <= start:
        raise ModelError(f"window end {end:g} min is not after start {start:g} min",
                         field="end", fix="give --start smaller than --end")
    m = timing.window(start, end)
    if int(m.sum()) < min_frames:
        raise ModelError(
            f"only {int(m.sum())} frames lie in the window [{start}, {end}] min; the model "
            f"needs at least {min_frames}", field="start",
            fix=f"widen the window (scan runs {timing.start[0]:g}-{timing.end[-1]:g} min)")
    return m
