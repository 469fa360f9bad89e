"""The whole chain on the recordings :func:`petbind.io.blood.read_blood` returns."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from petbind.blood.input import InputFunction, build_input_function
from petbind.blood.metabolites import PlasmaBloodRatio, fit_parent_fraction
from petbind.blood.samples import (
    check_samples,
    correct_dispersion,
    decay_correct_samples,
    merge_samples,
)
from petbind.errors import DataError
from petbind.isotopes import Isotope


# ----------------------------------------------------------------------------
# recordings -> input function
# ----------------------------------------------------------------------------
def _column(rec: Any, name: str) -> tuple[NDArray, NDArray] | None:
    v = getattr(rec, "columns", {}).get(name)
    if v is None:
        return None
    v = np.asarray(v, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return None
    return np.asarray(rec.time, dtype=float)[ok], v[ok]


def _is_auto(rec: Any) -> bool:
    return "auto" in str(getattr(rec, "recording", "")).lower()


def input_from_recordings(
    recordings: list[Any],
    *,
    parent_model: Literal["auto", "interp", "hill", "exponential", "power"] = "auto",
    ratio_model: Literal["constant", "linear", "interp"] = "constant",
    isotope: Isotope | str | None = None,
    dispersion_tau_min: float = 0.0,
    grid_step_min: float = 0.1,
    delay_min: float = 0.0,
) -> InputFunction:
    """The continuous input function from BIDS blood recordings.

    Parameters
    ----------
    recordings : list of BloodRecording
        What :func:`petbind.io.blood.read_blood` returns (``recording``,
        ``time`` in min, ``columns`` in kBq/mL and fractions, ``metadata``,
        ``path``); typically one manual and one autosampler recording.
    parent_model : str
        Parent-fraction model for :func:`fit_parent_fraction` (when a
        recording has ``metabolite_parent_fraction``); ``auto`` picks by AIC.
    ratio_model : {"constant", "linear", "interp"}
        Plasma/blood ratio model, fitted to the samples that have both
        ``plasma_radioactivity`` and ``whole_blood_radioactivity``.
    isotope : Isotope or str, optional
        Radionuclide; needed only for a recording whose sidecar says
        ``"DecayCorrected": false`` (it is then decay-corrected to injection,
        the image convention). Recordings without the field are taken as
        decay-corrected to injection, as BIDS-PET blood data usually are.
    dispersion_tau_min : float
        Dispersion time constant (min) to undo in autosampler recordings whose
        sidecar says ``"DispersionCorrected": false`` (0: none).
    grid_step_min, delay_min : float
        As for :func:`build_input_function`.

    Returns
    -------
    InputFunction
        With ``settings`` recording every choice made.

    Notes
    -----
    Autosampler and manual samples are merged with :func:`merge_samples`
    (autosampler over its span). When whole blood starts earlier than the
    plasma samples (autosampler whole blood, manual plasma), plasma is made
    from whole blood and the fitted plasma/blood ratio; otherwise the plasma
    samples are used and the whole blood serves the v_B term.
    """
    if not recordings:
        raise DataError("no blood recording given", field="--blood",
                        fix="give a *_blood.tsv file")
    paths = [str(getattr(r, "path", None)) for r in recordings]
    source = paths[0] if len(paths) == 1 else ", ".join(paths)
    settings: dict[str, Any] = {"recordings": [getattr(r, "recording", "?")
                                               for r in recordings]}

    def prepared(rec: Any, name: str) -> tuple[NDArray, NDArray] | None:
        col = _column(rec, name)
        if col is None:
            return None
        t, y = check_samples(*col, path=getattr(rec, "path", None), value_field=name)
        md = getattr(rec, "metadata", {}) or {}
        if md.get("DecayCorrected") is False:
            if isotope is None:
                raise DataError("blood values are not decay-corrected and the radionuclide "
                                "is unknown", path=getattr(rec, "path", None),
                                field="DecayCorrected",
                                fix="give the isotope (--isotope C-11)")
            y = decay_correct_samples(t, y, isotope, from_ref_min=None, to_ref_min=0.0)
            settings["decay_corrected_here"] = True
        if _is_auto(rec) and md.get("DispersionCorrected") is False and dispersion_tau_min > 0:
            y = correct_dispersion(t, y, dispersion_tau_min)
            settings["dispersion_tau_min"] = dispersion_tau_min
        return t, y

    def merged(name: str) -> tuple[NDArray, NDArray] | None:
        parts = [(r, prepared(r, name)) for r in recordings]
        parts = [(r, c) for r, c in parts if c is not None]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0][1]
        autos = [c for r, c in parts if _is_auto(r)]
        manuals = [c for r, c in parts if not _is_auto(r)]
        if len(autos) != 1 or len(manuals) != 1:
            raise DataError(f"{len(parts)} recordings give '{name}'; cannot tell the "
                            "autosampler from the manual samples", path=source, field=name,
                            fix="give one manual and one autosampler recording")
        t, y = merge_samples(autos[0], manuals[0])
        return check_samples(t, y, path=source, value_field=name)

    wb = merged("whole_blood_radioactivity")
    pl = merged("plasma_radioactivity")
    ratio = None
    pairs_t, pairs_r = [], []
    for r in recordings:
        both = _column(r, "plasma_radioactivity"), _column(r, "whole_blood_radioactivity")
        if both[0] is None or both[1] is None:
            continue
        tp, yp = both[0]
        tb, yb = both[1]
        common, ip, ib = np.intersect1d(tp, tb, return_indices=True)
        good = yb[ib] > 0
        pairs_t.append(common[good])
        pairs_r.append(yp[ip][good] / yb[ib][good])
    if pairs_t:
        tr = np.concatenate(pairs_t)
        order = np.argsort(tr, kind="stable")
        tr, rr = tr[order], np.concatenate(pairs_r)[order]
        keep = np.concatenate([[True], np.diff(tr) > 0])
        ratio = PlasmaBloodRatio.fit(tr[keep], rr[keep], ratio_model, path=source)
        settings["plasma_blood_ratio"] = {"kind": ratio.kind, "coef": list(ratio.coef)}
    if pl is not None and wb is not None and ratio is not None and wb[0][0] < pl[0][0] - 1e-9 \
            and wb[0].size > pl[0].size:
        pl = None  # dense early whole blood: plasma = ratio x whole blood
    parent = None
    pf = [(r, _column(r, "metabolite_parent_fraction")) for r in recordings]
    pf = [(r, c) for r, c in pf if c is not None]
    if pf:
        r0, (tpf, fpf) = pf[0]
        parent = fit_parent_fraction(tpf, fpf, parent_model, path=getattr(r0, "path", None))
    inp = build_input_function(plasma=pl, whole_blood=wb, ratio=ratio, parent=parent,
                               grid_step_min=grid_step_min, delay_min=delay_min,
                               source=source)
    inp.settings.update(settings)
    if parent is not None:
        inp.settings["parent_aic"] = dict(parent.candidates) or parent.aic
    return inp

