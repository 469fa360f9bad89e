"""The report's partial-volume-correction table (src/petbind/report/pvc.py)."""

from __future__ import annotations

import json
import shutil

from petbind.report import build_report

PSF = {"FWHMmm": [2.8, 2.8, 2.8], "Shape": "Gaussian", "Source": "config"}


def _row(region, pct, lo, hi, truth):
    return {"tracer": "AZ", "contrast": "ketamine - baseline", "region": region,
            "model": "srtm", "pct_change": pct, "pct_ci_low": lo, "pct_ci_high": hi,
            "pct_change_true": truth}


def test_no_pvc_no_section(built_report):
    assert 'id="pvc"' not in built_report["html"]


def test_corrected_beside_uncorrected_with_truth_flags_and_assumptions(study_outputs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(study_outputs["out"], out)
    summary = json.loads((out / "group" / "summary.json").read_text())
    summary["highlights"] = [_row("NAcc", 22.9, 20.4, 25.4, 37.1),
                             _row("VP", 5.1, -13.2, 23.4, 4.9)]
    summary["pvc"] = {
        "method": "gtm", "psf": [PSF], "assumes": "activity uniform within each atlas label",
        "condition_number": [7.5, 7.6], "recovery": {"NAcc": 0.44, "VP": 0.41},
        "atlas": "tpl_dseg.nii.gz",
        "highlights": [_row("NAcc", 33.4, 24.4, 42.4, 37.1), _row("VP", 10.3, -19.7, 40.2, 4.9)],
        "paths": {}}
    (out / "group" / "summary.json").write_text(json.dumps(summary))
    html = build_report(out).read_text(encoding="utf-8")
    sec = html[html.index('id="pvc"'):]
    sec = sec[:sec.index("</table>")]
    assert "GTM with a 2.8x2.8x2.8 mm FWHM Gaussian (config)" in html
    assert "activity uniform within each atlas label" in html
    assert "NAcc 0.44" in html and "7.5-7.6" in html
    nacc = sec[sec.index(">NAcc<"):]
    nacc = nacc[:nacc.index("</tr>")]
    # uncorrected misses the truth; corrected holds it in its CI and is closer
    assert "+22.9 [+20.4, +25.4]" in nacc and "+33.4 [+24.4, +42.4]" in nacc
    assert nacc.count("yes") == 2
    vp = sec[sec.index(">VP<"):]
    vp = vp[:vp.index("</tr>")]
    # corrected CI holds the truth, but correction moved the estimate away from it
    assert ">yes<" in vp and ">no<" in vp
