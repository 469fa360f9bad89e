"""The study report: one self-contained HTML page from the pipeline's outputs.

``build_report(out_dir)`` writes ``report.html`` at the output root; the page
embeds its figures, styles, scripts and the NiiVue viewer (BSD-2, vendored in
``static/`` with its licence), so it works offline from ``file://``.
"""

from petbind.report.build import build_report, render_report
from petbind.report.outputs import load_outputs

__all__ = ["build_report", "load_outputs", "render_report"]
