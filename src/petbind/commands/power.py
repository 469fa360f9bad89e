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

from petbind.errors import ConfigError


def _ints(value: str, option: str) -> tuple[int, ...]:
    """``"4,6,8"`` or ``"3..12"`` (inclusive) to integers."""
    text = value.strip()
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split(".."))
            out = tuple(range(lo, hi + 1))
        else:
            out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        out = ()
    if not out:
        raise ConfigError(f"cannot read {option} {value!r}", field=option,
                          fix=f"give e.g. {option} 4,6,8,10,12 or {option} 3..12")
    return tuple(sorted(set(out)))


def power(
    out: Annotated[Path, typer.Option("--out", help="Folder to write power.tsv/json/png.")],
    simulate_config: Annotated[Path | None, typer.Option(
        "--simulate-config",
        help="Design TOML of `petbind simulate` (default: the founding study).")] = None,
    study_config: Annotated[Path | None, typer.Option(
        "--study-config",
        help="Study TOML of `petbind run` (models, k2', contrasts; default: the demo's).")
    ] = None,
    from_study: Annotated[Path | None, typer.Option(
        "--from-study",
        help="A finished `petbind run` output folder: take baseline BP_ND and "
             "between-subject variability from its estimates.")] = None,
    n: Annotated[str, typer.Option(
        "--n", help="Numbers of subjects: 4,6,8,10,12 or 3..12.")] = "4,6,8,10,12",
    studies: Annotated[int, typer.Option(
        "--studies", help="Simulated studies (the same studies serve every n).")] = 200,
    alpha: Annotated[float, typer.Option("--alpha", help="Two-sided level.")] = 0.05,
    workers: Annotated[int, typer.Option(
        "--workers", help="Worker processes (dask).")] = 2,
    models: Annotated[str, typer.Option(
        "--models", help="'all' configured models or the 'primary' one.")] = "all",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated studies.")] = 0,
    effect: Annotated[list[str] | None, typer.Option(
        "--effect",
        help="Effect to plan for, TRACER:CONDITION:REGION=PCT (% change of BP_ND), e.g. "
             "AZ10419369:ketamine:NAcc=15; repeat for several.")] = None,
) -> None:
    """Prospective power vs number of subjects, by simulating the design."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from petbind.commands.consoles import console
    from petbind.simulate.config import load_config as load_sim
    from petbind.stats.power import PowerSettings, design_from_study, prospective_power
    from petbind.stats.power_output import write_power
    from petbind.study.config import load_config as load_study
    from petbind.study.config import parse_config

    settings = PowerSettings(n_values=_ints(n, "--n"), n_studies=studies, alpha=alpha,
                             seed=seed, workers=workers, models=models)
    sim = load_sim(simulate_config)
    if study_config is None:
        import tomllib

        from petbind.io.files import package_text

        text = package_text("data", "demo_study.toml")
        study = parse_config(tomllib.loads(text), source="<demo study config>")
    else:
        study = load_study(study_config)
    notes: list[str] = []
    if from_study is not None:
        sim, notes = design_from_study(from_study, sim, study)
    if effect:
        from petbind.stats.power import with_effects

        sim = with_effects(sim, effect)
        notes.append("effects set on the command line: " + ", ".join(effect))
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task("simulated studies", total=settings.n_studies)
        result = prospective_power(
            sim, study, settings,
            progress=lambda done, total: bar.update(task, completed=done))
    result.info["notes"] = notes + result.info["notes"]
    result.info["simulate_config"] = str(simulate_config) if simulate_config else "default"
    result.info["study_config"] = str(study_config) if study_config else "demo"
    result.info["from_study"] = str(from_study) if from_study else None
    paths = write_power(result, out)
    console.print(f"{settings.n_studies} simulated studies at n = "
                  f"{', '.join(map(str, settings.n_values))} in "
                  f"{result.info['seconds']:.0f} s; wrote {', '.join(p.name for p in paths)} "
                  f"to {out}")


def register(app: typer.Typer) -> None:
    """Add ``power`` to the ``petbind`` command."""
    app.command("power")(power)
