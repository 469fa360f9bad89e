"""The demo's study part: simulate the founding study, run the pipeline on it, print.

``petbind demo`` on a fresh machine: the simulator writes the ketamine
5-HT1B / SERT macaque study (4 subjects x 3 conditions x 2 tracers, known
truth) to ``OUT/bids``, the pipeline runs it with the packaged
``data/demo_study.toml`` into ``OUT/derivatives/petbind``, and the console shows
the estimated % changes beside the simulator's truth (:func:`analyse_demo`).
The command (:func:`petbind.commands.demo.run_demo`) then builds the HTML
report: the report sits above the study in the layers, so the study never
calls it.

``petbind demo --realistic`` analyses the same study as raw scans: the
simulator (``data/demo_realistic_simulate.toml`` over the default) puts each
animal in its own native position with its own T1w and moves the head
between frames; the pipeline (``data/demo_realistic_study.toml`` over
``demo_study.toml``) realigns the frames, registers PET -> T1w -> template,
brings the template atlas into each scan and runs the voxel statistics in
template space. It writes ``OUT/realistic/bids`` and
``OUT/realistic/derivatives/petbind`` beside the default demo's folders (whose
analysis it reuses, or runs, to print how the two answers compare).
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Regions shown in the console table (all regions are in roi_stats.tsv).
DEMO_REGIONS = ("NAcc", "VP", "putamen", "thalamus")


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and how long each stage took (s)."""

    bids_dir: Path
    out_dir: Path
    report: Path | None
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    study: Any = None
    comparison: list[dict[str, Any]] = field(default_factory=list)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the tables of ``extra`` merged in, key by key (a new dict)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _packaged(name: str) -> dict[str, Any]:
    from petbind.io.files import package_text

    return tomllib.loads(package_text("data", name))


