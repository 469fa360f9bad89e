"""The report's partial-volume-correction part: corrected beside uncorrected % changes.

Reads ``summary.json``'s ``pvc`` entry (method, PSF, atlas, assumptions, GTM
condition numbers, mean recovery per region, and the primary models' rows of
``group/desc-pvc_roi_stats.tsv``) beside its ``highlights`` (the same rows
uncorrected). Absent when the run had no ``[pvc]``.
"""

from __future__ import annotations

from typing import Any


def _pct(x: Any, ci: tuple[Any, Any]) -> str:
    if x is None:
        return "n/a"
    lo, hi = ci
    tail = f" [{lo:+.1f}, {hi:+.1f}]" if lo is not None and hi is not None else ""
    return f"{x:+.1f}{tail}"


def pvc_section(study: Any) -> dict[str, Any] | None:
    """Context of the report's PVC table, or None without partial-volume correction.

    Returns
    -------
    dict or None
        ``summary`` (what PVC assumed, one paragraph), ``recovery`` (region,
        coefficient), ``rows`` (tracer, contrast, region, uncorrected,
        corrected, truth, flags), ``has_truth``.
    """
    from petbind.pvc.summary import compare, describe

    pvc = (study.summary or {}).get("pvc")
    if not pvc or not pvc.get("highlights"):
        return None
    rows = compare(study.summary.get("highlights") or [], pvc["highlights"])
    has_truth = any(r["pct_true"] is not None for r in rows)
    out = []
    for r in rows:
        out.append({
            "tracer": r["tracer"], "contrast": r["contrast"], "region": r["region"],
            "raw": _pct(r["pct_raw"], r["ci_raw"]), "pvc": _pct(r["pct_pvc"], r["ci_pvc"]),
            "truth": "n/a" if r["pct_true"] is None else f"{r['pct_true']:+.1f}",
            "in_ci": r["truth_in_ci_pvc"], "closer": r["pvc_closer"]})
    return {"summary": describe(pvc), "rows": out, "has_truth": has_truth,
            "recovery": sorted((pvc.get("recovery") or {}).items(), key=lambda x: x[1])}
