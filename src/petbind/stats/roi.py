"""Region statistics of a challenge study: paired tests, effect sizes, power, mixed models.

Input is the tidy outcome table of the pipeline (one row per subject x
condition x tracer x region x model, column ``bp_nd``); output is one row per
tracer x model x region x contrast, with the columns listed in
``docs/outputs.md`` (``roi_stats.tsv`` and ``mixed_model.tsv``).

Every test is the library's own: ``scipy.stats.ttest_rel`` (paired t),
``scipy.stats.wilcoxon`` (signed rank), ``scipy.stats.ttest_1samp`` (t
confidence interval of the mean % change), ``statsmodels`` ``multipletests``
(Holm), ``scipy.stats.false_discovery_control`` (Benjamini-Hochberg, 1995),
``statsmodels.stats.power.TTestPower`` (power of the paired t) and
``statsmodels.formula.api.mixedlm`` (linear mixed model with a subject
intercept). Cohen's d_z is mean / SD of the paired differences (Cohen 1988;
Lakens, Front Psychol 2013, eq. 6).
"""

from __future__ import annotations

import gc
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from petbind.errors import ConfigError, DataError
from petbind.stats.bootstrap import bootstrap_mean_ci

_LABEL = r"([A-Za-z0-9]+)"
_SIMPLE = re.compile(rf"^\s*{_LABEL}\s*-\s*{_LABEL}\s*$")
_INTERACTION = re.compile(
    rf"^\s*\(\s*{_LABEL}\s*-\s*{_LABEL}\s*\)\s*-\s*\(\s*{_LABEL}\s*-\s*{_LABEL}\s*\)\s*$")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


