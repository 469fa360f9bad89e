"""Fit QC flags, runs test and AIC-weight model comparison on hand-made fits."""

import numpy as np
import pandas as pd
import pytest

from petbind.stats.fit_qc import akaike_weights, fit_qc, model_comparison, runs_test


def test_runs_test_against_the_wald_wolfowitz_formula():
    from scipy.stats import norm

    r = np.array([1, 2, -1, -2, -3, 1, 1, 2, -1, 3, 2, -2, -1, 4, 1, 1, -1, -1, 2, 3.0])
    p, runs = runs_test(r)
    pos = r > 0
    n1, n2 = pos.sum(), (~pos).sum()
    assert runs == 1 + np.count_nonzero(pos[1:] != pos[:-1]) == 9
    mu = 2 * n1 * n2 / (n1 + n2) + 1
    var = 2 * n1 * n2 * (2 * n1 * n2 - n1 - n2) / ((n1 + n2) ** 2 * (n1 + n2 - 1))
    # statsmodels' continuity correction: |R - mu| reduced by 0.5 when n < 50
    z = (abs(runs - mu) - 0.5) / np.sqrt(var)
    assert p == pytest.approx(2 * norm.sf(z), rel=1e-6)
    # a systematic misfit: all positive then all negative
    p_bad, runs_bad = runs_test(np.r_[np.ones(10), -np.ones(10)])
    assert runs_bad == 2 and p_bad < 0.001


def test_akaike_weights():
    w = akaike_weights(np.array([10.0, 12.0, np.nan]))
    assert w[0] == pytest.approx(1 / (1 + np.exp(-1)))
    assert w[0] + w[1] == pytest.approx(1) and np.isnan(w[2])


def _scan_tables():
    n = 20
    frames = np.arange(n)
    fits, curves = [], []
    rng = np.random.default_rng(0)
    for subj, k2p in (("01", 0.10), ("02", 0.10), ("03", 0.10), ("04", 0.20)):
        key = {"subject": subj, "condition": "baseline", "tracer": "X", "run": np.nan}
        for model, aic, used, se in (("srtm", 10.0, frames, 0.05), ("mrtm", 12.0, frames, 0.05),
                                     ("logan", 5.0, frames[10:], 0.6)):
            fits.append({**key, "region": "NAcc", "model": model, "bp_nd": 1.0,
                         "bp_nd_se": se, "r1": 1.0, "k2": k2p, "aic": aic, "r2": 0.99,
                         "n_frames_used": len(used), "valid": True})
            meas = rng.normal(10, 1, n)
            fitted = np.full(n, np.nan)
            resid = rng.normal(0, 0.1, len(used))
            if subj == "03" and model == "srtm":
                resid = np.r_[np.full(10, 0.1), np.full(10, -0.1)]  # a systematic misfit
            fitted[used] = meas[used] - resid
            curves.append(pd.DataFrame({**key, "model": model, "region": "NAcc",
                                        "frame": frames, "measured": meas,
                                        "fitted": fitted}))
    return pd.DataFrame(fits), pd.concat(curves, ignore_index=True)


def test_fit_qc_flags_and_order():
    fits, curves = _scan_tables()
    fits.loc[(fits["subject"] == "02") & (fits["model"] == "mrtm"), "valid"] = False
    qc = fit_qc(fits, curves)
    assert len(qc) == 12
    flagged = qc[qc["flagged"]]
    # flagged rows come first
    assert qc["flagged"].iloc[: len(flagged)].all()
    f = dict(zip(zip(flagged["subject"], flagged["model"], strict=True), flagged["flags"],
                 strict=True))
    assert "invalid" in f[("02", "mrtm")]
    assert "runs p" in f[("03", "srtm")]
    assert all("SE 60 %" in f[(s, "logan")] for s in ("01", "02", "03", "04"))
    # k2' = k2 / R1: subject 04 has twice the study median
    assert "k2' x2.00" in f[("04", "srtm")]
    assert ("01", "srtm") not in f
    # most severe first: invalid, then SE / k2', then the runs test alone
    assert list(qc["severity"].iloc[:3]) == [3, 2, 2]
    assert qc["flags"].iloc[0].startswith("invalid")
    last_flag = qc[qc["flagged"]].iloc[-1]
    assert last_flag["severity"] == 1 and last_flag["flags"].startswith("runs p")
    assert qc.loc[qc["model"] == "logan", "n_frames_used"].eq(10).all()


def test_model_comparison_only_among_models_on_the_same_frames():
    fits, curves = _scan_tables()
    comp = model_comparison(fit_qc(fits, curves)).set_index("model")
    w = 1 / (1 + np.exp(-1))
    assert comp.loc["srtm", "mean_aic_weight"] == pytest.approx(w)
    assert comp.loc["mrtm", "mean_aic_weight"] == pytest.approx(1 - w)
    assert comp.loc["srtm", "n_best"] == 4 and comp.loc["srtm", "compared_with"] == "mrtm"
    # logan (lowest AIC, but on 10 of 20 frames) is not compared, and says why
    assert np.isnan(comp.loc["logan", "mean_aic_weight"])
    assert "other frames" in comp.loc["logan", "reason"]


