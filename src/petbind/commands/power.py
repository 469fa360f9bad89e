"""``petbind power``: prospective power of a study design by simulation.

Simulates many studies of a design (``petbind simulate`` config, default the
founding study) at several numbers of subjects, fits them with the study
config's models and tests them with its contrasts, at region level
(:mod:`petbind.stats.power`), and writes ``power.tsv``, ``power.json`` and
``power.png`` into ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petbind.compute import SCHEDULER_HELP
from petbind.errors import ConfigError


def _ints(value: str, option: str) -> tuple[int, ...]:
    """``"4,6,8"`` or ``"3..12"`` (inclusive) to integers."""
    from petbind.stats.power_config import parse_n

    return parse_n(value, option)


def _names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(x.strip() for x in value.split(",") if x.strip())


def power(
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder to write power.tsv/json/png (default with --config and a "
                      "finished study: OUT/group/power of that study).")] = None,
    simulate_config: Annotated[Path | None, typer.Option(
        "--simulate-config",
        help="Design TOML of `petbind simulate` (default: power.simulate_config of the study "
             "config, else the founding study).")] = None,
    study_config: Annotated[Path | None, typer.Option(
        "--study-config", "--config",
        help="Study TOML of `petbind run` (models, k2', contrasts and its [power] section, "
             "whose keys are this command's defaults; default: the demo's).")] = None,
    from_study: Annotated[Path | None, typer.Option(
        "--from-study",
        help="A finished `petbind run` output folder: take baseline BP_ND and "
             "between-subject variability from its estimates (default with --config and "
             "power.from_study: the study's output folder, when it has one).")] = None,
    n: Annotated[str | None, typer.Option(
        "--n", help="Numbers of subjects: 4,6,8,10,12 or 3..12 (default: power.n, else "
                    "4,6,8,10,12).")] = None,
    studies: Annotated[int | None, typer.Option(
        "--studies", help="Simulated studies (the same studies serve every n; default: "
                          "power.n_studies, else 200).")] = None,
    alpha: Annotated[float | None, typer.Option(
        "--alpha", help="Two-sided level (default: power.alpha, else 0.05).")] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help=SCHEDULER_HELP + " Default: local:WORKERS (sync for 1).")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", help="Worker processes when --scheduler is not given.")] = 2,
    models: Annotated[str | None, typer.Option(
        "--models", help="'all' configured models or the 'primary' one (default: "
                         "power.models, else all).")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed of the simulated studies (default: power.seed, else 0).")] = None,
    effect: Annotated[list[str] | None, typer.Option(
        "--effect",
        help="Effect to plan for, TRACER:CONDITION:REGION=PCT (% change of BP_ND), e.g. "
             "AZ10419369:ketamine:NAcc=15; repeat for several (default: power.effects).")
    ] = None,
    regions: Annotated[str | None, typer.Option(
        "--regions", help="Target regions to test, comma-separated (default: power.regions, "
                          "else every tracer's targets).")] = None,
    contrasts: Annotated[str | None, typer.Option(
        "--contrasts", help="Contrasts to test, names or expressions, comma-separated "
                            "(default: power.contrasts, else all).")] = None,
) -> None:
    """Prospective power vs number of subjects, by simulating the design."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from petbind.commands.consoles import console
    from petbind.compute import parse_scheduler
    from petbind.simulate.config import load_config as load_sim
    from petbind.stats.power import prospective_power
    from petbind.stats.power_design import design_from_study, power_design
    from petbind.stats.power_output import write_power
    from petbind.study.config import demo_config
    from petbind.study.config import load_config as load_study
    from petbind.study.power_stage import power_settings

    study = demo_config() if study_config is None else load_study(study_config)
    pc = study.power
    settings = power_settings(
        study, n_values=_ints(n, "--n") if n is not None else None, n_studies=studies,
        alpha=alpha, seed=seed, workers=workers, models=models, regions=_names(regions))
    if scheduler is None:
        scheduler = f"local:{workers}" if workers > 1 else "sync"
    parse_scheduler(scheduler)  # a wrong word fails now, not after the set-up
    if from_study is None and study_config is not None and pc.from_study \
            and study.dataset is not None:
        default_out = study.dataset / "derivatives" / "petbind"
        if (default_out / "group" / "outcomes.tsv").is_file():
            from_study = default_out
    if out is None:
        if from_study is None:
            raise ConfigError("no output folder given", field="--out",
                              fix="give --out DIR (or --from-study OUT to write "
                                  "OUT/group/power)")
        out = Path(from_study) / "group" / "power"
    sim_path = simulate_config if simulate_config is not None else pc.simulate_config
    sim = load_sim(sim_path)
    notes: list[str] = []
    if from_study is not None:
        sim, notes = design_from_study(from_study, sim, study)
    chosen = _names(contrasts)
    sim, study, more = power_design(
        sim, study, effects=effect if effect is not None else pc.effects,
        contrasts=chosen if chosen is not None else pc.contrasts,
        effects_field="--effect" if effect is not None else "power.effects",
        contrasts_field="--contrasts" if chosen is not None else "power.contrasts")
    notes += more
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task("simulated studies", total=settings.n_studies)
        result = prospective_power(
            sim, study, settings, scheduler=scheduler,
            progress=lambda done, total: bar.update(task, completed=done))
    result.info["notes"] = notes + result.info["notes"]
    result.info["simulate_config"] = str(sim_path) if sim_path else "default"
    result.info["study_config"] = str(study_config) if study_config else "demo"
    result.info["from_study"] = str(from_study) if from_study else None
    paths = write_power(result, out)
    console.print(f"{settings.n_studies} simulated studies at n = "
                  f"{', '.join(map(str, settings.n_values))} in "
                  f"{result.info['seconds']:.0f} s ({result.info['scheduler']}); wrote "
                  f"{', '.join(p.name for p in paths)} to {out}", markup=False,
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``power`` to the ``petbind`` command."""
    app.command("power")(power)
