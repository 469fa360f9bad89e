"""The pipeline's tables: TSV text, scan columns and the outcome rows.

Every table the pipeline writes goes through :func:`table_text` and is read
back by :func:`petbind.study.layout.read_table`; per-scan tables gain the
scan's ``subject, condition, tracer, run`` columns by :func:`with_scan_columns`;
the outcome tables (``group/outcomes.tsv`` and the partial-volume-corrected
``group/desc-pvc_outcomes.tsv``) are built from the scans' fits tables by
:func:`outcome_rows` and reduced to one row per subject x condition x tracer x
region x model for the statistics by :func:`for_stats`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petbind.study.layout import read_table

#: Columns of ``outcomes.tsv`` taken from the region fits (when the model gives them).
OUTCOME_PARAMS = ("bp_nd", "bp_nd_se", "r1", "k2", "k2prime", "aic", "r2", "valid",
                  "invalid_reason")


def table_text(df: pd.DataFrame) -> str:
    """Deterministic TSV text (``n/a`` for missing, 10 significant digits)."""
    return df.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.10g",
                     lineterminator="\n")


def with_scan_columns(df: pd.DataFrame, scan: Any) -> pd.DataFrame:
    """``df`` (a new frame) led by the scan's ``subject, condition, tracer, run`` columns."""
    df = df.copy()
    df.insert(0, "run", scan.run if scan.run is not None else np.nan)
    df.insert(0, "tracer", scan.tracer)
    df.insert(0, "condition", scan.condition)
    df.insert(0, "subject", scan.subject)
    return df


def outcome_rows(fits: Iterable[tuple[Any, Path]],
                 truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """The outcome table's rows from ``(scan, its fits table)`` pairs (docs/outputs.md).

    Columns ``subject, condition, tracer, run, region, model`` and
    :data:`OUTCOME_PARAMS` (missing ones empty; ``valid`` boolean), then the
    truth table's columns merged by subject, condition, tracer and region.
    """
    df = pd.concat([with_scan_columns(read_table(p), s) for s, p in fits], ignore_index=True)
    for c in OUTCOME_PARAMS:
        if c not in df.columns:
            df[c] = np.nan
    df["valid"] = df["valid"].astype(str).str.lower().isin(["true", "1"])
    df = df[["subject", "condition", "tracer", "run", "region", "model", *OUTCOME_PARAMS]]
    if truth is not None:
        df = df.merge(truth, on=["subject", "condition", "tracer", "region"], how="left")
    return df


def for_stats(outcomes: pd.DataFrame) -> pd.DataFrame:
    """One row per subject x condition x tracer x region x model (runs averaged)."""
    df = outcomes.copy()
    df.loc[~df["valid"], "bp_nd"] = np.nan
    keys = ["subject", "condition", "tracer", "region", "model"]
    if not df.duplicated(keys).any():
        return df
    agg = {"bp_nd": "mean", "valid": "any"}
    for c in ("bp_nd_true", "bp_nd_true_image"):
        if c in df:
            agg[c] = "mean"
    return df.groupby(keys, as_index=False, sort=True).agg(agg)

