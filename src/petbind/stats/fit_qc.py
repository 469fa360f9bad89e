"""Study-wide quality control of region fits, and model comparison by AIC weights.

One row per scan x region x model (``group/fit_qc.tsv``), from the scans'
``_fits.tsv`` and ``_desc-fitted_tacs.tsv``:

- ``se_pct``: 100 SE(BP_ND) / |BP_ND| (the model's own standard error);
- ``r2``: weighted R^2 over the frames the model used;
- ``runs_p``: Wald-Wolfowitz runs test of the signs of the residuals over
  the frames used (``statsmodels`` ``runstest_1samp``, cutoff 0, two-sided).
  Weights are positive, so the signs of the weighted residuals are those of
  the residuals: too few runs means a systematic misfit (Cobelli & Carson,
  the residuals of a good fit alternate in sign at random);
- ``k2prime`` and ``k2prime_ratio``: the reference efflux k2' the fit used or
  implies (``k2prime`` column, else ``k2 / r1``; 1/min) and its ratio to the
  median over the tracer's scans for that model: the reference region is the
  same tissue in every scan, so a k2' far from the study's median points at a
  bad reference or k2' fit;
- ``bound``, ``invalid_reason``: from the fits when the model records them;
- ``flags``: which of the thresholds in :data:`THRESHOLDS` the row fails
  (``;``-separated); ``severity`` 3 (invalid or at a bound), 2 (SE, R^2 or
  k2'), 1 (runs test only), 0 (none); rows sorted by severity. The runs test
  is the most sensitive: with the low noise of region curves it detects the
  systematic misfit of a one-tissue model (SRTM, MRTM2) to two-tissue
  kinetics, which is real but usually not a reason to drop the fit.

Model comparison (``group/model_comparison.tsv``): Akaike weights (Burnham &
Anderson 2002, ch. 2.9) ``w_i = exp(-D_i / 2) / sum_j exp(-D_j / 2)``,
``D_i = AIC_i - min AIC``, computed only among models of a scan x region
that were fitted to the **same frames** (AIC values of fits to different data,
e.g. Logan after t* on 10 frames vs SRTM on 29, are not comparable); the
others get a reason instead of a weight.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

#: Flag thresholds: SE % above, R^2 below, runs-test p below, k2' ratio outside.
THRESHOLDS = {"se_pct": 25.0, "r2": 0.95, "runs_p": 0.05, "k2prime_ratio": (0.7, 1.0 / 0.7)}

SCAN_KEYS = ["subject", "condition", "tracer", "run"]


def runs_test(residuals: np.ndarray) -> tuple[float, int]:
    """Two-sided p of the runs test of residual signs, and the number of runs.

    Zero residuals are left out; NaN (and 0 runs) when fewer than 2 signs of
    each kind remain.
    """
    from statsmodels.sandbox.stats.runs import runstest_1samp

    r = np.asarray(residuals, float)
    r = r[np.isfinite(r) & (r != 0)]
    pos = r > 0
    if pos.sum() < 2 or (~pos).sum() < 2:
        return float("nan"), 0
    runs = int(1 + np.count_nonzero(pos[1:] != pos[:-1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, p = runstest_1samp(r, cutoff=0.0, correction=True)
    return float(p), runs


def _scan_key(df: pd.DataFrame) -> pd.Series:
    """One string per scan x region x model (NaN runs included as 'nan')."""
    cols = [*SCAN_KEYS, "region", "model"]
    return df[cols].apply(lambda r: "|".join(map(str, r)), axis=1)


def _groups(df: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Row positions of each group of ``df`` by ``keys``, as ``groupby(keys, sort=False,
    dropna=False)`` orders them (first appearance; rows in table order), and each
    group's first row.

    The study's fit tables have a group per scan x region (x model): thousands at
    a cohort's size, where pandas' per-group objects were most of the time.
    """
    codes = df.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    cuts = np.flatnonzero(np.diff(codes[order])) + 1
    return order[np.r_[0, cuts]] if len(order) else order, np.split(order, cuts)


def _frames_used(curves: pd.DataFrame) -> pd.DataFrame:
    """Per scan x region x model: residual runs test and the set of frames used."""
    keys = [k for k in SCAN_KEYS if k in curves] + ["region", "model"]
    first, groups = _groups(curves, keys)
    frame = curves["frame"].to_numpy()
    fitted_all = curves["fitted"].to_numpy(float)
    measured_all = curves["measured"].to_numpy(float)
    out = curves.iloc[first][keys].reset_index(drop=True) if len(first) else \
        pd.DataFrame(columns=keys)
    runs_p, n_runs, frames, n_total = [], [], [], []
    for ix in groups if len(first) else []:
        ix = ix[np.argsort(frame[ix], kind="stable")]  # by frame, as g.sort_values("frame")
        fitted = fitted_all[ix]
        used = np.isfinite(fitted)
        p, runs = runs_test(measured_all[ix][used] - fitted[used])
        runs_p.append(p)
        n_runs.append(runs)
        frames.append(",".join(map(str, frame[ix][used].tolist())))
        n_total.append(len(ix))
    if not len(first):
        return pd.DataFrame(columns=[*keys, "runs_p", "n_runs", "frames", "n_frames_total"])
    out["runs_p"], out["n_runs"], out["frames"], out["n_frames_total"] = (
        runs_p, n_runs, frames, n_total)
    return out


