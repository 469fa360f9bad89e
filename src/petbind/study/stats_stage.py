"""Study stages of the statistics beyond the paired tests (the numbers live in ``stats/``).

- :func:`write_fit_qc`: ``group/fit_qc.tsv`` and ``group/model_comparison.tsv``
  from every scan's ``_fits.tsv`` and ``_desc-fitted_tacs.tsv``;
- :func:`write_design_statistics`: ``group/retest.tsv`` (repeated runs),
  ``group/occupancy.tsv`` + ``group/lassen.tsv`` (``statistics.blocked_conditions``)
  and ``group/mixed_design.tsv`` (``statistics.group`` / ``covariates``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from petbind.io.atomic import write_text_atomic
from petbind.io.tables import read_typed_tsv


def _read(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    return read_typed_tsv(path, default_na=True, booleans=False)


def _tag(df: pd.DataFrame, scan: Any) -> pd.DataFrame:
    df = df.copy()
    df.insert(0, "run", scan.run if scan.run is not None else float("nan"))
    df.insert(0, "tracer", scan.tracer)
    df.insert(0, "condition", scan.condition)
    df.insert(0, "subject", scan.subject)
    return df


def write_fit_qc(scans: list[Any], out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compute and write the fit QC and model comparison tables of a study.

    Parameters
    ----------
    scans : list of Scan
        The study's scans (:func:`petbind.study.discover.discover_scans`).
    out_dir : Path
        Output root (``group/`` is written).

    Returns
    -------
    qc, comparison : DataFrame
    """
    from petbind.stats.fit_qc import fit_qc, model_comparison
    from petbind.study.pipeline import scan_dir

    fits, curves = [], []
    for s in scans:
        folder = scan_dir(out_dir, s)
        f = _read(folder / f"{s.stem}_fits.tsv")
        if f is None:
            continue
        fits.append(_tag(f, s))
        c = _read(folder / f"{s.stem}_desc-fitted_tacs.tsv")
        if c is not None:
            curves.append(_tag(c, s))
    if not fits:
        return pd.DataFrame(), pd.DataFrame()
    qc = fit_qc(pd.concat(fits, ignore_index=True),
                pd.concat(curves, ignore_index=True) if curves else None)
    comp = model_comparison(qc)
    group = Path(out_dir) / "group"
    tsv = {"sep": "\t", "index": False, "na_rep": "n/a", "float_format": "%.6g"}
    write_text_atomic(group / "fit_qc.tsv", qc.to_csv(**tsv))
    write_text_atomic(group / "model_comparison.tsv", comp.to_csv(**tsv))
    return qc, comp


def _tsv(df: pd.DataFrame) -> str:
    return df.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g")


def write_design_statistics(outcomes: pd.DataFrame, stats_in: pd.DataFrame, config: Any,
                            out_dir: Path, bids: Path) -> list[str]:
    """Test-retest, occupancy / Lassen and the group-covariate mixed model, when they apply.

    Parameters
    ----------
    outcomes : DataFrame
        The outcome table (runs kept: test-retest uses them).
    stats_in : DataFrame
        One row per subject x condition x tracer x region x model (runs
        merged), with the group / covariate columns when configured.
    config : StudyConfig
    out_dir : Path
    bids : Path
        BIDS root (participants.tsv / sessions.tsv for the mixed model).

    Returns
    -------
    list of str
        The files written, relative to ``out_dir``.
    """
    from petbind.stats.design import attach_covariates, mixed_design_statistics
    from petbind.stats.occupancy import occupancy_statistics
    from petbind.stats.reliability import retest_statistics

    st = config.statistics
    group = Path(out_dir) / "group"
    written = []
    rt = retest_statistics(outcomes, alpha=st.alpha)
    if len(rt):
        write_text_atomic(group / "retest.tsv", _tsv(rt))
        written.append("group/retest.tsv")
    if st.blocked_conditions:
        per, las = occupancy_statistics(stats_in, baseline=st.baseline_condition,
                                        blocked=list(st.blocked_conditions), alpha=st.alpha)
        write_text_atomic(group / "occupancy.tsv", _tsv(per))
        write_text_atomic(group / "lassen.tsv", _tsv(las))
        written += ["group/occupancy.tsv", "group/lassen.tsv"]
    if st.group or st.covariates:
        if any(c not in stats_in for c in [*st.covariates, *(["group"] if st.group else [])]):
            stats_in = attach_covariates(stats_in, bids, group=st.group,
                                         covariates=st.covariates)
        parts = []
        for tracer, tc in config.tracers.items():
            sub = stats_in[(stats_in["tracer"] == tracer)
                           & (stats_in["model"] == tc.primary_model)]
            if len(sub):
                parts.append(mixed_design_statistics(
                    sub, config.contrasts, baseline=st.baseline_condition, group=st.group,
                    covariates=list(st.covariates), alpha=st.alpha))
        if parts:
            write_text_atomic(group / "mixed_design.tsv",
                              _tsv(pd.concat(parts, ignore_index=True)))
            written.append("group/mixed_design.tsv")
    return written
