"""Prospective power: the simulated power of the paired t against its analytic value."""

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from petbind.stats.power import PowerSettings, _Plan, holm, n_for_power, summarise
from petbind.stats.roi import Contrast


def test_holm_equals_statsmodels_row_by_row():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, size=(8, 7))
    p[3, 2] = np.nan
    h = holm(p)
    for row, hrow in zip(p, h, strict=True):
        ok = np.isfinite(row)
        np.testing.assert_allclose(hrow[ok], multipletests(row[ok], method="holm")[1])
        assert np.isnan(hrow[~ok]).all()


def _normal_design(effects, sd, n_studies, n_max, seed=1):
    """Estimates of a paired design with normal differences: a = b + effect + N(0, sd)."""
    rng = np.random.default_rng(seed)
    n_regions = len(effects)
    b = 1.0 + 0.2 * rng.standard_normal((n_studies, n_max, n_regions))
    a = b + np.asarray(effects) + sd * rng.standard_normal((n_studies, n_max, n_regions))
    est = np.stack([b, a], axis=2)  # conditions: base, drug
    plan = _Plan(tracers=["X"], models={"X": ["m"]},
                 targets={"X": [f"r{i}" for i in range(n_regions)]},
                 conditions=["base", "drug"], n_max=n_max)
    return {"X/m": est, "X/truth": est.copy()}, plan


def test_simulated_power_agrees_with_analytic_paired_t_power():
    effects, sd, n_studies = [0.0, 0.05, 0.1, 0.15], 0.1, 4000
    n_values = (4, 8, 12)
    est, plan = _normal_design(effects, sd, n_studies, max(n_values))
    settings = PowerSettings(n_values=n_values, n_studies=n_studies, workers=1)
    table = summarise(est, plan, [Contrast.parse("drug - base")], None, settings)
    analytic = TTestPower()
    for _, r in table.iterrows():
        d = effects[int(r["region"][1:])] / sd
        expect = (0.05 if d == 0 else
                  analytic.power(effect_size=d, nobs=int(r["n"]), alpha=0.05,
                                 alternative="two-sided"))
        se = np.sqrt(expect * (1 - expect) / n_studies)
        assert abs(r["power"] - expect) <= 4 * se + 1e-3, (r["region"], r["n"], r["power"],
                                                           expect)
        assert r["power_mc_se"] == pytest.approx(np.sqrt(r["power"] * (1 - r["power"])
                                                         / n_studies))
        # the estimates are the truth here: no bias
        assert r["bias_pct"] == pytest.approx(0.0, abs=1e-9)


def test_power_rises_with_n_and_effect_and_holm_is_lower():
    n_values = (3, 5, 8, 12)
    est, plan = _normal_design([0.03, 0.06, 0.12], 0.1, 1500, max(n_values), seed=2)
    settings = PowerSettings(n_values=n_values, n_studies=1500, workers=1)
    t = summarise(est, plan, [Contrast.parse("drug - base")], None, settings)
    grid = t.pivot(index="n", columns="region", values="power")
    assert (np.diff(grid.to_numpy(), axis=0) > 0).all()  # rises with n
    assert (np.diff(grid.to_numpy(), axis=1) > 0).all()  # rises with effect
    assert (t["power_holm"] <= t["power"]).all()
    n80 = n_for_power(t, 0.8).set_index("region")["n_for_80"]
    assert n80["r2"] == 8 and np.isnan(n80["r0"])  # d = 1.2 reaches 0.8 at n = 8


def test_settings_are_checked():
    from petbind.errors import ConfigError

    with pytest.raises(ConfigError):
        PowerSettings(n_values=(1, 4))
    with pytest.raises(ConfigError):
        PowerSettings(models="some")


@pytest.mark.slow
def test_prospective_power_on_the_simulator_region_path(tmp_path):
    """Two tiny studies through the real simulator, models and tests; files written."""
    import dataclasses

    from petbind.simulate.config import load_config
    from petbind.stats.power import prospective_power
    from petbind.stats.power_output import write_power
    from petbind.study.config import load_config as load_study

    sim = load_config(None, tracers=["AZ10419369"], conditions=["baseline", "ketamine"])
    sim = dataclasses.replace(sim, scan_cv_cortex=0.0, scan_cv_subcortex=0.0,
                              between_subject_cv=0.0, k1prime_cv=0.0, noise=0.0)
    study = load_study(None)
    study = dataclasses.replace(study, contrasts=[Contrast.parse("ketamine - baseline")])
    res = prospective_power(sim, study, PowerSettings(n_values=(2, 3), n_studies=2,
                                                      workers=1, models="primary"))
    t = res.table
    nacc = t[(t["region"] == "NAcc") & (t["n"] == 3)].iloc[0]
    assert nacc["pct_change_design"] == pytest.approx(20.0)
    assert nacc["pct_change_true"] == pytest.approx(20.0)
    # noise-free: the estimate differs from the truth only by partial volume and model bias
    assert 5 < nacc["pct_change_mean"] < 20.5
    assert nacc["pct_change_sd"] == pytest.approx(0.0, abs=1e-6)
    paths = write_power(res, tmp_path)
    assert {p.name for p in paths} == {"power.tsv", "power_n80.tsv", "power.json", "power.png"}