def fit_qc(fits: pd.DataFrame, curves: pd.DataFrame | None = None,
           thresholds: dict | None = None) -> pd.DataFrame:
    """The fit QC table (see the module docstring).

    Parameters
    ----------
    fits : DataFrame
        Every scan's ``_fits.tsv`` rows with ``subject, condition, tracer,
        run`` added.
    curves : DataFrame, optional
        Every scan's ``_desc-fitted_tacs.tsv`` rows with the same keys (for
        the runs test and the frames used).
    thresholds : dict, optional
        Overrides of :data:`THRESHOLDS`.

    Returns
    -------
    DataFrame
        ``subject, condition, tracer, run, region, model, bp_nd, bp_nd_se,
        se_pct, r2, runs_p, n_runs, n_frames_used, frames, k2prime,
        k2prime_ratio, bound, invalid_reason, valid, flags, flagged``,
        flagged rows first.
    """
    th = {**THRESHOLDS, **(thresholds or {})}
    df = fits.copy()
    if "run" not in df:
        df["run"] = np.nan
    df["valid"] = df["valid"].astype(str).str.lower().isin(["true", "1"])
    bp = pd.to_numeric(df["bp_nd"], errors="coerce")
    nan = pd.Series(np.nan, index=df.index)
    se = pd.to_numeric(df.get("bp_nd_se", nan), errors="coerce")
    with np.errstate(divide="ignore", invalid="ignore"):
        df["se_pct"] = 100.0 * se / bp.abs()
    k2p = pd.to_numeric(df.get("k2prime", nan), errors="coerce")
    if "k2" in df and "r1" in df:
        with np.errstate(divide="ignore", invalid="ignore"):
            implied = pd.to_numeric(df["k2"], errors="coerce") / pd.to_numeric(
                df["r1"], errors="coerce")
        k2p = k2p.where(np.isfinite(k2p), implied)
    df["k2prime"] = k2p
    med = df.groupby(["tracer", "model"])["k2prime"].transform("median")
    with np.errstate(divide="ignore", invalid="ignore"):
        df["k2prime_ratio"] = df["k2prime"] / med
    for c in ("bound", "invalid_reason"):
        if c not in df:
            df[c] = np.nan
    if curves is not None and len(curves):
        cur = curves.copy()
        if "run" not in cur:
            cur["run"] = np.nan
        used = _frames_used(cur)
        df["_k"] = _scan_key(df)
        used["_k"] = _scan_key(used)
        df = df.merge(used[["_k", "runs_p", "n_runs", "frames", "n_frames_total"]],
                      on="_k", how="left").drop(columns="_k")
    else:
        df["runs_p"], df["n_runs"], df["frames"], df["n_frames_total"] = (
            np.nan, np.nan, "", np.nan)
    lo, hi = th["k2prime_ratio"]
    flags, severity = [], []
    for r in df.itertuples(index=False):
        f = []
        sev = 0
        if not r.valid:
            reason = r.invalid_reason if isinstance(r.invalid_reason, str) else ""
            f.append(f"invalid{(': ' + reason) if reason else ''}")
            sev = 3
        b = r.bound
        if isinstance(b, bool | np.bool_) and b:
            f.append("at a bound")
            sev = 3
        elif isinstance(b, str) and b.strip().lower() not in ("", "n/a", "none", "false", "0"):
            f.append("at a bound" if b.strip().lower() == "true" else f"at bound {b}")
            sev = 3
        if np.isfinite(r.se_pct) and r.se_pct > th["se_pct"]:
            f.append(f"SE {r.se_pct:.0f} %")
        if np.isfinite(r.r2) and r.r2 < th["r2"]:
            f.append(f"R2 {r.r2:.3f}")
        if np.isfinite(r.k2prime_ratio) and not lo <= r.k2prime_ratio <= hi:
            f.append(f"k2' x{r.k2prime_ratio:.2f} of median")
        if f and sev == 0:
            sev = 2
        if np.isfinite(r.runs_p) and r.runs_p < th["runs_p"]:
            f.append("runs p < 0.001" if r.runs_p < 0.001 else f"runs p {r.runs_p:.3f}")
            sev = max(sev, 1)
        flags.append("; ".join(f))
        severity.append(sev)
    df["flags"] = flags
    df["severity"] = severity
    df["flagged"] = df["flags"] != ""
    cols = ["subject", "condition", "tracer", "run", "region", "model", "bp_nd", "bp_nd_se",
            "se_pct", "r2", "runs_p", "n_runs", "n_frames_used", "n_frames_total", "frames",
            "k2prime", "k2prime_ratio", "aic", "bound", "invalid_reason", "valid", "flags",
            "severity", "flagged"]
    for c in cols:
        if c not in df:
            df[c] = np.nan
    df = df[cols].sort_values(["severity", "tracer", "subject", "condition", "region", "model"],
                              ascending=[False, True, True, True, True, True], kind="stable")
    return df.reset_index(drop=True)


