"""Blood samples: checked, merged (autosampler + manual), decay-corrected, dispersion-corrected.

Steps 1-4 of :mod:`petbind.blood`."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import ConfigError, DataError
from petbind.isotopes import Isotope, get_isotope
from petbind.timing import TIME_TOL_MIN


# ----------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------
def check_samples(
    t: ArrayLike,
    y: ArrayLike,
    *,
    path: str | None = None,
    time_field: str = "time",
    value_field: str = "value",
    fraction: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate one recording: times strictly increasing, values finite and physical.

    Parameters
    ----------
    t : array_like, shape (K,)
        Sample times in minutes after injection.
    y : array_like, shape (K,)
        Activity (kBq/mL), or a fraction when ``fraction`` is true.
    path : str, optional
        The blood file, named in errors.
    time_field, value_field : str
        Column names in that file, named in errors.
    fraction : bool
        Values are fractions (parent fraction, plasma/blood ratio is *not* one):
        they must lie in [0, 1].

    Returns
    -------
    (t, y) : tuple of ndarray
        Float copies.

    Raises
    ------
    DataError
        Empty, lengths differ, non-finite values, unsorted or repeated times,
        negative activity, fractions outside [0, 1].
    """
    t = np.asarray(t, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if t.size == 0:
        raise DataError("no samples", path=path, field=time_field,
                        fix="give at least one blood sample")
    if t.size != y.size:
        raise DataError(f"{t.size} times but {y.size} values", path=path, field=value_field,
                        fix="give one value per sample time")
    for arr, name in ((t, time_field), (y, value_field)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise DataError(f"non-finite value in row {bad[0] + 1}", path=path, field=name,
                            fix="remove the sample or give its measured value")
    dec = np.flatnonzero(np.diff(t) <= 0)
    if dec.size:
        i = int(dec[0])
        raise DataError(
            f"sample times are not strictly increasing (row {i + 2}: {t[i + 1]:g} min after "
            f"{t[i]:g} min)", path=path, field=time_field,
            fix="sort the samples by time and merge repeated times")
    if t[0] < -TIME_TOL_MIN:
        raise DataError(f"first sample at {t[0]:g} min, before injection", path=path,
                        field=time_field, fix="times must be relative to injection")
    neg = np.flatnonzero(y < 0)
    if neg.size:
        i = int(neg[0])
        raise DataError(f"negative value {y[i]:g} at {t[i]:g} min (row {i + 1})", path=path,
                        field=value_field,
                        fix="activity and fractions cannot be negative; check background "
                            "subtraction")
    if fraction:
        over = np.flatnonzero(y > 1.0 + 1e-9)
        if over.size:
            i = int(over[0])
            raise DataError(
                f"fraction {y[i]:g} > 1 at {t[i]:g} min (row {i + 1})", path=path,
                field=value_field, fix="give fractions in [0, 1], not percent")
    return t, y


def _with_zero(t: NDArray, y: NDArray) -> tuple[NDArray, NDArray]:
    """Prepend (0, 0) (no activity at injection) when the first sample is later."""
    if t[0] > TIME_TOL_MIN:
        return np.concatenate([[0.0], t]), np.concatenate([[0.0], y])
    return t, y


# ----------------------------------------------------------------------------
# merging, decay, dispersion
# ----------------------------------------------------------------------------
def merge_samples(
    auto: tuple[ArrayLike, ArrayLike],
    manual: tuple[ArrayLike, ArrayLike],
    *,
    prefer: Literal["auto", "manual"] = "auto",
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Merge autosampler and manual samples of the same quantity into one curve.

    Parameters
    ----------
    auto, manual : (t, y)
        Times (min) and activities (kBq/mL) of the two recordings, each sorted.
    prefer : {"auto", "manual"}
        Where the two overlap in time: ``"auto"`` keeps the autosampler over its
        whole span and the manual samples after it (the usual practice: the
        autosampler catches the peak, manual samples the tail);
        ``"manual"`` keeps every manual sample and the autosampler only before
        the first manual sample.

    Returns
    -------
    (t, y) : tuple of ndarray
        Sorted, without repeated times.
    """
    ta, ya = (np.asarray(v, dtype=float) for v in auto)
    tm, ym = (np.asarray(v, dtype=float) for v in manual)
    if prefer == "auto":
        keep = tm > ta[-1] + TIME_TOL_MIN
        t = np.concatenate([ta, tm[keep]])
        y = np.concatenate([ya, ym[keep]])
    elif prefer == "manual":
        keep = ta < tm[0] - TIME_TOL_MIN
        t = np.concatenate([ta[keep], tm])
        y = np.concatenate([ya[keep], ym])
    else:
        raise ConfigError(f"prefer must be 'auto' or 'manual', got {prefer!r}",
                          field="prefer", fix="use 'auto' or 'manual'")
    order = np.argsort(t, kind="stable")
    return t[order], y[order]


def decay_correct_samples(
    t: ArrayLike,
    y: ArrayLike,
    isotope: Isotope | str,
    *,
    from_ref_min: float | None,
    to_ref_min: float = 0.0,
) -> NDArray[np.float64]:
    """Bring blood activities onto the image's decay-correction reference.

    Parameters
    ----------
    t : array_like
        Sample times (min after injection).
    y : array_like
        Activities (kBq/mL).
    isotope : Isotope or str
        Radionuclide.
    from_ref_min : float or None
        Time (min) the samples are decay-corrected to; ``None`` when they are
        not decay-corrected (physical activity at the sampling time).
    to_ref_min : float
        Time (min) the image is decay-corrected to (0: injection, petbind's
        convention).

    Returns
    -------
    ndarray
        Activities decay-corrected to ``to_ref_min``:
        ``y exp(lambda (t - to_ref))`` for uncorrected samples,
        ``y exp(lambda (from_ref - to_ref))`` for corrected ones.
    """
    iso = get_isotope(isotope) if isinstance(isotope, str) else isotope
    lam = iso.decay_constant_per_min
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    ref = t if from_ref_min is None else from_ref_min
    return y * np.exp(lam * (ref - to_ref_min))


def correct_dispersion(t: ArrayLike, y: ArrayLike, tau_min: float) -> NDArray[np.float64]:
    """Undo mono-exponential dispersion in the sampling line: ``C + tau dC/dt``.

    A curve dispersed by the kernel ``exp(-t/tau)/tau`` obeys
    ``C_true = C_meas + tau dC_meas/dt`` (Iida et al. 1986; Meyer 1989). The
    derivative is taken by second-order finite differences (``numpy.gradient``)
    on the sample times, so the samples should be dense (autosampler) and
    smooth; noise in ``y`` is amplified by about ``tau / dt``.

    Parameters
    ----------
    t : array_like, shape (K,)
        Sample times (min), increasing.
    y : array_like, shape (K,)
        Measured (dispersed) activity (kBq/mL).
    tau_min : float
        Dispersion time constant (min), >= 0.

    Returns
    -------
    ndarray, shape (K,)
        Dispersion-corrected activity (kBq/mL); negative values are clipped to 0.
    """
    if tau_min < 0:
        raise ConfigError(f"dispersion time constant {tau_min:g} min < 0",
                          field="dispersion_tau", fix="give tau >= 0 (minutes)")
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if tau_min == 0 or t.size < 3:
        return y.copy()
    return np.maximum(y + tau_min * np.gradient(y, t, edge_order=2), 0.0)


