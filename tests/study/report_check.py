"""A report built from a real output folder, checked for every section and every scan."""

from __future__ import annotations

import re
from pathlib import Path

SECTIONS = ["summary", "quality", "fits", "group", "voxelwise", "power", "methods",
            "provenance"]


def assert_complete_report(out: Path) -> str:
    """Build the report of ``out`` and check each listed scan has its parts; return the HTML."""
    from petbind.report import build_report, load_outputs
    from petbind.study.layout import StudyLayout

    html = build_report(out).read_text(encoding="utf-8")
    ids = [i for i in re.findall(r'<section id="([a-z]+)"', html) if i != "preprocessing"]
    assert ids == SECTIONS
    for section in SECTIONS:  # each has its heading and its link in the page's menu
        assert re.search(rf'<section id="{section}">\s*<h2>[^<]+</h2>', html), section
        assert f'href="#{section}"' in html, section
    listed = StudyLayout(out).scans()
    study = load_outputs(out)
    assert len(listed) == study.summary["n_scans"] == len(study.scans) > 0
    for scan in study.scans:
        anchor = re.sub(r"[^A-Za-z0-9_-]", "-", scan.stem)
        assert f'id="scan-{anchor}"' in html, scan.stem      # per-scan section
        assert f'alt="fits of {scan.label}"' in html, scan.stem  # its fit panel
        assert scan.fits is not None and len(scan.fits)       # its fit table
        assert scan.tacs is not None and scan.provenance.get("inputs")
        assert html.count(scan.label) >= 3                    # table of scans, fits, provenance
    return html