def akaike_weights(aic: np.ndarray) -> np.ndarray:
    """``exp(-D/2) / sum exp(-D/2)`` with ``D = AIC - min AIC`` (NaN entries get NaN)."""
    a = np.asarray(aic, float)
    ok = np.isfinite(a)
    out = np.full(a.shape, np.nan)
    if ok.any():
        d = a[ok] - a[ok].min()
        w = np.exp(-d / 2)
        out[ok] = w / w.sum()
    return out


def model_comparison(qc: pd.DataFrame) -> pd.DataFrame:
    """Akaike weights per tracer x region x model among models fitted to the same frames.

    For every scan x region, the models are grouped by the frames they used
    (``frames`` of :func:`fit_qc`); the largest group (ties: the one with
    most frames) is compared by Akaike weights. Models outside it get a
    ``reason`` (fitted to other frames) and no weight.

    Returns
    -------
    DataFrame
        ``tracer, region, model, n_scans, n_frames_used, mean_aic_weight,
        n_best, compared_with, reason``.
    """
    rows = []
    df = qc[qc["valid"].astype(bool)].copy()
    if df.empty:
        return pd.DataFrame(columns=["tracer", "region", "model", "n_scans", "n_frames_used",
                                     "mean_aic_weight", "n_best", "compared_with", "reason"])
    df["frames"] = df["frames"].fillna("").astype(str)
    per: dict[tuple[str, str, str], dict] = {}
    frames_all = df["frames"].to_numpy(object)
    model_all = df["model"].to_numpy(object)
    tracer_all = df["tracer"].to_numpy(object)
    region_all = df["region"].to_numpy(object)
    aic_all = df["aic"].to_numpy(float)
    nfu_all = df["n_frames_used"].to_numpy(float)
    _, groups = _groups(df, ["subject", "condition", "tracer", "run", "region"])
    for ix in groups:
        frames = frames_all[ix]
        # the frame sets in sorted order (as a pandas groupby), each with its models
        sets, sizes = np.unique(frames, return_counts=True)
        nfr = {f: (len(f.split(",")) if f else 0) for f in sets}
        count = dict(zip(sets, sizes, strict=True))
        best_set = max(sets, key=lambda f: (count[f], nfr[f]))
        same = ix[frames == best_set]
        same_models = list(model_all[same])
        w = akaike_weights(aic_all[same]) if len(same) > 1 else np.array([np.nan])
        winner = same_models[int(np.nanargmax(w))] if np.isfinite(w).any() else None
        for j in ix:
            model = model_all[j]
            k = (tracer_all[j], region_all[j], model)
            e = per.setdefault(k, {"weights": [], "n_best": 0, "n_scans": 0,
                                   "n_frames": set(), "other": 0, "with": set()})
            e["n_scans"] += 1
            e["n_frames"].add(int(nfu_all[j]) if np.isfinite(nfu_all[j]) else -1)
            if frames_all[j] == best_set and len(same) > 1:
                e["weights"].append(float(w[same_models.index(model)]))
                e["n_best"] += int(model == winner)
                e["with"].update(m for m in same_models if m != model)
            else:
                e["other"] += 1
    for (tracer, region, model), e in sorted(per.items()):
        nf = sorted(e["n_frames"])
        reason = ""
        if e["other"]:
            reason = (f"fitted to other frames than the compared models in {e['other']} of "
                      f"{e['n_scans']} scans ({'/'.join(map(str, nf))} frames): AIC of "
                      "different data is not comparable")
        rows.append({"tracer": tracer, "region": region, "model": model,
                     "n_scans": e["n_scans"], "n_frames_used": "/".join(map(str, nf)),
                     "mean_aic_weight": float(np.mean(e["weights"])) if e["weights"]
                     else np.nan, "n_best": e["n_best"] if e["weights"] else np.nan,
                     "compared_with": ",".join(sorted(e["with"])), "reason": reason})
    return pd.DataFrame(rows)
