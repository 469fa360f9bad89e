"""Mixed models with groups and covariates: ``bp_nd ~ condition * group + covariates``.

The design of a drug study is more than conditions: animals may form groups
(e.g. vehicle- vs drug-treated, or genotypes; ``participants.tsv``) and carry
numeric covariates (dose, plasma level; ``sessions.tsv`` per session, or
``participants.tsv`` per subject). Per tracer x model x region this fits, with
``statsmodels.formula.api.mixedlm`` (REML, random intercept per subject)::

    bp_nd ~ C(condition, Treatment(baseline)) [* C(group, Treatment(first))] [+ cov ...]

and reports every fixed effect, plus, for every contrast of the study, its
estimate in each group and the difference between groups (a Wald test of a
linear combination, ``MixedLMResults.t_test``, z statistics). Numeric
covariates enter as they are (not centred): the condition effects are then
those at covariate 0, which for a dose is "no drug".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from petbind.errors import ConfigError, DataError
from petbind.io.tables import read_typed_tsv
from petbind.stats.roi import Contrast, fit_mixed


def _read_tsv(path: Path) -> pd.DataFrame:
    return read_typed_tsv(path, ("participant_id", "session_id"), default_na=True,
                          booleans=False)


def _strip(x: pd.Series, prefix: str) -> pd.Series:
    return x.astype(str).str.replace(f"^{prefix}-", "", regex=True)


def attach_covariates(outcomes: pd.DataFrame, bids: str | Path, *, group: str = "",
                      covariates: Sequence[str] = ()) -> pd.DataFrame:
    """Add the group and covariate columns to the outcome table.

    Parameters
    ----------
    outcomes : DataFrame
        With ``subject`` and ``condition`` (= session label).
    bids : path
        BIDS root: ``participants.tsv`` and ``sub-*/sub-*_sessions.tsv``.
    group : str
        A ``participants.tsv`` column ("" = none); added as ``group``.
    covariates : sequence of str
        Columns of the sessions files (per subject x session) or of
        ``participants.tsv`` (per subject); must be numeric.

    Raises
    ------
    DataError
        A file or column is missing, or a covariate is not numeric.
    """
    if not group and not covariates:
        return outcomes
    bids = Path(bids)
    out = outcomes.copy()
    part_path = bids / "participants.tsv"
    part = _read_tsv(part_path) if part_path.exists() else None
    if part is not None:
        part["subject"] = _strip(part["participant_id"], "sub")
    if group:
        if part is None or group not in part.columns:
            raise DataError(f"no column {group!r} in participants.tsv", path=part_path,
                            field="statistics.group",
                            fix="add the column (one group label per subject) or set "
                                "statistics.group = \"\"")
        out = out.merge(part[["subject", group]].rename(columns={group: "group"}),
                        on="subject", how="left")
        out["group"] = out["group"].astype(str)
    sessions = []
    for f in sorted(bids.glob("sub-*/sub-*_sessions.tsv")):
        s = _read_tsv(f)
        s["subject"] = f.name.split("_")[0][4:]
        s["condition"] = _strip(s["session_id"], "ses")
        sessions.append(s)
    ses = pd.concat(sessions, ignore_index=True) if sessions else None
    for c in covariates:
        if ses is not None and c in ses.columns:
            out = out.merge(ses[["subject", "condition", c]], on=["subject", "condition"],
                            how="left")
        elif part is not None and c in part.columns:
            out = out.merge(part[["subject", c]], on="subject", how="left")
        else:
            raise DataError(f"covariate {c!r} is in no sessions.tsv nor participants.tsv",
                            path=bids, field="statistics.covariates",
                            fix="add the column to sub-*/sub-*_sessions.tsv (per session) "
                                "or participants.tsv (per subject)")
        vals = pd.to_numeric(out[c], errors="coerce")
        if vals.isna().any() and out[c].notna().any() and (vals.isna() & out[c].notna()).any():
            raise DataError(f"covariate {c!r} is not numeric", path=bids,
                            field="statistics.covariates", fix="give numbers (n/a if missing)")
        out[c] = vals
    return out


def mixed_design_statistics(outcomes: pd.DataFrame, contrasts: Sequence[Contrast], *,
                            baseline: str, group: str = "", covariates: Sequence[str] = (),
                            value: str = "bp_nd", alpha: float = 0.05,
                            regions: Sequence[str] | None = None) -> pd.DataFrame:
    """Mixed model with condition, group and covariates per tracer x model x region.

    Parameters
    ----------
    outcomes : DataFrame
        The outcome table with ``group`` (when ``group``) and the covariate
        columns (see :func:`attach_covariates`).
    contrasts : sequence of Contrast
    baseline : str
        Reference condition.
    group : str
        Non-empty to model ``condition * group`` (the column is ``group``).
    covariates : sequence of str
        Numeric columns added to the fixed effects.
    value, alpha, regions
        As in :func:`petbind.stats.roi.mixed_model_statistics`.

    Returns
    -------
    DataFrame
        ``tracer, model, region, formula, term, kind, estimate, se, z, p,
        ci_low, ci_high, n_obs, n_subjects, converged``; ``kind`` is
        ``fixed`` (a coefficient), ``contrast`` (a study contrast, in the
        reference group or overall) , ``contrast in GROUP`` or
        ``group difference`` (GROUP minus the reference group).
    """

    df = outcomes.copy()
    if "valid" in df:
        df = df[df["valid"].astype(bool)]
    df = df[np.isfinite(pd.to_numeric(df[value], errors="coerce"))]
    if regions is not None:
        df = df[df["region"].isin(list(regions))]
    for c in covariates:
        if c not in df:
            raise ConfigError(f"covariate {c!r} is not in the outcome table",
                              field="statistics.covariates",
                              fix="attach it first (participants.tsv / sessions.tsv)")
        df = df[np.isfinite(df[c].astype(float))]
    cond = f"C(condition, Treatment(reference='{baseline}'))"
    rhs = cond
    groups: list[str] = []
    if group:
        groups = sorted(df["group"].dropna().astype(str).unique())
        if len(groups) < 2:
            raise DataError(f"group column has {len(groups)} level(s): nothing to compare",
                            field="statistics.group", fix="use a column with 2+ groups")
        rhs = f"{cond} * C(group, Treatment(reference='{groups[0]}'))"
    for c in covariates:
        rhs += f" + {c}"
    formula = f"{value} ~ {rhs}"
    rows = []
    for (tracer, model, region), g in df.groupby(["tracer", "model", "region"], sort=True):
        g = g.reset_index(drop=True)
        base = {"tracer": tracer, "model": model, "region": region, "formula": formula,
                "n_obs": len(g), "n_subjects": g["subject"].nunique()}
        res, converged, _ = fit_mixed(formula, g)
        if res is None:
            continue
        names = list(res.fe_params.index)

        def emit(term: str, kind: str, L: np.ndarray, *, _res=res, _base=base,
                 _conv=converged) -> None:
            tt = _res.t_test(L[None, :])
            ci = np.ravel(tt.conf_int(alpha=alpha))
            rows.append({**_base, "term": term, "kind": kind,
                         "estimate": float(np.ravel(tt.effect)[0]),
                         "se": float(np.ravel(tt.sd)[0]), "z": float(np.ravel(tt.tvalue)[0]),
                         "p": float(np.ravel(tt.pvalue)[0]), "ci_low": float(ci[0]),
                         "ci_high": float(ci[1]), "converged": _conv})

        for i, nm in enumerate(names):
            L = np.zeros(len(names))
            L[i] = 1.0
            emit(nm, "fixed", L)
        for c in contrasts:
            if not set(c.conditions) <= set(g["condition"]):
                continue
            L0 = _condition_vector(c, names, cond, baseline)
            emit(c.expr, "contrast" if not group else f"contrast in {groups[0]}", L0)
            for lev in groups[1:]:
                gterm = f"C(group, Treatment(reference='{groups[0]}'))[T.{lev}]"
                Li = L0 + _condition_vector(c, names, cond, baseline, suffix=f":{gterm}")
                emit(c.expr, f"contrast in {lev}", Li)
                emit(c.expr, f"group difference ({lev} - {groups[0]})", Li - L0)
    cols = ["tracer", "model", "region", "formula", "term", "kind", "estimate", "se", "z", "p",
            "ci_low", "ci_high", "n_obs", "n_subjects", "converged"]
    return pd.DataFrame(rows, columns=cols)


def _condition_vector(c: Contrast, names: list[str], cond: str, baseline: str,
                      suffix: str = "") -> np.ndarray:
    """Weights of a condition contrast on the treatment-coded condition terms (+ suffix)."""
    weights: dict[str, float] = {}
    signs = (1.0, -1.0) if c.kind == "simple" else (1.0, -1.0, -1.0, 1.0)
    for t, s in zip(c.terms, signs, strict=True):
        weights[t] = weights.get(t, 0.0) + s
    L = np.zeros(len(names))
    for level, w in weights.items():
        if level == baseline or w == 0:
            continue
        name = f"{cond}[T.{level}]{suffix}"
        if name in names:
            L[names.index(name)] = w
    return L
