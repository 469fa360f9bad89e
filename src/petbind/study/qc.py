"""The study stage that writes ``group/fit_qc.tsv`` and ``group/model_comparison.tsv``.

Reads every scan's ``_fits.tsv`` and ``_desc-fitted_tacs.tsv`` and hands them
to :mod:`petbind.stats.fit_qc` (which does the numbers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from petbind.io.atomic import write_text_atomic


def _read(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True)


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