def test_with_effects_sets_the_planned_change():
    from petbind.errors import ConfigError
    from petbind.simulate.config import load_config
    from petbind.stats.power import _design_pct
    from petbind.stats.power_design import with_effects

    sim = with_effects(load_config(None), ["AZ10419369:ketamine:NAcc=15",
                                           "DASB:ketamine:default=-3"])
    c = Contrast.parse("ketamine - baseline")
    assert _design_pct(sim, "AZ10419369", "NAcc", c) == pytest.approx(15.0)
    assert _design_pct(sim, "AZ10419369", "VP", c) == pytest.approx(20.0)  # kept
    assert _design_pct(sim, "DASB", "caudate", c) == pytest.approx(-3.0)
    assert _design_pct(sim, "DASB", "NAcc", c) == pytest.approx(-20.0)  # named: kept
    with pytest.raises(ConfigError, match="effect"):
        with_effects(sim, ["AZ10419369-ketamine-NAcc=15"])
    with pytest.raises(ConfigError, match="condition"):
        with_effects(sim, ["AZ10419369:placebo:NAcc=15"])


@pytest.mark.slow
def test_region_path_matches_region_means_of_simulated_images():
    """The region-level noise model against the image path of the simulator itself.

    Region means of a simulated noisy image, standardised by the region path's
    predicted mean and SD, have mean ~0 and SD ~1 over every region x frame.
    """
    import dataclasses

    from petbind.simulate.config import load_config
    from petbind.simulate.phantom import REGIONS
    from petbind.simulate.study import make_geometry, scan_image, scan_truth
    from petbind.stats.power import RegionScanner

    cfg = load_config(None, subjects=1, tracers=["AZ10419369"], conditions=["baseline"])
    geo = make_geometry(cfg)
    rs = RegionScanner(geo)
    zs = []
    for seed in (1, 2, 3):
        c = dataclasses.replace(cfg, seed=seed)
        truth = scan_truth(c, 0, 0, 0)
        img, _ = scan_image(c, geo, truth)
        region_of_voxel = np.concatenate([[-1], geo.label_region])[geo.dseg]
        nf = rs.noisefree(truth.tacs)
        lam = truth.tracer.isotope.decay_constant_per_min
        noisy = rs.noisy(truth.tacs, c.timing, lam, c.noise, np.random.default_rng(seed))
        label_tacs = truth.tacs[rs.label_region]
        c_peak = float((rs.unique_rows @ label_tacs).max())
        scale = c.noise**2 * c_peak * np.exp(lam * c.timing.mid) / c.timing.duration
        pred_sd = np.sqrt(np.maximum(nf, 0) * scale / rs.counts[:, None])
        assert np.isfinite(noisy[rs.counts > 0]).all()
        for i, _name in enumerate(REGIONS):
            vox = region_of_voxel == i
            if rs.counts[i] == 0:
                continue
            mean = img[vox].mean(axis=0)
            zs.append((mean - nf[i]) / pred_sd[i])
    z = np.concatenate(zs)
    print(f"z over {z.size} region x frame values: mean {z.mean():.3f}, SD {z.std():.3f}")
    assert abs(z.mean()) < 0.15 and 0.85 < z.std() < 1.15, (z.mean(), z.std())


def test_design_from_study_takes_baseline_bp_and_between_subject_cv(tmp_path):
    import pandas as pd

    from petbind.simulate.config import load_config
    from petbind.stats.power_design import design_from_study
    from petbind.study.config import load_config as load_study

    rng = np.random.default_rng(0)
    rows = []
    for s in range(10):
        f = 1 + 0.2 * rng.standard_normal()
        for region, bp in (("NAcc", 2.0), ("VP", 1.0)):
            rows.append({"subject": f"{s:02d}", "condition": "baseline",
                         "tracer": "AZ10419369", "run": "n/a", "region": region,
                         "model": "srtm", "bp_nd": bp * f, "valid": True})
    (tmp_path / "group").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "group" / "outcomes.tsv", sep="\t", index=False)
    sim = load_config(None)
    new, notes = design_from_study(tmp_path, sim, load_study(None))
    tr = new.tracers[0]
    df = pd.DataFrame(rows)
    assert tr.regions["NAcc"].bp_nd == pytest.approx(df[df.region == "NAcc"].bp_nd.mean())
    assert tr.regions["caudate"].bp_nd == sim.tracers[0].regions["caudate"].bp_nd  # kept
    cv = df[df.region == "NAcc"].bp_nd.std() / df[df.region == "NAcc"].bp_nd.mean()
    expect = np.sqrt(cv**2 - sim.scan_cv_subcortex**2)
    assert new.between_subject_cv == pytest.approx(expect, rel=1e-6)
    assert any("no repeated baseline runs" in n for n in notes)


def test_counts_weights_get_the_designs_radionuclide_like_a_sidecar():
    """A study config with weights = "counts" needs the isotope; the region path gives it."""
    import dataclasses

    from petbind.simulate.config import load_config
    from petbind.stats.power import prospective_power
    from petbind.study.config import load_config as load_study

    sim = load_config(None, tracers=["AZ10419369"], conditions=["baseline", "ketamine"])
    study = load_study(None)
    tc = study.tracers["AZ10419369"]
    tc = dataclasses.replace(tc, model_settings={"srtm": {"weights": "counts"}})
    study = dataclasses.replace(study, tracers={"AZ10419369": tc},
                                contrasts=[Contrast.parse("ketamine - baseline")])
    res = prospective_power(sim, study, PowerSettings(n_values=(2,), n_studies=2, workers=1,
                                                      models="primary"))
    assert res.table["mean_valid_n"].min() == 2.0
