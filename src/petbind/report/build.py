"""Build the study report: one self-contained HTML page from the pipeline's outputs.

:func:`build_report` reads a finished run's outputs
(:func:`petbind.report.outputs.load_outputs`, through
:mod:`petbind.study.layout`), asks each section module
(:mod:`petbind.report.sections`, :mod:`petbind.report.preprocessing`,
:mod:`petbind.report.pvc`, :mod:`petbind.report.stats_sections`) for its
part, renders ``templates/report.html.j2`` and writes ``report.html``
atomically. Missing parts of the output (no voxel statistics, no maps) leave
a sentence in their section instead of failing the report.

The page works offline from ``file://``: figures are embedded PNGs (base64),
styles and scripts are inline, the NiiVue viewer (BSD-2, vendored in
``static/``) is inline and gets its volumes as base64 NIfTI, so the page makes
no request at all. Every string from the data (subject labels, region names,
config values) goes through jinja2's autoescaping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petbind import __version__
from petbind.io.atomic import write_text_atomic
from petbind.io.files import package_text
from petbind.report.outputs import StudyOutputs, load_outputs
from petbind.report.sections.methods import CITATIONS
from petbind.report.sections.methods import MODEL_CITATION as _MODEL_CITATION
from petbind.report.sections.methods import settings_text as _settings_text
from petbind.study.layout import StudyLayout

#: Names kept importable from here (tests elsewhere use them): the report was one module.
__all__ = [
    "CITATIONS",
    "REPORT_NAME",
    "_MODEL_CITATION",
    "StudyOutputs",
    "_settings_text",
    "build_report",
    "load_outputs",
    "render_report",
]

#: File name of the report at the output root.
REPORT_NAME = "report.html"


def _static_text(name: str) -> str:
    """A file of ``report/static/`` (styles, scripts), inlined into the page."""
    return package_text("static", name, package="petbind.report")


def render_report(study: StudyOutputs, engine: Any = None) -> str:
    """Render the report of ``study`` into one HTML string.

    Parameters
    ----------
    study : StudyOutputs
        What :func:`load_outputs` read.
    engine : petbind.compute.Engine, optional
        With more than one worker, the figures are drawn as tasks on it
        (:mod:`petbind.report.figures.deferred`; the same page, byte for
        byte); otherwise one after another in this process.

    Returns
    -------
    str
        The complete, self-contained page.
    """
    import jinja2

    from petbind.report import figures as drawn
    from petbind.report.figures.base import reusing
    from petbind.report.figures.deferred import DeferredFigures

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("petbind.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True,
    )
    deferred = None
    if engine is not None and engine.n_workers > 1:
        deferred = DeferredFigures(engine, batch=figure_batch(len(study.scans),
                                                              engine.n_workers))
    figures: Any = deferred if deferred is not None else drawn
    try:
        with reusing():  # in-process: one fit figure built, refilled for every scan
            html = _render(study, env, figures)
    except BaseException:
        if deferred is not None:
            deferred.close()  # the figures already sent are not waited for by anyone
        raise
    return deferred.fill(html) if deferred is not None else html


def figure_batch(n_scans: int, n_workers: int) -> int:
    """Figures per task when a report is drawn on ``n_workers`` workers.

    Every scan's fit figure has one layout, and a task builds its first one and
    refills it for the others (:func:`petbind.report.figures.base.reusing`): four
    figures a task, or in a study of more than 16 scans per worker a quarter of a
    worker's scans (four tasks a worker), so fewer are built (128 scans on two
    workers: 16 a task, 8 fit figures built instead of 32).
    """
    return max(4, -(-n_scans // (4 * max(1, n_workers))))


def _render(study: StudyOutputs, env: Any, figures: Any) -> str:
    """The page of ``study`` with the sections' figures from ``figures``."""
    from petbind.report import preprocessing, stats_sections
    from petbind.report.pvc import pvc_section
    from petbind.report.sections import group, methods, provenance, scans, summary, truth
    from petbind.report.sections import voxelwise as vox

    design = summary.design(study)
    # the figures with a panel per scan first: on an engine they are drawn (as tasks)
    # while the rest of the page is built here; the page does not depend on the order
    tac_grids = scans.tac_grids(study, figures)
    map_grids = scans.map_grids(study, figures)
    scan_parts = scans.scan_sections(study, figures)
    voxel, volumes = vox.voxel_sections(study, figures)
    context = {
        "title": f"petbind report: {', '.join(design['tracers'])}" if design["tracers"]
                 else "petbind report",
        "version": __version__,
        "root": str(study.root),
        "design": design,
        "simulated": study.simulated,
        "findings": summary.findings(study),
        "glance": summary.glance(study),
        "warnings": [str(w) for w in study.summary.get("warnings") or []],
        "n_invalid": study.summary.get("n_invalid_fits"),
        "invalid_reasons": study.summary.get("invalid_reasons") or {},
        "scans": scan_parts,
        "preprocessing": preprocessing.preprocessing_section(study, figures),
        "preprocessing_width": preprocessing.QC_WIDTH,
        "pvc": pvc_section(study),
        "map_grids": map_grids,
        "truth_image": truth.has_image_truth(study),
        "truth_note": truth.truth_note(study),
        "tac_grids": tac_grids,
        "groups": group.group_sections(study, figures),
        "voxel": voxel,
        "effect_volumes": [v for sec in voxel for v in sec.pop("effect_volumes", [])],
        "outline_volumes": [v for sec in voxel for v in sec.pop("outline_volumes", [])],
        "volumes": volumes,
        "power": group.power_rows(study),
        "prospective_power": stats_sections.prospective_power_section(study, figures),
        "stats_sections": stats_sections.stats_sections(study, figures),
        "methods": methods.methods(study, design),
        "provenance": provenance.provenance_section(study),
        "css": _static_text("report.css"),
        "viewer_js": _static_text("viewer.js"),
        "niivue_js": _static_text("niivue.umd.js") if volumes else "",
    }
    return env.get_template("report.html.j2").render(**context)


def build_report(out_dir: str | Path, scheduler: Any = None) -> Path:
    """Write ``report.html`` at the root of a pipeline output folder.

    Parameters
    ----------
    out_dir : str or Path
        The output root of ``petbind run`` / ``petbind demo`` (see
        ``docs/outputs.md``); a ``petbind demo --out DIR`` folder also works.
    scheduler : optional
        Where the figures are drawn: any value :func:`petbind.compute.open_engine`
        takes (default: in this process). The page is the same on every scheduler.

    Returns
    -------
    Path
        The report, written atomically.

    Raises
    ------
    DataError
        When the folder holds no pipeline output.
    FileFormatError
        When an output file cannot be parsed.
    """
    from petbind.compute import open_engine

    study = load_outputs(out_dir)
    with open_engine(scheduler) as engine:
        html = render_report(study, engine)
    path = write_text_atomic(StudyLayout(study.root).report, html)
    path.chmod(0o644)  # the atomic writer's temporary file is private (0600); a report is shared
    return path
