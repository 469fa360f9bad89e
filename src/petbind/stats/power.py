"""Prospective power of a challenge study by simulation of its own design.

A lab planning a study asks "how many animals do I need to see a 15 %
change in NAcc with this tracer?". Observed ("post hoc") power cannot answer
it: it is a function of the observed p-value (Hoenig & Heisey, Am Stat 2001).
This module answers it the way the design will really be analysed:

1. draw ``n_studies`` independent studies of ``max(n)`` subjects from a
   simulator design (:class:`petbind.simulate.config.SimConfig`: kinetics,
   between-subject and scan-to-scan (test-retest) variability, drug effects,
   scanner point-spread, noise);
2. fit every scan's region curves with the study config's models and k2'
   policy (:func:`petbind.models.k2prime.k2prime_for_tracer`,
   :func:`petbind.models.make_model`), exactly as ``petbind run`` does;
3. for every n, take the first n subjects of each simulated study (common
   random numbers: the curves vs n are smooth and the differences between n
   are not Monte Carlo noise) and run the region tests of
   :mod:`petbind.stats.roi`: the two-sided paired t (``scipy.stats.ttest_rel``
   = ``ttest_1samp`` of the differences), Holm across the target regions of a
   tracer x model x contrast;
4. power = share of studies with p < alpha; Monte Carlo SE
   ``sqrt(power (1 - power) / n_studies)``; bias of the % change estimate =
   mean over studies of (estimated - true mean % change of the same subjects).

**Region-level path.** Images are not needed for region statistics, so no
image is made: a region's curve is the mean over its atlas voxels of the
noise-free blurred image (:func:`petbind.simulate.study.noisefree_tacs`:
point-spread and voxel partial-volume mixing included) plus Gaussian noise
with the variance of the mean of the image's independent voxel noise,
``sum_v sd_v^2 / n_r^2 = scale(t) mean_r(C) / n_r`` with the simulator's
counts-based ``sd_v^2 = scale(t) C_v`` (:func:`petbind.simulate.scanner.noise_sd`;
``C_peak`` is the image maximum, computed over the distinct partial-volume
weight rows). This is the distribution of the region curves the pipeline
would measure on the simulated images, without head motion (a design with
``[motion] enabled`` is simulated without it, and the result says so) and in
template position (``native_position`` is ignored: the region mixing then
differs only by the subject's pose).

Studies run in chunks (one task per chunk of studies) on the compute adapter
(:mod:`petbind.compute`: in-process, threads, a local dask cluster or a
running dask scheduler), the same ``--scheduler`` words as ``petbind run``.

Long module: the simulated-study loop (plan, region truth, estimates,
summary, scheduling) is one pipeline whose steps share the private plan and
scanner types; what could stand apart already does (the design from a
finished study: :mod:`petbind.stats.power_design`; the files:
:mod:`petbind.stats.power_output`; the ``[power]`` keys:
:mod:`petbind.stats.power_config`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from petbind.errors import ConfigError
from petbind.stats.roi import Contrast

#: Studies simulated in one dask task.
BATCH = 8


@dataclass(frozen=True)
class PowerSettings:
    """What :func:`prospective_power` simulates.

    Attributes
    ----------
    n_values : tuple of int
        Numbers of subjects to evaluate (each >= 2).
    n_studies : int
        Simulated studies (per n; the same studies serve every n).
    alpha : float
        Two-sided significance level.
    seed : int
        Seed of the study seeds.
    workers : int
        Worker processes when no scheduler is given (1 = in this process).
    models : str
        ``"all"`` (every configured model of a tracer) or ``"primary"``.
    regions : tuple of str
        Target regions to simulate and test (empty: every tracer's targets).
    """

    n_values: tuple[int, ...] = (4, 6, 8, 10, 12)
    n_studies: int = 200
    alpha: float = 0.05
    seed: int = 0
    workers: int = 2
    models: str = "all"
    regions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.n_values or min(self.n_values) < 2:
            raise ConfigError(f"numbers of subjects {list(self.n_values)}: each must be >= 2",
                              field="power.n", fix="give e.g. --n 4,6,8,10,12")
        if self.n_studies < 2:
            raise ConfigError(f"{self.n_studies} simulated studies: need at least 2",
                              field="power.n_studies", fix="use e.g. --studies 200")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha {self.alpha} is not in (0, 1)", field="power.alpha",
                              fix="use e.g. 0.05")
        if self.models not in ("all", "primary"):
            raise ConfigError(f"models {self.models!r}", field="power.models",
                              fix="use 'all' or 'primary'")


# ----------------------------------------------------------------------------
# region-level scanner
# ----------------------------------------------------------------------------
class RegionScanner:
    """Region curves of the simulator's scanner without making images.

    Parameters
    ----------
    geo : petbind.simulate.study.Geometry
        Phantom, PET grid and partial-volume weights.
    """

    def __init__(self, geo: Any) -> None:
        from petbind.simulate.phantom import REGIONS

        n_regions = len(REGIONS)
        region_of_voxel = np.concatenate([[-1], geo.label_region])[geo.dseg].ravel()
        onehot = (region_of_voxel == np.arange(n_regions)[:, None]).astype(np.float64)
        self.counts = onehot.sum(axis=1)
        w = geo.weights.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean_rows = (onehot @ w) / self.counts[:, None]
        # the image maximum is attained on one of the distinct weight rows; the
        # rows that come highest for the design's curves are kept (set_candidates)
        self.unique_rows = np.unique(np.round(w, 7), axis=0)
        self.candidates = self.unique_rows
        self.label_region = np.asarray(geo.label_region)
        self.regions = list(REGIONS)

    def set_candidates(self, tacs_list: Sequence[NDArray], keep: int = 256) -> None:
        """Keep the ``keep`` weight rows with the highest peak for each of ``tacs_list``.

        The image maximum ``C_peak`` of a scan (the noise scale) is then taken
        over these rows only: the rows near the top for the design's mean
        kinetics (noise-free, every tracer x condition) are those near the top
        for a subject's, whose kinetics differ by some 10 %; a miss changes
        ``C_peak`` by the difference between near-maximal voxels, i.e. the
        noise SD by a small fraction of a percent.
        """
        idx: set[int] = set()
        for tacs in tacs_list:
            peak = (self.unique_rows @ np.asarray(tacs, float)[self.label_region]).max(axis=1)
            idx.update(np.argsort(peak)[-keep:].tolist())
        self.candidates = self.unique_rows[sorted(idx)]

    def noisefree(self, tacs: NDArray) -> NDArray:
        """Region means of the blurred noise-free image, (n_regions, n_frames), kBq/mL."""
        return self.mean_rows @ np.asarray(tacs, float)[self.label_region]

    def noisy(self, tacs: NDArray, timing: Any, decay_constant_per_min: float, level: float,
              rng: np.random.Generator) -> NDArray:
        """Region means of a noisy image (see the module docstring).

        Parameters
        ----------
        tacs : ndarray, shape (n_regions, n_frames)
            True region curves (kBq/mL, decay-corrected), :data:`REGIONS` order.
        timing : FrameTiming
        decay_constant_per_min : float
        level : float
            The simulator's noise level (``scanner.noise``).
        rng : numpy Generator

        Returns
        -------
        ndarray, shape (n_regions, n_frames)
            Decay-corrected kBq/mL; NaN rows for regions without atlas voxels.
        """
        nf = self.noisefree(tacs)
        if level <= 0:
            return nf
        label_tacs = np.asarray(tacs, float)[self.label_region]
        c_peak = float((self.candidates @ label_tacs).max())
        scale = level * level * c_peak * np.exp(decay_constant_per_min * timing.mid) \
            / timing.duration
        with np.errstate(invalid="ignore", divide="ignore"):
            sd = np.sqrt(np.maximum(nf, 0) * scale[None, :] / self.counts[:, None])
        return nf + sd * rng.standard_normal(nf.shape)


_GEOMETRY_CACHE: dict[tuple, RegionScanner] = {}


def _scanner(cfg: Any) -> RegionScanner:
    from petbind.simulate.study import iter_truth, make_geometry

    key = (cfg.phantom_voxel_mm, cfg.phantom_seed, cfg.pet_voxel_mm, cfg.fwhm_mm,
           cfg.source, len(cfg.tracers))
    if key not in _GEOMETRY_CACHE:
        sc = RegionScanner(make_geometry(cfg))
        mean = dataclasses.replace(cfg, subjects=cfg.subjects[:1], between_subject_cv=0.0,
                                   k1prime_cv=0.0, scan_cv_cortex=0.0, scan_cv_subcortex=0.0)
        sc.set_candidates([t.tacs for t in iter_truth(mean)])
        _GEOMETRY_CACHE[key] = sc
    return _GEOMETRY_CACHE[key]


# ----------------------------------------------------------------------------
# one batch of simulated studies
# ----------------------------------------------------------------------------
@dataclass
class _Plan:
    """The arrays' axes, shared by the workers."""

    tracers: list[str]
    models: dict[str, list[str]]
    targets: dict[str, list[str]]
    conditions: list[str]
    n_max: int


def _models(study_cfg: Any, tracer: str, which: str) -> list[str]:
    t = study_cfg.tracers[tracer]
    return [t.primary_model] if which == "primary" else list(t.models)


def make_plan(sim_cfg: Any, study_cfg: Any, settings: PowerSettings) -> _Plan:
    """Check that the simulator design and the study config fit together."""
    from petbind.simulate.phantom import REGIONS

    sim_tracers = [t.name for t in sim_cfg.tracers]
    tracers = [t for t in sim_tracers if t in study_cfg.tracers]
    if not tracers:
        raise ConfigError(f"no tracer of the simulator design ({sim_tracers}) has a table in "
                          "the study config", field="tracers",
                          fix="add [tracers.NAME] tables to the study config")
    targets = {}
    for t in tracers:
        tc = study_cfg.tracers[t]
        names = list(tc.target_regions) or [
            r for r in REGIONS if r != tc.reference_region and r not in tc.exclude_regions]
        bad = [r for r in [*names, tc.reference_region] if r not in REGIONS]
        if bad:
            raise ConfigError(f"regions {bad} of tracer {t} are not simulated regions",
                              field=f"tracers.{t}.target_regions",
                              fix=f"use regions of the phantom: {', '.join(REGIONS)}")
        if settings.regions:
            names = [r for r in names if r in settings.regions]
        targets[t] = names
    if settings.regions:
        unknown = sorted(set(settings.regions) - {r for v in targets.values() for r in v})
        if unknown:
            raise ConfigError(f"regions {unknown} are not target regions of any tracer",
                              field="power.regions",
                              fix="use target regions of the study config's tracers")
        empty = [t for t in tracers if not targets[t]]
        if empty:
            tracers = [t for t in tracers if targets[t]]
    for c in study_cfg.contrasts:
        missing = [x for x in c.conditions if x not in sim_cfg.conditions]
        if missing:
            raise ConfigError(f"contrast {c.expr!r} uses condition(s) {missing} that the "
                              "simulator design does not have", field="contrasts",
                              fix=f"use conditions of the design: {sim_cfg.conditions}")
    return _Plan(tracers=tracers, models={t: _models(study_cfg, t, settings.models)
                                          for t in tracers},
                 targets=targets, conditions=list(sim_cfg.conditions),
                 n_max=max(settings.n_values))


def _study_seed(base: int, k: int) -> int:
    return int(np.random.SeedSequence([base, k]).generate_state(1, dtype=np.uint32)[0])


#: Fine-grid step (min) of the true region curves of the region path. The
#: simulator's images use 1/120 min (:func:`petbind.simulate.kinetics.pet_frame_means`);
#: at 1/60 min the frame means differ from those by at most 3e-5 (relative, demo
#: design; checked in the tests), far below the noise, at a fifth of the cost.
TRUTH_STEP_MIN = 1.0 / 60.0


def study_truth(sim_cfg: Any, i_tracer: int, n_subjects: int,
                step_min: float = TRUTH_STEP_MIN) -> tuple[NDArray, NDArray]:
    """True BP_ND and region curves of every scan of one tracer in one simulated study.

    The draws are the simulator's own (:func:`petbind.simulate.study.scan_parameters`,
    keyed by seed, subject, tracer and condition), so a scan's truth is that of
    :func:`petbind.simulate.study.scan_truth`; the curves of a subject's scans
    come from one vectorised :func:`~petbind.simulate.kinetics.pet_frame_means`
    call per subject on a ``step_min`` grid.

    Parameters
    ----------
    sim_cfg : SimConfig
        The design with this study's ``seed``.
    i_tracer : int
        Index into ``sim_cfg.tracers``.
    n_subjects : int
        Subjects 0 .. n_subjects - 1.
    step_min : float
        Fine-grid step (min).

    Returns
    -------
    bp_nd : ndarray, shape (n_subjects, n_conditions, n_regions)
        True BP_ND, :data:`~petbind.simulate.phantom.REGIONS` order.
    tacs : ndarray, shape (n_subjects, n_conditions, n_regions, n_frames)
        True decay-corrected region curves (kBq/mL).
    """
    from petbind.simulate.kinetics import pet_frame_means
    from petbind.simulate.phantom import REGIONS
    from petbind.simulate.study import scan_parameters

    tr = sim_cfg.tracers[i_tracer]
    n_c, n_r = len(sim_cfg.conditions), len(REGIONS)
    bp = np.empty((n_subjects, n_c, n_r))
    r1 = np.empty_like(bp)
    k1p = np.empty((n_subjects, n_c, 1))
    for i_s in range(n_subjects):
        for i_c in range(n_c):
            bp[i_s, i_c], r1[i_s, i_c], k1p[i_s, i_c, 0] = scan_parameters(
                sim_cfg, i_s, i_tracer, i_c)
    vb = np.tile([tr.regions[r].vb for r in REGIONS], n_c)
    k4 = np.full(n_c * n_r, tr.k4)
    # one call per subject: larger batches are slower (the fine-grid arrays
    # leave the cache)
    tacs = np.stack([pet_frame_means(tr.plasma_input, tr.blood, sim_cfg.timing,
                                     K1=(r1[i] * k1p[i]).ravel(),
                                     k2=(r1[i] * tr.k2prime).ravel(),
                                     k3=(bp[i] * tr.k4).ravel(), k4=k4, vb=vb,
                                     step_min=step_min)
                     for i in range(n_subjects)])
    return bp, tacs.reshape(*bp.shape, -1)


def simulate_estimates(sim_cfg: Any, study_cfg: Any, plan: _Plan, seeds: Sequence[int]
                       ) -> dict[str, NDArray]:
    """BP_ND estimates and truth of simulated studies at region level.

    Parameters
    ----------
    sim_cfg : SimConfig
        The design (its ``seed`` and ``subjects`` are replaced per study).
    study_cfg : StudyConfig
        Models, k2' policy, regions.
    plan : _Plan
    seeds : sequence of int
        One simulator seed per study.

    Returns
    -------
    dict
        ``"{tracer}/{model}"`` -> BP_ND estimates (NaN where the fit is
        invalid) and ``"{tracer}/truth"`` -> true BP_ND, each of shape
        (n_studies, n_max, n_conditions, n_targets).
    """
    from petbind.models import make_model, model_spec
    from petbind.models.k2prime import K2PRIME_MODELS, k2prime_for_tracer, model_kwargs
    from petbind.simulate.phantom import REGIONS
    from petbind.simulate.study import _NOISE
    from petbind.tac import TACTable

    scanner = _scanner(sim_cfg)
    subjects = [f"{i + 1:02d}" for i in range(plan.n_max)]
    shape = (len(seeds), plan.n_max, len(plan.conditions))
    out: dict[str, NDArray] = {}
    for t in plan.tracers:
        nt = len(plan.targets[t])
        out[f"{t}/truth"] = np.full((*shape, nt), np.nan)
        for m in plan.models[t]:
            out[f"{t}/{m}"] = np.full((*shape, nt), np.nan)
    tracer_index = {tr.name: i for i, tr in enumerate(sim_cfg.tracers)}
    for k, seed in enumerate(seeds):
        cfg = dataclasses.replace(sim_cfg, seed=int(seed), subjects=subjects)
        for t in plan.tracers:
            tc = study_cfg.tracers[t]
            i_t = tracer_index[t]
            lam = cfg.tracers[i_t].isotope.decay_constant_per_min
            isotope = cfg.tracers[i_t].isotope.name  # the sidecar's TracerRadionuclide
            targets = plan.targets[t]
            bp_true, tacs_true = study_truth(cfg, i_t, plan.n_max)
            out[f"{t}/truth"][k] = bp_true[..., [REGIONS.index(r) for r in targets]]
            for i_s in range(plan.n_max):
                for i_c in range(len(plan.conditions)):
                    # the scan's noise stream of the simulator (ScanTruth.rng)
                    rng = np.random.default_rng([cfg.seed, _NOISE, i_s, i_t, i_c])
                    curves = scanner.noisy(tacs_true[i_s, i_c], cfg.timing, lam, cfg.noise,
                                           rng)
                    ok = np.isfinite(curves).all(axis=1)
                    tab = TACTable(cfg.timing, curves[ok],
                                   [r for r, good in zip(scanner.regions, ok, strict=True)
                                    if good], metadata={"isotope": isotope})
                    have = [r for r in targets if r in tab.regions]
                    cols = [targets.index(r) for r in have]
                    try:
                        k2, _ = k2prime_for_tracer(tc, tab, have, "simulated scan")
                    except Exception:
                        continue
                    ref = tab.curve(tc.reference_region)
                    data = np.stack([tab.curve(r) for r in have])
                    for m in plan.models[t]:
                        kw = model_kwargs(tc, m, tab)
                        # the rule of study.pipeline._fit_regions
                        if (k2 is not None and m in K2PRIME_MODELS
                                and model_spec(m).k2prime != "no"):
                            kw["k2prime"] = k2
                        with np.errstate(all="ignore"), warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            fit = make_model(m, cfg.timing, ref, **kw).fit(data)
                        bp = np.asarray(fit.params["bp_nd"], float).reshape(-1)
                        valid = np.asarray(fit.valid, bool).reshape(-1)
                        out[f"{t}/{m}"][k, i_s, i_c, cols] = np.where(valid, bp, np.nan)
    return out


def _batch(sim_cfg: Any, study_cfg: Any, plan: _Plan, seeds: list[int]
           ) -> tuple[dict[str, NDArray], float]:
    """One task: :func:`simulate_estimates` of a chunk of studies, and its CPU seconds."""
    cpu = time.process_time()
    out = simulate_estimates(sim_cfg, study_cfg, plan, seeds)
    return out, time.process_time() - cpu


# ----------------------------------------------------------------------------
# tests of every simulated study
# ----------------------------------------------------------------------------
def holm(p: NDArray) -> NDArray:
    """Holm (1979) step-down adjusted p along the last axis; NaN entries are left out.

    Vectorised over the leading axes (one family per row); equal to
    ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]`` for each
    row (checked in the tests).
    """
    p = np.asarray(p, float)
    finite = np.isfinite(p)
    m = finite.sum(axis=-1, keepdims=True)
    filled = np.where(finite, p, np.inf)
    order = np.argsort(filled, axis=-1, kind="stable")
    ps = np.take_along_axis(filled, order, axis=-1)
    rank = np.arange(p.shape[-1])
    with np.errstate(invalid="ignore"):  # (m - rank) <= 0 only meets the inf of NaN entries
        adj = np.minimum(np.maximum.accumulate((m - rank) * ps, axis=-1), 1.0)
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return np.where(finite, out, np.nan)


def _design_pct(sim_cfg: Any, tracer: str, region: str, c: Contrast) -> float:
    """The design's % change of a contrast (drug factors only, no variability)."""
    tr = next((x for x in sim_cfg.tracers if x.name == tracer), None) if sim_cfg else None
    if tr is None:
        return float("nan")
    f = {cond: tr.effect(cond).bp_factor(region) for cond in c.conditions}
    if c.kind == "simple":
        a, b = c.terms
        return 100.0 * (f[a] / f[b] - 1.0)
    a, b, cc, d = c.terms
    return 100.0 * (f[a] / f[b] - 1.0) - 100.0 * (f[cc] / f[d] - 1.0)


def summarise(estimates: dict[str, NDArray], plan: _Plan, contrasts: Sequence[Contrast],
              sim_cfg: Any, settings: PowerSettings) -> pd.DataFrame:
    """Power and bias per tracer x model x region x contrast x n.

    Returns
    -------
    DataFrame
        Columns ``tracer, model, region, contrast, contrast_id, n, n_studies,
        n_tested, power, power_mc_se, power_holm, power_holm_mc_se,
        pct_change_design, pct_change_true, pct_change_mean, pct_change_sd,
        bias_pct, bias_mc_se, mean_valid_n`` (see docs/statistics.md).
    """
    from scipy.stats import ttest_1samp

    rows = []
    alpha = settings.alpha
    for t in plan.tracers:
        truth = estimates[f"{t}/truth"]
        for m in plan.models[t]:
            est = estimates[f"{t}/{m}"]
            for c in contrasts:
                ci = {cond: plan.conditions.index(cond) for cond in c.conditions}
                vals = {cond: est[:, :, i, :] for cond, i in ci.items()}
                tvals = {cond: truth[:, :, i, :] for cond, i in ci.items()}
                a, b, pct = c.combine(vals)
                _, _, tpct = c.combine(tvals)
                for n in settings.n_values:
                    d = (a - b)[:, :n, :]
                    pc = pct[:, :n, :]
                    ok = np.isfinite(d) & np.isfinite(pc)
                    d = np.where(ok, d, np.nan)
                    n_ok = ok.sum(axis=1)
                    with warnings.catch_warnings(), np.errstate(all="ignore"):
                        warnings.simplefilter("ignore")
                        p = np.asarray(ttest_1samp(d, 0.0, axis=1, nan_policy="omit").pvalue,
                                       float)
                        p = np.where(n_ok >= 2, p, np.nan)
                        est_pct = np.nanmean(np.where(ok, pc, np.nan), axis=1)
                        true_pct = np.nanmean(np.where(ok, tpct[:, :n, :], np.nan), axis=1)
                    ph = holm(p)
                    for j, region in enumerate(plan.targets[t]):
                        pj, hj = p[:, j], ph[:, j]
                        tested = np.isfinite(pj)
                        nt = int(tested.sum())
                        pw = float(np.mean(pj[tested] < alpha)) if nt else np.nan
                        pwh = float(np.mean(hj[tested] < alpha)) if nt else np.nan
                        e, tr_ = est_pct[:, j], true_pct[:, j]
                        fin = np.isfinite(e) & np.isfinite(tr_)
                        diff = e[fin] - tr_[fin]
                        rows.append({
                            "tracer": t, "model": m, "region": region, "contrast": c.expr,
                            "contrast_id": c.name, "n": int(n),
                            "n_studies": int(est.shape[0]), "n_tested": nt, "power": pw,
                            "power_mc_se": float(np.sqrt(pw * (1 - pw) / nt)) if nt else np.nan,
                            "power_holm": pwh,
                            "power_holm_mc_se": (float(np.sqrt(pwh * (1 - pwh) / nt))
                                                 if nt else np.nan),
                            "pct_change_design": _design_pct(sim_cfg, t, region, c),
                            "pct_change_true": float(np.mean(tr_[fin])) if fin.any() else np.nan,
                            "pct_change_mean": float(np.mean(e[fin])) if fin.any() else np.nan,
                            "pct_change_sd": (float(np.std(e[fin], ddof=1))
                                              if fin.sum() > 1 else np.nan),
                            "bias_pct": float(np.mean(diff)) if diff.size else np.nan,
                            "bias_mc_se": (float(np.std(diff, ddof=1) / np.sqrt(diff.size))
                                           if diff.size > 1 else np.nan),
                            "mean_valid_n": float(np.mean(n_ok[:, j])),
                        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------
# the whole run
# ----------------------------------------------------------------------------
@dataclass
class PowerResult:
    """Outcome of :func:`prospective_power`.

    Attributes
    ----------
    table : DataFrame
        :func:`summarise`'s table.
    info : dict
        Settings, notes (what the region-level path leaves out), seconds.
    estimates : dict of ndarray
        The per-study estimates (see :func:`simulate_estimates`).
    """

    table: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    estimates: dict[str, NDArray] = field(default_factory=dict, repr=False)


def prospective_power(sim_cfg: Any, study_cfg: Any, settings: PowerSettings, *,
                      scheduler: Any = None,
                      progress: Callable[[int, int], None] | None = None) -> PowerResult:
    """Simulate ``settings.n_studies`` studies and compute power and bias vs n.

    Parameters
    ----------
    sim_cfg : SimConfig
        Design: kinetics, variability, effects, scanner.
    study_cfg : StudyConfig
        Analysis: models, k2' policy, target regions, contrasts.
    settings : PowerSettings
    scheduler : None, str, Scheduler or distributed.Client
        Where the batches of studies run, any ``--scheduler`` word of
        :func:`petbind.compute.parse_scheduler` (``sync``, ``threads:N``,
        ``local:N``, an address). None: ``local:{settings.workers}``, or
        ``sync`` for one worker. The result does not depend on it (each study
        has its own seed).
    progress : callable, optional
        ``progress(done_studies, total_studies)``.

    Returns
    -------
    PowerResult
    """
    from petbind.compute import Task, open_engine, parse_scheduler

    t0 = time.perf_counter()
    plan = make_plan(sim_cfg, study_cfg, settings)
    seeds = [_study_seed(settings.seed, k) for k in range(settings.n_studies)]
    if scheduler is None:
        scheduler = f"local:{settings.workers}" if settings.workers > 1 else "sync"
    done = [0]

    def on_done(task: Task, result: dict[str, NDArray]) -> None:
        done[0] += len(task.args[3])
        if progress is not None:
            progress(done[0], len(seeds))

    with open_engine(parse_scheduler(scheduler), n_tasks=len(seeds)) as engine:
        # chunks of studies per task: at most BATCH, and at least one task per worker
        size = max(1, min(BATCH, -(-len(seeds) // engine.n_workers)))
        tasks = [Task(f"power-studies-{i:05d}", _batch, (sim_cfg, study_cfg, plan,
                                                          seeds[i:i + size]))
                 for i in range(0, len(seeds), size)]
        where = engine.describe()
        results = engine.run(tasks, on_done=on_done)
        n_workers = engine.n_workers
    parts = [results[t.key][0] for t in tasks]
    task_cpu = float(sum(results[t.key][1] for t in tasks))
    estimates = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    t_sim = time.perf_counter() - t0
    table = summarise(estimates, plan, study_cfg.contrasts, sim_cfg, settings)
    notes = ["Region level: region curves are simulated as the atlas-region means of the "
             "blurred, noisy image without making the image (point-spread, voxel "
             "partial-volume mixing and counts-based noise included)"]
    if sim_cfg.motion:
        notes.append("head motion of the design is not simulated at region level")
    if sim_cfg.native_position:
        notes.append("subjects are simulated in template position (native_position ignored)")
    info = {
        "n_values": list(settings.n_values), "n_studies": settings.n_studies,
        "alpha": settings.alpha, "seed": settings.seed, "workers": n_workers,
        "scheduler": where, "task_cpu_seconds": task_cpu, "studies_per_task": size,
        "models": {t: plan.models[t] for t in plan.tracers},
        "targets": plan.targets, "conditions": plan.conditions,
        "contrasts": [c.expr for c in study_cfg.contrasts],
        "simulation_seconds": t_sim, "seconds": time.perf_counter() - t0,
        "scans_simulated": settings.n_studies * plan.n_max * len(plan.conditions)
        * len(plan.tracers),
        "level": "region", "notes": notes,
        "tests": "two-sided paired t (scipy.stats.ttest_1samp of the differences, = "
                 "ttest_rel); Holm across the target regions of a tracer x model x contrast",
    }
    return PowerResult(table=table, info=info, estimates=estimates)


def n_for_power(table: pd.DataFrame, target: float = 0.8, column: str = "power"
                ) -> pd.DataFrame:
    """Smallest simulated n whose power reaches ``target``, per tracer x model x region x contrast.

    NaN where no simulated n reaches it (the answer is then "more than the
    largest n simulated").
    """
    keys = ["tracer", "model", "region", "contrast"]
    rows = []
    for key, g in table.groupby(keys, sort=False):
        g = g.sort_values("n")
        hit = g[g[column] >= target]
        rows.append({**dict(zip(keys, key, strict=True)),
                     f"n_for_{round(target * 100)}": float(hit["n"].iloc[0])
                     if len(hit) else np.nan})
    return pd.DataFrame(rows)
