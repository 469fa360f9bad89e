"""The simulated truths shown beside the estimates: tissue truth, image truth, true maps.

A simulated study (``petbind simulate``) knows the BP_ND it put in: the
tissue value before the scanner's blur (``bp_nd_true`` in ``outcomes.tsv``)
and, when the pipeline fitted the noise-free blurred curves, the image truth
(``bp_nd_true_image``). The voxelwise section compares the estimated mean %
change map with the one computed here from the simulator's true maps
(``derivatives/petbind-sim``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from petbind.report.outputs import StudyOutputs, injected, load_map, read_json


def truth_lookup(outcomes: pd.DataFrame | None,
                  column: str = "bp_nd_true") -> dict[tuple, float]:
    """(subject, condition, tracer, region) -> a truth column of ``outcomes.tsv``."""
    if outcomes is None or column not in outcomes:
        return {}
    keys = ["subject", "condition", "tracer", "region"]
    sub = outcomes.dropna(subset=[column]).drop_duplicates(keys)
    return {tuple(str(v) for v in k): float(t)
            for k, t in zip(sub[keys].itertuples(index=False), sub[column], strict=True)}


#: Outcome column of the image truth: the primary model's fit of the simulator's
#: noise-free, partial-volume-blurred region curves (engineer P's pipeline).
IMAGE_TRUTH = "bp_nd_true_image"


def has_image_truth(study: StudyOutputs) -> bool:
    oc = study.outcomes
    return oc is not None and IMAGE_TRUTH in oc and bool(
        pd.to_numeric(oc[IMAGE_TRUTH], errors="coerce").notna().any())


def contrast_terms(contrast: str) -> dict[str, str | None] | None:
    """``{"a", "b", "c", "d"}`` of ``"A - B"`` (c, d None) or ``"(A - B) - (C - D)"``.

    Read by the study's own contrast parser (:meth:`petbind.stats.roi.Contrast.parse`);
    None when the text is not a contrast.
    """
    from petbind.errors import PetbindError
    from petbind.stats.roi import Contrast

    try:
        terms = Contrast.parse(contrast).terms
    except PetbindError:
        return None
    return dict(zip("abcd", (*terms, None, None)[:4], strict=True))


def contrast_pct(wide: pd.DataFrame, contrast: str) -> float:
    """Mean over subjects of a contrast's per-subject % change in a subject x condition table.

    ``"A - B"``: 100 (A - B) / B; ``"(A - B) - (C - D)"``: 100 (A - B) / B -
    100 (C - D) / D (percentage points), as ``roi_stats.tsv``'s ``pct_change``.
    NaN when the contrast cannot be read or no subject has every condition.
    """
    m = contrast_terms(contrast)
    if m is None:
        return float("nan")
    conds = [c for c in (m["a"], m["b"], m["c"], m["d"]) if c]
    if not set(conds) <= set(wide.columns):
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = 100.0 * (wide[m["a"]] - wide[m["b"]]) / wide[m["b"]]
        if m["c"]:
            pct = pct - 100.0 * (wide[m["c"]] - wide[m["d"]]) / wide[m["d"]]
    pct = pct[np.isfinite(pct.to_numpy(dtype=float))]
    return float(pct.mean()) if len(pct) else float("nan")


def image_truth_pct(study: StudyOutputs) -> dict[tuple[str, str, str, str], float]:
    """(tracer, model, region, contrast) -> % change of the image truth.

    Taken from ``roi_stats.tsv``'s ``pct_change_true_image`` when the pipeline
    writes it, else computed here from ``outcomes.tsv``'s ``bp_nd_true_image``
    the way ``pct_change_true`` is computed from ``bp_nd_true``.
    """
    rs = study.roi_stats
    if rs is None or not len(rs) or not has_image_truth(study):
        return {}
    keys = ["tracer", "model", "region", "contrast"]
    if "pct_change_true_image" in rs:
        return {tuple(str(v) for v in k): float(t) for k, t in zip(
            rs[keys].itertuples(index=False),
            pd.to_numeric(rs["pct_change_true_image"], errors="coerce"), strict=True)}
    oc = study.outcomes
    assert oc is not None  # has_image_truth
    oc = oc.assign(**{IMAGE_TRUTH: pd.to_numeric(oc[IMAGE_TRUTH], errors="coerce")})
    wides = {k: g.pivot_table(index="subject", columns="condition", values=IMAGE_TRUTH,
                              aggfunc="mean")
             for k, g in oc.groupby(["tracer", "model", "region"], sort=False)}
    out = {}
    for tracer, model, region, contrast in rs[keys].astype(str).itertuples(index=False):
        wide = wides.get((tracer, model, region))
        if wide is not None:
            out[(tracer, model, region, contrast)] = contrast_pct(wide, contrast)
    return out


def blur_fwhm(study: StudyOutputs) -> float | None:
    """The scanner's resolution (mm FWHM) from the first input PET sidecar that states it."""
    for scan in study.scans:
        try:
            fwhm = float(injected(study, scan).get("ReconFilterSize"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(fwhm) and fwhm > 0:
            return fwhm
    return None


def truth_note(study: StudyOutputs) -> str | None:
    """Where a simulated truth is shown: what it is, and why estimates fall short of it."""
    if not study.simulated:
        return None
    fwhm = blur_fwhm(study)
    blur = (f"the scanner's {fwhm:g} mm FWHM resolution" if fwhm
            else "the scanner's finite resolution")
    small = ("partial volume mixes small regions such as NAcc and VP with their "
             f"surroundings at {blur}, which dilutes their BP_ND and its % changes")
    if has_image_truth(study):
        return ("Two truths are shown: the tissue value the simulator used (before the "
                "scanner's blur) and the image truth, the primary model's fit of the noise-free "
                f"but blurred region curves (what a perfect analysis of the image gives); {small}"
                ", so estimates scatter around the image truth and fall short of the tissue "
                "truth by about the gap between the two truths (partial volume), the rest being "
                "noise and model error.")
    return (f"The truth is the tissue value before the scanner's blur; {small}, so small "
            "regions' estimates fall short of it even without noise.")


def true_effect_map(
    dataset: Path, tracer: str, contrast: str, subjects: list[str],
    affine: np.ndarray | None = None,
) -> np.ndarray | None:
    """Mean per-subject true % change of BP_ND for a contrast, from the simulator's maps.

    Parameters
    ----------
    dataset : Path
        The simulated BIDS dataset (holds ``derivatives/petbind-sim``).
    tracer : str
        ``trc-`` label.
    contrast : str
        ``"A - B"`` (100 (A - B) / B) or ``"(A - B) - (C - D)"``
        (100 (A - B) / B - 100 (C - D) / D, percentage points), with
        conditions named as session labels.
    subjects : list of str
        Subjects averaged.
    affine : ndarray (4, 4), optional
        The grid the map will be compared on (the estimated effect map's
        affine): when any true map lies on another grid (same shape or not),
        None is returned rather than a map in another space.

    Returns
    -------
    ndarray or None
        The map (NaN where the denominator's true BP_ND is <= 0.01), or None
        when a true map is missing, on another grid than ``affine``, or the
        contrast cannot be read.
    """
    m = contrast_terms(contrast)
    if m is None or not subjects:
        return None
    from petbind.simulate.writer import true_map_path

    def true_map(sub: str, cond: str) -> np.ndarray | None:
        path = true_map_path(dataset, sub, cond, tracer, "bpnd")
        if not path.is_file():
            return None
        data, aff, _ = load_map(path)
        if affine is not None and not np.allclose(aff, affine, atol=1e-3):
            return None
        return data

    def pct(sub: str, a: str, b: str) -> np.ndarray | None:
        va, vb = true_map(sub, a), true_map(sub, b)
        if va is None or vb is None or va.shape != vb.shape:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(vb > 0.01, 100.0 * (va - vb) / vb, np.nan)

    per_subject = []
    for sub in subjects:
        first = pct(sub, m["a"], m["b"])
        if first is None:
            return None
        if m["c"]:
            second = pct(sub, m["c"], m["d"])
            if second is None or second.shape != first.shape:
                return None
            first = first - second
        per_subject.append(first)
    return np.mean(per_subject, axis=0)


def native_truth(dataset: Path, subjects: list[str]) -> bool:
    """Whether the simulator placed any of ``subjects`` away from the template.

    True when ``derivatives/petbind-sim/sub-X/anat/sub-X_desc-true_xfm.json``
    exists with a ``Matrix`` other than the identity (the simulator's
    ``[anatomy] native_position = true``): the true maps are then in each
    subject's native PET space, which may share the template grid's shape and
    affine while holding the brain elsewhere.
    """
    from petbind.simulate.writer import true_xfm_path

    for sub in subjects:
        path = true_xfm_path(dataset, sub)
        if not path.is_file():
            continue
        matrix = read_json(path).get("Matrix")
        try:
            if not np.allclose(np.asarray(matrix, dtype=float), np.eye(4), atol=1e-6):
                return True
        except (TypeError, ValueError):
            return True  # unreadable: assume it moves the subject
    return False
