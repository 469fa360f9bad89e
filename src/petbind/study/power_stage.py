"""``[power]`` of ``petbind run``: prospective power of the finished study's own design.

Called by :func:`petbind.study.pipeline.run_study` after the region
statistics when the study config has ``[power] enabled = true``. It takes the
simulator design (``power.simulate_config``, default the founding study),
replaces its baseline BP_ND and between-subject / test-retest variability by
this study's estimates (``power.from_study``), sets the effects to plan for
(``power.effects``), simulates ``power.n_studies`` studies at ``power.n``
subjects through the study's own models, k2' policy and contrasts
(:func:`petbind.stats.power.prospective_power`, region level) on the run's
``--scheduler``, and writes ``group/power/`` (``power.tsv``,
``power_n80.tsv``, ``power.json``, ``power.png``), which the report's
prospective power section shows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd


def power_settings(config: Any, **override: Any) -> Any:
    """:class:`petbind.stats.power.PowerSettings` of a study config's ``[power]``."""
    from petbind.stats.power import PowerSettings

    p = config.power
    kw = {"n_values": p.n, "n_studies": p.n_studies, "alpha": p.alpha, "seed": p.seed,
          "models": p.models, "regions": p.regions}
    kw.update({k: v for k, v in override.items() if v is not None})
    return PowerSettings(**kw)


def write_power_stage(config: Any, out: Path, outcomes: pd.DataFrame | None, *,
                      scheduler: Any = None, log: Callable[[str], None] | None = None
                      ) -> list[Path]:
    """Run the ``[power]`` analysis of a finished study and write ``group/power/``.

    Parameters
    ----------
    config : StudyConfig
        With ``config.power.enabled``.
    out : Path
        The study's output root.
    outcomes : DataFrame or None
        The study's outcome table (used when ``power.from_study``).
    scheduler : any ``--scheduler`` value, optional
        Where the simulated studies run (None: in this process).
    log : callable, optional

    Returns
    -------
    list of Path
        The files written.
    """
    from petbind.simulate.config import load_config as load_sim
    from petbind.stats.power import prospective_power
    from petbind.stats.power_design import power_design
    from petbind.stats.power_output import write_power

    p = config.power
    sim = load_sim(p.simulate_config)
    sim, study, notes = power_design(
        sim, config, outcomes=outcomes if p.from_study else None, effects=p.effects,
        contrasts=p.contrasts, effects_field="power.effects",
        contrasts_field="power.contrasts")
    settings = power_settings(config)
    if log is not None:
        log(f"prospective power: {settings.n_studies} simulated studies at n = "
            f"{', '.join(map(str, settings.n_values))}")
    result = prospective_power(sim, study, settings,
                               scheduler="sync" if scheduler is None else scheduler)
    result.info["notes"] = notes + result.info["notes"]
    result.info["simulate_config"] = str(p.simulate_config) if p.simulate_config else "default"
    result.info["study_config"] = config.source or "in memory"
    result.info["from_study"] = "this study" if p.from_study else None
    return write_power(result, Path(out) / "group" / "power")


def power_stage(config: Any, out: Path, outcomes: pd.DataFrame | None, *,
                scheduler: Any = None, log: Callable[[str], None] | None = None
                ) -> list[str]:
    """:func:`write_power_stage` inside ``petbind run``: a problem is a warning, not a failure.

    The power analysis is an addition to a finished study: a design it cannot
    simulate (e.g. target regions the simulator's phantom does not have, an
    effect naming another tracer) must not lose the run's outputs, so its
    error becomes one of the run's warnings (``summary.json``, the report).

    Returns
    -------
    list of str
        Warnings (empty when ``group/power/`` was written).
    """
    from petbind.errors import PetbindError

    try:
        write_power_stage(config, out, outcomes, scheduler=scheduler, log=log)
    except PetbindError as exc:
        msg = f"prospective power ([power]) not computed: {exc}"
        if log is not None:
            log(f"warning: {msg}")
        return [msg]
    return []
