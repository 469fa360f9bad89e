"""The report's sections, one module each, on what :mod:`petbind.report.outputs` read.

Each function takes the :class:`~petbind.report.outputs.StudyOutputs` (and
:mod:`petbind.report.figures` where it draws) and returns the plain values
the template (``templates/report.html.j2``) shows; none opens a file.

==================  ==========================================================
module              page section (anchor)
==================  ==========================================================
``summary``         design, key findings, results at a glance (``#summary``)
``truth``           the simulated truths shown beside estimates (every section)
``scans``           frames, dose, TACs (``#quality``); fits, maps (``#fits``)
``group``           group statistics (``#group``) and power rows (``#power``)
``voxelwise``       t maps, % change maps, the viewer's volumes (``#voxelwise``)
``methods``         the methods paragraph and citations (``#methods``)
``provenance``      inputs, hashes, settings (``#provenance``)
==================  ==========================================================

The preprocessing, partial-volume and statistics-stage sections are
:mod:`petbind.report.preprocessing`, :mod:`petbind.report.pvc` and
:mod:`petbind.report.stats_sections`.
"""