@dataclass(frozen=True)
class Contrast:
    """A contrast between conditions of a within-subject design.

    ``A - B`` (simple: change from B to A) or ``(A - B) - (C - D)``
    (interaction: does the change from B to A differ from the change from D to
    C?). Condition labels are BIDS session labels (letters and digits).

    Attributes
    ----------
    expr : str
        The contrast as written, e.g. ``"ketamine - baseline"``.
    terms : tuple of str
        ``(A, B)`` or ``(A, B, C, D)``.
    name : str
        File-name-safe label, e.g. ``ketamineVsBaseline``.
    """

    expr: str
    terms: tuple[str, ...]
    name: str

    @classmethod
    def parse(cls, expr: str, name: str | None = None, *, path: str | None = None,
              field: str = "contrasts") -> Contrast:
        """Parse ``"A - B"`` or ``"(A - B) - (C - D)"``.

        Raises
        ------
        ConfigError
            The expression has another form, or ``name`` is not alphanumeric.
        """
        m = _SIMPLE.match(expr) or _INTERACTION.match(expr)
        if not m:
            raise ConfigError(
                f"cannot read contrast {expr!r}", path=path, field=field,
                fix="write 'A - B' or '(A - B) - (C - D)' with condition (session) labels")
        terms = tuple(m.groups())
        if len(terms) == 2 and terms[0] == terms[1]:
            raise ConfigError(f"contrast {expr!r} compares a condition with itself",
                              path=path, field=field, fix="name two different conditions")
        auto = f"{terms[0]}Vs{_cap(terms[1])}"
        if len(terms) == 4:
            auto += f"Minus{_cap(terms[2])}Vs{_cap(terms[3])}"
        if name is not None and not re.fullmatch(r"[A-Za-z0-9]+", name):
            raise ConfigError(f"contrast name {name!r} must be letters and digits only",
                              path=path, field=field, fix=f"use e.g. name = '{auto}'")
        canonical = (f"{terms[0]} - {terms[1]}" if len(terms) == 2 else
                     f"({terms[0]} - {terms[1]}) - ({terms[2]} - {terms[3]})")
        return cls(expr=canonical, terms=terms, name=name or auto)

    @property
    def kind(self) -> str:
        """``"simple"`` or ``"interaction"``."""
        return "simple" if len(self.terms) == 2 else "interaction"

    @property
    def conditions(self) -> tuple[str, ...]:
        """The distinct conditions the contrast uses, in order of appearance."""
        return tuple(dict.fromkeys(self.terms))

    def pairs(self, wide: pd.DataFrame) -> tuple[NDArray, NDArray, NDArray]:
        """The paired values a test compares, and the per-subject % change.

        Parameters
        ----------
        wide : DataFrame
            One row per subject, one column per condition (e.g. BP_ND).

        Returns
        -------
        a, b : ndarray
            Simple: the values of A and of B. Interaction: A - B and C - D.
            Only subjects with finite values in every condition used.
        pct : ndarray
            Per-subject % change ``100 (A - B) / B``; interaction:
            ``100 (A - B) / B - 100 (C - D) / D`` (percentage points).
        """
        cols = wide.loc[:, list(self.conditions)].to_numpy(dtype=float)
        keep = np.all(np.isfinite(cols), axis=1)
        return self.combine({c: wide[c].to_numpy(dtype=float)[keep] for c in self.conditions})

    def combine(self, values: dict[str, NDArray]) -> tuple[NDArray, NDArray, NDArray]:
        """The compared values and the % change from per-condition arrays of any shape.

        Parameters
        ----------
        values : dict of str -> ndarray
            One array per condition of the contrast (same shape: subjects,
            or subjects x voxels).

        Returns
        -------
        a, b, pct : ndarray
            As in :meth:`pairs`; ``a - b`` is the per-subject contrast.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.kind == "simple":
                a, b = values[self.terms[0]], values[self.terms[1]]
                pct = 100.0 * (a - b) / b
            else:
                A, B, C, D = (values[t] for t in self.terms)
                a, b = A - B, C - D
                pct = 100.0 * (A - B) / B - 100.0 * (C - D) / D
        return a, b, pct


def paired_statistics(a: NDArray, b: NDArray, pct: NDArray, *,
                      alpha: float = 0.05) -> dict[str, float]:
    """Paired tests, effect size, % change CI and power for one region and contrast.

    Parameters
    ----------
    a, b : ndarray, shape (n,)
        Paired values (same subject order).
    pct : ndarray, shape (n,)
        Per-subject % change (see :meth:`Contrast.pairs`).
    alpha : float
        Two-sided significance level for power and the (1 - alpha) CI.

    Returns
    -------
    dict
        ``n, mean_a, mean_b, mean_diff, pct_change, pct_ci_low, pct_ci_high, t,
        df, p, p_wilcoxon, cohen_dz, power, n_for_80_power`` (NaN where
        undefined, e.g. n < 2 or zero variance).
    """
    from scipy import stats
    from statsmodels.stats.power import TTestPower

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    pct = np.asarray(pct, dtype=float)
    n = int(a.size)
    out = dict.fromkeys(
        ["mean_a", "mean_b", "mean_diff", "pct_change", "pct_ci_low", "pct_ci_high", "t",
         "df", "p", "p_wilcoxon", "cohen_dz", "power", "n_for_80_power"], float("nan"))
    out["n"] = float(n)
    if n == 0:
        return out
    d = a - b
    out.update(mean_a=float(a.mean()), mean_b=float(b.mean()), mean_diff=float(d.mean()),
               pct_change=float(pct.mean()))
    if n < 2:
        return out
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_1samp(pct, 0.0).confidence_interval(1.0 - alpha)
        tt = stats.ttest_rel(a, b)
        sd = float(np.std(d, ddof=1))
        dz = float(d.mean() / sd) if sd > 0 else float("nan")
    out.update(pct_ci_low=float(ci.low), pct_ci_high=float(ci.high), t=float(tt.statistic),
               df=float(n - 1), p=float(tt.pvalue), cohen_dz=dz)
    if np.any(d != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out["p_wilcoxon"] = float(stats.wilcoxon(a, b).pvalue)
    if np.isfinite(dz) and dz != 0:
        power = TTestPower()
        out["power"] = _two_sided_power(power, abs(dz), n, alpha)
        out["n_for_80_power"] = _n_for_power(power, abs(dz), alpha)
    return out


def _two_sided_power(power, dz: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t at effect ``dz`` (>= 0).

    For very large noncentrality scipy's noncentral t CDF of the lower tail
    returns NaN; the lower tail is then negligible and the power is that of
    the upper tail alone (one-sided at alpha / 2).
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        p = float(power.power(effect_size=dz, nobs=n, alpha=alpha, alternative="two-sided"))
        if not np.isfinite(p):
            p = float(power.power(effect_size=dz, nobs=n, alpha=alpha / 2,
                                  alternative="larger"))
    return p


def _n_for_power(power, dz: float, alpha: float, target: float = 0.8) -> float:
    """Smallest whole number of subjects reaching ``target`` power (NaN if unreachable)."""
    small = np.arange(2, 65)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        pw = np.asarray(power.power(effect_size=dz, nobs=small, alpha=alpha,
                                    alternative="two-sided"), dtype=float)
        upper = np.asarray(power.power(effect_size=dz, nobs=small, alpha=alpha / 2,
                                       alternative="larger"), dtype=float)
    reached = np.where(np.isfinite(pw), pw, upper) >= target
    if reached.any():  # large effects: the first n that reaches the target
        return float(small[np.argmax(reached)])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n = float(np.ravel(power.solve_power(effect_size=dz, nobs=None, alpha=alpha,
                                                 power=target,
                                                 alternative="two-sided"))[0])
    except (ValueError, RuntimeError):  # pragma: no cover - solver failure
        return float("nan")
    return float(np.ceil(n)) if np.isfinite(n) and n > 0 else float("nan")


def _wide(group: pd.DataFrame, value: str, where: str) -> pd.DataFrame:
    dup = group.duplicated(["subject", "condition"])
    if dup.any():
        row = group[dup].iloc[0]
        raise DataError(
            f"subject {row['subject']} has more than one {value} for condition "
            f"{row['condition']} in {where}", field="run",
            fix="average runs or select one run per subject and condition before statistics")
    return group.pivot(index="subject", columns="condition", values=value)


def _correct(p: NDArray) -> tuple[NDArray, NDArray]:
    """Holm and Benjamini-Hochberg adjusted p over the finite entries of ``p``."""
    from scipy.stats import false_discovery_control
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, dtype=float)
    holm = np.full(p.shape, np.nan)
    bh = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        # statsmodels' Holm branch calls gc.collect(), which walks every object of the
        # process (about 0.1 s with pandas/scipy loaded); freezing the existing objects
        # for the call leaves it only the new ones
        gc.freeze()
        try:
            holm[ok] = multipletests(p[ok], method="holm")[1]
        finally:
            gc.unfreeze()
        bh[ok] = false_discovery_control(p[ok], method="bh")
    return holm, bh


def _add_corrections(out: pd.DataFrame) -> None:
    """Fill ``p_holm`` and ``p_bh`` in place: :func:`_correct` over the regions
    of each tracer x model x contrast (the family of tests corrected together)."""
    out["p_holm"] = np.nan
    out["p_bh"] = np.nan
    for _, idx in out.groupby(["tracer", "model", "contrast"]).groups.items():
        holm, bh = _correct(out.loc[idx, "p"].to_numpy())
        out.loc[idx, "p_holm"] = holm
        out.loc[idx, "p_bh"] = bh


def fit_mixed(formula: str, data: pd.DataFrame) -> tuple[object | None, bool, bool]:
    """REML fit of a linear mixed model with a random intercept per subject.

    One place for how petbind calls ``statsmodels`` ``mixedlm`` and reads its
    warnings (used by :func:`mixed_model_statistics` and
    :func:`petbind.stats.design.mixed_design_statistics`).

    Parameters
    ----------
    formula : str
        Patsy formula of the fixed effects, e.g. ``"bp_nd ~ C(condition)"``.
    data : DataFrame
        One row per observation, with a ``subject`` column (the grouping).

    Returns
    -------
    result, converged, boundary
        The statsmodels result (None when the fit raised); ``converged`` is
        False when the fit raised, failed or warned that it did not converge;
        ``boundary`` is True when the subject variance was estimated at zero
        (statsmodels' boundary or singular-covariance warning).
    """
    import statsmodels.formula.api as smf

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = smf.mixedlm(formula, data, groups=data["subject"]).fit(reml=True)
        except (ValueError, np.linalg.LinAlgError):
            return None, False, False
    msgs = [str(w.message).lower() for w in caught]
    failed = any(("converge" in m and "not" in m) or "failed" in m for m in msgs)
    converged = bool(res.converged) and not failed
    boundary = (any("boundary" in m or "singular" in m for m in msgs)
                or float(np.asarray(res.cov_re)[0, 0]) <= 1e-10)
    return res, converged, boundary


def _check_conditions(outcomes: pd.DataFrame, contrasts: Sequence[Contrast]) -> None:
    have = set(outcomes["condition"].unique())
    for c in contrasts:
        missing = [x for x in c.conditions if x not in have]
        if missing:
            raise ConfigError(
                f"contrast {c.expr!r} names condition(s) {missing} that no scan has",
                field="contrasts", fix=f"use the conditions present: {sorted(have)}")


def roi_statistics(outcomes: pd.DataFrame, contrasts: Sequence[Contrast], *,
                   value: str = "bp_nd", truth: str | None = "bp_nd_true",
                   alpha: float = 0.05, regions: Sequence[str] | None = None) -> pd.DataFrame:
    """Region statistics per tracer x model x region x contrast.

    Parameters
    ----------
    outcomes : DataFrame
        Columns ``subject, condition, tracer, region, model`` and ``value``
        (and ``valid``, ``truth`` if present). Rows with ``valid == False`` or
        non-finite values are left out. At most one row per subject and
        condition within a tracer x model x region.
    contrasts : sequence of Contrast
    value : str
        Outcome column (BP_ND by default).
    truth : str or None
        Column with the simulator's true value; adds ``pct_change_true`` and
        ``mean_diff_true``.
    alpha : float
        Two-sided level for the CI and power.
    regions : sequence of str, optional
        Regions to test (and correct across); default all in the table.

    Returns
    -------
    DataFrame
        Columns of ``roi_stats.tsv`` (``docs/outputs.md``); ``p_holm`` and
        ``p_bh`` correct ``p`` across the regions of each tracer x model x
        contrast; ``pct_boot_low/high`` is the subject-bootstrap interval of
        the mean % change (:func:`petbind.stats.bootstrap.bootstrap_mean_ci`;
        NaN below 8 subjects, ``boot_method`` says which).
    """
    df = outcomes.copy()
    if "valid" in df:
        df.loc[~df["valid"].astype(bool), value] = np.nan
    if regions is not None:
        df = df[df["region"].isin(list(regions))]
    _check_conditions(df, contrasts)
    has_truth = truth is not None and truth in df.columns
    rows = []
    for (tracer, model, region), g in df.groupby(["tracer", "model", "region"], sort=True):
        where = f"tracer {tracer}, model {model}, region {region}"
        wide = _wide(g, value, where)
        wide_true = _wide(g, truth, where) if has_truth else None
        for c in contrasts:
            if not set(c.conditions) <= set(wide.columns):
                continue
            a, b, pct = c.pairs(wide)
            row = {"tracer": tracer, "model": model, "region": region, "contrast": c.expr,
                   "contrast_id": c.name, "kind": c.kind}
            row.update(paired_statistics(a, b, pct, alpha=alpha))
            lo, hi, how = bootstrap_mean_ci(pct, alpha=alpha)
            row.update(pct_boot_low=lo, pct_boot_high=hi, boot_method=how)
            if wide_true is not None:
                ta, tb, tpct = c.pairs(wide_true)
                row["pct_change_true"] = float(np.mean(tpct)) if tpct.size else np.nan
                row["mean_diff_true"] = float(np.mean(ta - tb)) if ta.size else np.nan
            rows.append(row)
    cols = ["tracer", "model", "region", "contrast", "contrast_id", "kind", "n", "mean_a",
            "mean_b", "mean_diff", "pct_change", "pct_ci_low", "pct_ci_high", "t", "df", "p",
            "p_wilcoxon", "cohen_dz", "p_holm", "p_bh", "power", "n_for_80_power",
            "pct_boot_low", "pct_boot_high", "boot_method"]
    if has_truth:
        cols += ["pct_change_true", "mean_diff_true"]
    out = pd.DataFrame(rows, columns=[c for c in cols if c not in ("p_holm", "p_bh")])
    _add_corrections(out)
    out["n"] = out["n"].astype(int)
    return out[cols].reset_index(drop=True)


def _contrast_vector(c: Contrast, names: list[str], baseline: str) -> NDArray:
    """Fixed-effect contrast vector for treatment coding with ``baseline`` as reference."""
    weights = {t: 0.0 for t in c.conditions}
    signs = (1.0, -1.0) if c.kind == "simple" else (1.0, -1.0, -1.0, 1.0)
    for t, s in zip(c.terms, signs, strict=True):
        weights[t] += s
    L = np.zeros(len(names))
    for cond, w in weights.items():
        if cond == baseline or w == 0:
            continue
        L[names.index(f"C(condition, Treatment(reference='{baseline}'))[T.{cond}]")] = w
    return L


def mixed_model_statistics(outcomes: pd.DataFrame, contrasts: Sequence[Contrast], *,
                           baseline: str, value: str = "bp_nd", alpha: float = 0.05,
                           regions: Sequence[str] | None = None) -> pd.DataFrame:
    """Linear mixed model across conditions with a random intercept per subject.

    For each tracer x model x region fits ``value ~ C(condition)`` (treatment
    coding, reference ``baseline``) with ``statsmodels`` ``mixedlm`` (REML)
    and tests every contrast as a linear combination of the fixed effects
    (``MixedLMResults.t_test``, Wald z).

    Parameters
    ----------
    outcomes : DataFrame
        As for :func:`roi_statistics`.
    contrasts : sequence of Contrast
    baseline : str
        Reference condition.
    value : str
        Outcome column.
    alpha : float
        Level of the confidence interval.
    regions : sequence of str, optional
        Regions to model; default all.

    Returns
    -------
    DataFrame
        Columns of ``mixed_model.tsv`` (``docs/outputs.md``). ``converged`` is
        False when the optimiser failed or warned that it did not converge
        (or the fit raised; then the numbers are NaN); ``boundary`` is True
        when the subject variance was estimated at zero (statsmodels' boundary
        or singular-covariance warning), common with few subjects.
    """
    df = outcomes.copy()
    if "valid" in df:
        df.loc[~df["valid"].astype(bool), value] = np.nan
    df = df[np.isfinite(df[value].to_numpy(dtype=float))]
    if regions is not None:
        df = df[df["region"].isin(list(regions))]
    _check_conditions(df, contrasts)
    if baseline not in set(df["condition"]):
        raise ConfigError(f"baseline condition {baseline!r} has no scans",
                          field="statistics.baseline_condition",
                          fix=f"use one of {sorted(set(df['condition']))}")
    formula = f"{value} ~ C(condition, Treatment(reference='{baseline}'))"
    rows = []
    for (tracer, model, region), g in df.groupby(["tracer", "model", "region"], sort=True):
        g = g.reset_index(drop=True)
        base = {"tracer": tracer, "model": model, "region": region,
                "n_obs": len(g), "n_subjects": g["subject"].nunique()}
        res = None
        converged = boundary = False
        if g["condition"].nunique() >= 2 and base["n_subjects"] >= 2:
            res, converged, boundary = fit_mixed(formula, g)
        for c in contrasts:
            row = {**base, "contrast": c.expr, "contrast_id": c.name, "estimate": np.nan,
                   "se": np.nan, "z": np.nan, "p": np.nan, "ci_low": np.nan,
                   "ci_high": np.nan, "converged": converged, "boundary": boundary}
            if res is not None and set(c.conditions) <= set(g["condition"]):
                names = list(res.fe_params.index)
                tt = res.t_test(_contrast_vector(c, names, baseline)[None, :])
                ci = np.ravel(tt.conf_int(alpha=alpha))
                row.update(estimate=float(np.ravel(tt.effect)[0]),
                           se=float(np.ravel(tt.sd)[0]), z=float(np.ravel(tt.tvalue)[0]),
                           p=float(np.ravel(tt.pvalue)[0]), ci_low=float(ci[0]),
                           ci_high=float(ci[1]))
            rows.append(row)
    cols = ["tracer", "model", "region", "contrast", "contrast_id", "estimate", "se", "z",
            "p", "ci_low", "ci_high", "p_holm", "p_bh", "n_obs", "n_subjects", "converged",
            "boundary"]
    out = pd.DataFrame(rows, columns=[c for c in cols if c not in ("p_holm", "p_bh")])
    _add_corrections(out)
    return out[cols].reset_index(drop=True)