# -- a cohort's tables: the same answer as one pandas group at a time -------------------
def _reference_frames_used(curves: pd.DataFrame) -> pd.DataFrame:
    """The definition, one pandas group at a time (how fit_qc computed it before issue 18)."""
    rows = []
    keys = ["subject", "condition", "tracer", "run", "region", "model"]
    for key, g in curves.groupby(keys, sort=False, dropna=False):
        g = g.sort_values("frame", kind="stable")
        fitted = g["fitted"].to_numpy(float)
        used = np.isfinite(fitted)
        p, runs = runs_test(g["measured"].to_numpy(float)[used] - fitted[used])
        rows.append({**dict(zip(keys, key, strict=True)), "runs_p": p, "n_runs": runs,
                     "frames": ",".join(map(str, g["frame"].to_numpy()[used].tolist())),
                     "n_frames_total": len(g)})
    return pd.DataFrame(rows)


def _reference_comparison(qc: pd.DataFrame) -> dict:
    """Akaike weights per scan x region among the largest same-frames set of models."""
    per: dict = {}
    df = qc[qc["valid"].astype(bool)].copy()
    df["frames"] = df["frames"].fillna("").astype(str)
    for _, g in df.groupby(["subject", "condition", "tracer", "run", "region"], dropna=False,
                           sort=False):
        sizes = g.groupby("frames")["model"].count()
        best = max(sizes.index, key=lambda f: (sizes[f], len(f.split(",")) if f else 0))
        same = g[g["frames"] == best]
        aic = same["aic"].to_numpy(float)
        ok = np.isfinite(aic)
        w = np.full(len(aic), np.nan)
        if len(same) > 1 and ok.any():
            e = np.exp(-(aic[ok] - aic[ok].min()) / 2)
            w[ok] = e / e.sum()
        for r in g.itertuples(index=False):
            e = per.setdefault((r.tracer, r.region, r.model), {"w": [], "other": 0, "n": 0})
            e["n"] += 1
            if r.frames == best and len(same) > 1:
                e["w"].append(float(w[list(same["model"]).index(r.model)]))
            else:
                e["other"] += 1
    return per


def _cohort_tables(seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    fits, curves = [], []
    frames = np.arange(12)
    for sub in [f"{i:03d}" for i in range(1, 13)]:
        for cond in ("baseline", "drug"):
            run = np.nan if sub != "004" else "2"  # one subject with a run entity
            for region in ("striatum", "thalamus", "cortex"):
                tac = 10 * np.exp(-frames / 8.0) + rng.normal(0, 0.3, frames.size)
                for model, first in (("srtm", 0), ("mrtm", 0), ("logan", 6 if sub < "007" else 0)):
                    fit = 10 * np.exp(-frames / 8.0)
                    fit[:first] = np.nan
                    aic = float(rng.choice([rng.normal(-40, 3), np.nan], p=[0.9, 0.1]))
                    fits.append({"subject": sub, "condition": cond, "tracer": "T", "run": run,
                                 "region": region, "model": model, "bp_nd": rng.normal(1, .2),
                                 "bp_nd_se": 0.05, "r2": 0.99, "aic": aic,
                                 "n_frames_used": frames.size - first,
                                 "valid": bool(rng.random() > 0.05), "k2prime": 0.1})
                    for f in rng.permutation(frames):  # rows in any frame order
                        curves.append({"subject": sub, "condition": cond, "tracer": "T",
                                       "run": run, "region": region, "model": model,
                                       "frame": int(f), "measured": tac[f], "fitted": fit[f]})
    return pd.DataFrame(fits), pd.DataFrame(curves)


def test_cohort_fit_qc_and_comparison_are_the_per_group_definition():
    from petbind.stats.fit_qc import _frames_used

    fits, curves = _cohort_tables()
    ours = _frames_used(curves)
    ref = _reference_frames_used(curves)
    pd.testing.assert_frame_equal(ours, ref, check_dtype=False)
    qc = fit_qc(fits, curves)
    comp = model_comparison(qc).set_index(["tracer", "region", "model"])
    per = _reference_comparison(qc)
    assert sorted(per) == sorted(comp.index)
    for key, e in per.items():
        row = comp.loc[key]
        assert row["n_scans"] == e["n"]
        if e["w"]:
            # summed in the same order: the same bits (NaN when a weight is NaN)
            np.testing.assert_equal(row["mean_aic_weight"], float(np.mean(e["w"])))
        else:
            assert np.isnan(row["mean_aic_weight"])
        assert ("other frames" in row["reason"]) == bool(e["other"])