def realistic_configs(sim_raw: dict[str, Any] | None = None,
                      study_raw: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Simulator and study configs of ``petbind demo --realistic``.

    Parameters
    ----------
    sim_raw : dict, optional
        Simulation TOML document to start from (default: the founding study,
        ``petbind simulate --print-config``); ``data/demo_realistic_simulate.toml``
        is merged over it.
    study_raw : dict, optional
        Study TOML document to start from (default: ``data/demo_study.toml``);
        ``data/demo_realistic_study.toml`` is merged over it.

    Returns
    -------
    (SimConfig, StudyConfig)
    """
    from petbind.simulate.config import default_config_text
    from petbind.simulate.config import parse_config as parse_sim
    from petbind.study.config import parse_config as parse_study

    sim = _merge(sim_raw if sim_raw is not None else tomllib.loads(default_config_text()),
                 _packaged("demo_realistic_simulate.toml"))
    study = _merge(study_raw if study_raw is not None else _packaged("demo_study.toml"),
                   _packaged("demo_realistic_study.toml"))
    return (parse_sim(sim, source="petbind/data/demo_realistic_simulate.toml"),
            parse_study(study, source="petbind/data/demo_realistic_study.toml"))


def compare_changes(default: list[dict[str, Any]], realistic: list[dict[str, Any]],
                    regions: tuple[str, ...] | None = DEMO_REGIONS) -> list[dict[str, Any]]:
    """% changes of the realistic demo beside the default demo's, per tracer x contrast x region.

    Parameters
    ----------
    default, realistic : list of dict
        ``summary.json`` ``highlights`` (``roi_stats.tsv`` rows of the primary models).
    regions : tuple of str, optional
        Regions to keep (None: all).

    Returns
    -------
    list of dict
        ``tracer, contrast, region, pct_default, pct_realistic, difference``
        (percentage points) and ``pct_change_true`` when known.
    """
    key = ("tracer", "contrast", "region")
    base = {tuple(r[k] for k in key): r for r in default}
    rows = []
    for r in realistic:
        k = tuple(r[c] for c in key)
        if k not in base or (regions is not None and r["region"] not in regions):
            continue
        a, b = base[k].get("pct_change"), r.get("pct_change")
        diff = b - a if a is not None and b is not None else None
        rows.append({"tracer": k[0], "contrast": k[1], "region": k[2], "pct_default": a,
                     "pct_realistic": b, "difference": diff,
                     "pct_change_true": r.get("pct_change_true")})
    if regions is not None:
        order = {g: i for i, g in enumerate(regions)}
        rows.sort(key=lambda x: (x["tracer"], x["contrast"], order[x["region"]]))
    return rows


def comparison_tables(rows: list[dict[str, Any]]) -> list[Any]:
    """Rich Tables of :func:`compare_changes`, one per contrast."""
    from rich import box
    from rich.table import Table

    def num(x: Any) -> str:
        return "n/a" if x is None else f"{x:+.1f}"

    tables = []
    for contrast in dict.fromkeys(r["contrast"] for r in rows):
        t = Table(title=f"{contrast}: % change in BP_ND, raw scans (realistic) vs "
                        "pre-aligned scans (default demo)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
        t.add_column("tracer", overflow="fold")
        t.add_column("region", overflow="fold")
        for name in ("default", "realistic", "difference (pp)", "truth"):
            t.add_column(name, justify="right", no_wrap=True)
        for r in rows:
            if r["contrast"] == contrast:
                t.add_row(r["tracer"], r["region"], num(r["pct_default"]),
                          num(r["pct_realistic"]), num(r["difference"]),
                          num(r["pct_change_true"]))
        tables.append(t)
    return tables


def simulate_if_needed(bids: Path, sim_config: Any = None, *, progress: bool = True,
                       console: Any = None, scheduler: Any = None) -> bool:
    """Simulate the study into ``bids`` unless a complete simulation is already there.

    The simulator writes ``derivatives/petbind-sim/truth.tsv`` last, so its
    presence means the dataset is complete. Returns True when it simulated.
    ``scheduler``: where the subjects are simulated (the analysis's; the files
    are the same on every scheduler, :func:`petbind.simulate.study.simulate_study`).
    """
    from petbind.simulate.study import simulate_study
    from petbind.study.console import progress_bar

    if (bids / "derivatives" / "petbind-sim" / "truth.tsv").exists():
        return False
    with progress_bar(progress, console) as bar:
        task = bar.add_task("simulate", total=None)

        def tick(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=f"simulate {what}")

        simulate_study(sim_config, bids, progress=tick, scheduler=scheduler)
    return True


def analyse_demo(out: str | Path = "petbind-demo", *, scheduler: str | None = None,
                 progress: bool = True, console: Any = None, err_console: Any = None,
                 sim_config: Any = None, study_config: Any = None, realistic: bool = False,
                 realistic_setup: tuple[Any, Any] | None = None) -> DemoResult:
    """Simulate and analyse the founding study, and print its answer beside the truth.

    Everything of ``petbind demo`` but the report
    (:func:`petbind.commands.demo.run_demo` adds it).

    Parameters
    ----------
    out : path
        Demo folder: ``bids/`` (simulated dataset) and ``derivatives/petbind/``.
    scheduler : None or a ``--scheduler`` word (:func:`petbind.compute.parse_scheduler`)
        Where the per-scan tasks run.
    progress : bool
        Progress bars.
    console, err_console : rich Console, optional
        Where the table and the progress / log lines go.
    sim_config : SimConfig, optional
        Simulator config (default: the founding study).
    study_config : StudyConfig, optional
        Pipeline config (default: ``petbind/data/demo_study.toml``).
    realistic : bool
        Also simulate the study as raw scans (native positions, head motion,
        T1w) into ``OUT/realistic/bids``, analyse it with preprocessing into
        ``OUT/realistic/derivatives/petbind``, and print its % changes beside
        the default analysis's.
    realistic_setup : (SimConfig, StudyConfig), optional
        Configs of the realistic part (default: :func:`realistic_configs`).

    Returns
    -------
    DemoResult
        Of the realistic analysis when ``realistic`` (with ``comparison``),
        else of the default one; ``report`` is None.
    """
    from rich.console import Console

    from petbind.study.config import demo_config
    from petbind.study.console import summary_tables
    from petbind.study.pipeline import run_study

    console = console or Console()
    err_console = err_console or Console(stderr=True)
    root = Path(out)
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def analyse(folder: Path, sim: Any, cfg: Any, prefix: str) -> Any:
        bids = folder / "bids"
        t, c = time.perf_counter(), time.process_time()
        simulated = simulate_if_needed(bids, sim, progress=progress, console=err_console,
                                       scheduler=scheduler)
        seconds[f"{prefix}simulate"] = time.perf_counter() - t
        cpu[f"{prefix}simulate"] = time.process_time() - c
        if not simulated:
            err_console.print(f"using the simulated dataset already in {bids}", highlight=False)
        from petbind.pvc.summary import with_simulator_psf

        cfg = with_simulator_psf(cfg, sim)
        res = run_study(bids, cfg, out_dir=folder / "derivatives" / "petbind",
                        scheduler=scheduler, progress=progress, console=err_console,
                        log=lambda m: err_console.print(m, highlight=False))
        seconds.update({f"{prefix}{k}": v for k, v in res.seconds.items()})
        cpu.update({f"{prefix}{k}": v for k, v in res.cpu_seconds.items()})
        return res

    default = None
    if realistic:
        err_console.print("default demo (pre-aligned scans), for comparison:", highlight=False)
        default = analyse(root, sim_config, study_config or demo_config(), "default_")
        root = root / "realistic"
        err_console.print("realistic demo (raw scans: native positions, head motion, T1w):",
                          highlight=False)
        sim_config, study_config = realistic_setup or realistic_configs()
    result = analyse(root, sim_config, study_config or demo_config(), "")
    bids, out_dir = root / "bids", result.out_dir

    console.print("Ketamine challenge: estimated change in BP_ND beside the simulator's "
                  "truth (primary model; every region and model in group/roi_stats.tsv)",
                  highlight=False)
    for table in summary_tables(result.summary["highlights"], regions=DEMO_REGIONS):
        console.print(table)
    console.print("truth = the simulated tissue's change; small regions (NAcc, VP) lose "
                  "part of theirs to partial-volume mixing with neighbours (2.8 mm PSF). "
                  "n = 4 animals: the exact sign-flip voxel test cannot give FWE p below "
                  "1/16, and the Wilcoxon test not below 0.125. How many animals a "
                  "study of this design needs: `petbind power`.", highlight=False)
    if result.summary.get("pvc"):
        from petbind.pvc.summary import compare, describe, tables

        for table in tables(compare(result.summary["highlights"],
                                    result.summary["pvc"]["highlights"], DEMO_REGIONS)):
            console.print(table)
        console.print(describe(result.summary["pvc"]), highlight=False)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    comparison: list[dict[str, Any]] = []
    if default is not None:
        comparison = compare_changes(default.summary["highlights"],
                                     result.summary["highlights"])
        for table in comparison_tables(comparison):
            console.print(table)
        diffs = [abs(r["difference"]) for r in comparison if r["difference"] is not None]
        if diffs:
            console.print(f"The raw-scan analysis (motion correction, registration, template "
                          f"atlas) changes these % changes by {max(diffs):.1f} percentage "
                          f"points at most (median {sorted(diffs)[len(diffs) // 2]:.1f}).",
                          highlight=False)

    console.print(f"outputs: {out_dir}", highlight=False)
    return DemoResult(bids_dir=bids, out_dir=out_dir, report=None, seconds=seconds,
                      cpu_seconds=cpu, study=result, comparison=comparison)
