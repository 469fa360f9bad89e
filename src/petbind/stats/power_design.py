"""The design a power analysis simulates, taken from a finished study.

:func:`design_from_study` / :func:`design_from_outcomes` read a study's own
baseline BP_ND, between-subject and test-retest variability into a simulator
design; :func:`with_effects` sets the planned changes; :func:`select_contrasts`
and :func:`power_design` put them together for ``petbind power`` and the
``[power]`` stage of ``petbind run``. The simulation itself is
:mod:`petbind.stats.power`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from petbind.errors import ConfigError


def design_from_study(out_dir: Any, sim_cfg: Any, study_cfg: Any
                      ) -> tuple[Any, list[str]]:
    """:func:`design_from_outcomes` of ``OUT/group/outcomes.tsv`` of a finished study.

    Raises
    ------
    DataError
        The folder has no outcome table.
    """
    from pathlib import Path

    from petbind.errors import DataError
    from petbind.io.tables import read_typed_tsv

    path = Path(out_dir) / "group" / "outcomes.tsv"
    if not path.exists():
        raise DataError("no outcome table in the study folder", path=path,
                        field="--from-study", fix="give the output folder of `petbind run`")
    df = read_typed_tsv(path, ("subject", "condition", "run"), default_na=True,
                        booleans=False)
    return design_from_outcomes(df, sim_cfg, study_cfg)


def design_from_outcomes(outcomes: pd.DataFrame, sim_cfg: Any, study_cfg: Any
                         ) -> tuple[Any, list[str]]:
    """A simulator design whose baseline BP_ND and variability are a finished study's.

    From the study's outcome table (``group/outcomes.tsv``: the primary model
    of each tracer, valid fits, baseline condition of ``study_cfg``):

    - each region's baseline BP_ND becomes the mean over subjects;
    - the between-subject CV becomes ``sqrt(max(cv_b^2 - cv_s^2, 0))`` where
      ``cv_b`` is the median over target regions of the baseline CV across
      subjects and ``cv_s`` the scan-to-scan (test-retest) CV: the median
      within-subject CV of repeated baseline runs when the study has them
      (:func:`petbind.stats.reliability.retest_statistics`), else the design's
      subcortical ``scan_cv_subcortex`` (kept);
    - drug effects, kinetics other than BP_ND, scanner and noise stay those
      of ``sim_cfg`` (the effect to plan for is a hypothesis, not an estimate).

    Parameters
    ----------
    outcomes : DataFrame
        ``subject, condition, tracer, region, model, bp_nd, valid`` (+ ``run``).
    sim_cfg : SimConfig
    study_cfg : StudyConfig

    Returns
    -------
    sim_cfg : SimConfig
    notes : list of str
        What was taken from the study, for ``power.json``.
    """
    from petbind.simulate.config import RegionTruth
    from petbind.stats.reliability import retest_statistics

    df = outcomes.copy()
    df["valid"] = df["valid"].astype(str).str.lower().isin(["true", "1"])
    df["bp_nd"] = pd.to_numeric(df["bp_nd"], errors="coerce")
    if "run" in df:  # "n/a" / "" of the TSV: no run label
        df["run"] = df["run"].where(~df["run"].astype(str).isin(["n/a", "", "nan", "None"]))
    base = study_cfg.statistics.baseline_condition
    notes: list[str] = []
    tracers = []
    cvs: list[float] = []
    retest_cv: list[float] = []
    for tr in sim_cfg.tracers:
        tc = study_cfg.tracers.get(tr.name)
        sub = df[(df["tracer"] == tr.name) & df["valid"]] if tc is not None else df.iloc[:0]
        if tc is not None:
            sub = sub[sub["model"] == tc.primary_model]
        rt = retest_statistics(sub) if len(sub) else pd.DataFrame()
        if len(rt):
            retest_cv.extend(rt.loc[rt["condition"] == base, "wscv_pct"].dropna() / 100)
        bl = sub[sub["condition"] == base]
        if bl.empty:
            tracers.append(tr)
            continue
        per_subject = bl.groupby(["region", "subject"])["bp_nd"].mean()
        stats_ = per_subject.groupby("region").agg(["mean", "std", "count"])
        regions = dict(tr.regions)
        for region, r in stats_.iterrows():
            if region in regions and region != sim_cfg.reference and np.isfinite(r["mean"]):
                regions[region] = RegionTruth(bp_nd=float(r["mean"]), r1=regions[region].r1,
                                              vb=regions[region].vb)
                if r["count"] >= 2 and r["mean"] > 0:
                    cvs.append(float(r["std"] / r["mean"]))
        notes.append(f"{tr.name}: baseline BP_ND of {len(stats_)} regions from "
                     f"{bl['subject'].nunique()} subjects ({tc.primary_model})")
        tracers.append(dataclasses.replace(tr, regions=regions))
    scan_cv = float(np.median(retest_cv)) if retest_cv else sim_cfg.scan_cv_subcortex
    changes: dict[str, Any] = {"tracers": tracers}
    if retest_cv:
        changes.update(scan_cv_cortex=scan_cv, scan_cv_subcortex=scan_cv)
        notes.append(f"scan-to-scan CV {100 * scan_cv:.1f} % from repeated baseline runs")
    else:
        notes.append(f"no repeated baseline runs: scan-to-scan CV kept at "
                     f"{100 * sim_cfg.scan_cv_cortex:.0f} / "
                     f"{100 * sim_cfg.scan_cv_subcortex:.0f} % (cortex / subcortex)")
    if cvs:
        total = float(np.median(cvs))
        between = float(np.sqrt(max(total**2 - scan_cv**2, 0.0)))
        changes["between_subject_cv"] = between
        notes.append(f"between-subject CV {100 * between:.1f} % (baseline CV "
                     f"{100 * total:.1f} % less the scan-to-scan part; the estimates' fit "
                     "error is counted in it too)")
    return dataclasses.replace(sim_cfg, **changes), notes


def with_effects(sim_cfg: Any, specs: Sequence[str], field: str = "--effect") -> Any:
    """The design with drug effects set from ``TRACER:CONDITION:REGION=PCT`` strings.

    ``PCT`` is the % change of BP_ND in ``REGION`` under ``CONDITION``
    (``REGION`` may be ``default``, the change of every region not named).
    Other regions, conditions and R1 effects are kept.

    Raises
    ------
    ConfigError
        A malformed spec, or a tracer / condition the design does not have.
    """
    from petbind.simulate.config import Effect
    from petbind.stats.power_config import EFFECT_RE

    tracers = {t.name: t for t in sim_cfg.tracers}
    for spec in specs:
        m = EFFECT_RE.fullmatch(spec)
        if not m:
            raise ConfigError(f"cannot read effect {spec!r}", field=field,
                              fix="write TRACER:CONDITION:REGION=PCT, e.g. "
                                  "AZ10419369:ketamine:NAcc=15")
        tracer, cond, region, pct = m.groups()
        if tracer not in tracers:
            raise ConfigError(f"tracer {tracer!r} is not in the design", field=field,
                              fix=f"use one of {sorted(tracers)}")
        if cond not in sim_cfg.conditions:
            raise ConfigError(f"condition {cond!r} is not in the design", field=field,
                              fix=f"use one of {sim_cfg.conditions}")
        tr = tracers[tracer]
        old = tr.effect(cond)
        bp = {**old.bp_nd_change_pct, region: float(pct)}
        effects = {**tr.effects, cond: Effect(bp, dict(old.r1_change_pct))}
        tracers[tracer] = dataclasses.replace(tr, effects=effects)
    return dataclasses.replace(sim_cfg, tracers=[tracers[t.name] for t in sim_cfg.tracers])


def select_contrasts(study_cfg: Any, chosen: Sequence[str], field: str = "--contrasts"
                     ) -> Any:
    """The study config with only the contrasts named (by name or expression) in ``chosen``.

    Raises
    ------
    ConfigError
        A name that is no contrast of the study.
    """
    if not chosen:
        return study_cfg
    keep = []
    for x in chosen:
        hit = [c for c in study_cfg.contrasts if x in (c.name, c.expr)]
        if not hit:
            raise ConfigError(f"{x!r} is not a contrast of the study", field=field,
                              fix="use a name or expression of [[contrasts]]: "
                                  + ", ".join(c.name for c in study_cfg.contrasts))
        keep.extend(c for c in hit if c not in keep)
    return dataclasses.replace(study_cfg, contrasts=tuple(keep))


def power_design(sim_cfg: Any, study_cfg: Any, *, outcomes: pd.DataFrame | None = None,
                 effects: Sequence[str] = (), contrasts: Sequence[str] = (),
                 effects_field: str = "--effect", contrasts_field: str = "--contrasts"
                 ) -> tuple[Any, Any, list[str]]:
    """The design and analysis to simulate: ``petbind power`` and ``[power]`` alike.

    Parameters
    ----------
    sim_cfg : SimConfig
        The simulator design.
    study_cfg : StudyConfig
        The analysis.
    outcomes : DataFrame, optional
        A finished study's outcome table: its baseline BP_ND and variability
        replace the design's (:func:`design_from_outcomes`).
    effects : sequence of str
        ``TRACER:CONDITION:REGION=PCT`` effects to plan for (:func:`with_effects`).
    contrasts : sequence of str
        Contrasts to keep (:func:`select_contrasts`; empty = all).
    effects_field, contrasts_field : str
        Option or config key named in errors.

    Returns
    -------
    sim_cfg, study_cfg, notes
        ``notes`` say what came from the study and the effects (for ``power.json``).
    """
    notes: list[str] = []
    if outcomes is not None:
        sim_cfg, notes = design_from_outcomes(outcomes, sim_cfg, study_cfg)
    if effects:
        sim_cfg = with_effects(sim_cfg, effects, field=effects_field)
        notes.append("effects to plan for: " + ", ".join(effects))
    return sim_cfg, select_contrasts(study_cfg, contrasts, field=contrasts_field), notes
