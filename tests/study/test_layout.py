"""petbind.study.layout: the output files of a run named once, read back by the report."""

from __future__ import annotations

import json

from petbind.study.layout import ScanOutputs, StudyLayout

from .report_check import assert_complete_report


def test_scan_files_keep_every_entity_of_the_stem(tmp_path):
    stem = "sub-01_ses-01_trc-DASB_rec-acdyn_run-2"
    f = ScanOutputs(tmp_path, "sub-01/ses-01/pet", stem)
    d = tmp_path / "sub-01" / "ses-01" / "pet"
    assert f.tacs == d / f"{stem}_tacs.tsv"
    assert f.fits == d / f"{stem}_fits.tsv"
    assert f.fitted == d / f"{stem}_desc-fitted_tacs.tsv"
    assert f.provenance == d / f"{stem}_provenance.json"
    assert f.map("mrtm2", "bpnd") == d / f"{stem}_model-mrtm2_bpnd.nii.gz"
    assert f.map("mrtm2", "bpnd", "template") == (
        d / f"{stem}_space-template_model-mrtm2_bpnd.nii.gz")
    d.mkdir(parents=True)
    for m in ("srtm", "mrtm2"):
        f.map(m, "bpnd").write_bytes(b"")
    assert sorted(f.maps("bpnd")) == ["mrtm2", "srtm"]


def test_scans_come_from_the_provenance_not_from_file_names(tmp_path):
    lay = StudyLayout(tmp_path)
    entries = [lay.scan_entry("01", "baseline", "DASB", None, "sub-01/ses-01/pet",
                              "sub-01_ses-01_trc-DASB_rec-acdyn", "x"),
               lay.scan_entry("01", "ketamine", "DASB", "2", "sub-01/pet",
                              "sub-01_acq-hi_task-rest_trc-DASB_run-2", "y")]
    lay.group.mkdir()
    lay.provenance.write_text(json.dumps({"scans": entries}))
    got = lay.scans()
    assert [(s.subject, s.condition, s.tracer, s.run, s.stem) for s in got] == [
        ("01", "baseline", "DASB", None, "sub-01_ses-01_trc-DASB_rec-acdyn"),
        ("01", "ketamine", "DASB", "2", "sub-01_acq-hi_task-rest_trc-DASB_run-2")]
    assert got[1].files.fits == (
        tmp_path / "sub-01/pet/sub-01_acq-hi_task-rest_trc-DASB_run-2_fits.tsv")
    # without the study-level record: each scan's own provenance says what it is
    lay.provenance.unlink()
    for s in got:
        s.files.folder.mkdir(parents=True, exist_ok=True)
        s.files.provenance.write_text(json.dumps({"scan": {
            "subject": s.subject, "condition": s.condition, "tracer": s.tracer, "run": s.run}}))
    again = sorted(lay.scans(), key=lambda s: s.condition)
    assert [(s.condition, s.stem) for s in again] == [(s.condition, s.stem) for s in got]


def test_report_built_from_a_real_pipeline_output_has_every_section(noise_free_study,
                                                                   tmp_path):
    import shutil

    out = tmp_path / "out"  # the shared run's folder stays as the pipeline left it
    shutil.copytree(noise_free_study["out"], out)
    html = assert_complete_report(out)
    cfg, _ = StudyLayout(out).read_config()
    assert cfg.tracers["DASB"].reference_region == "cerebellum"
    # Methods states the settings the fits used
    assert "Frames were weighted uniformly" in html
    assert "the fit window was the whole scan" in html
    assert "LOGAN t* was chosen per curve" in html
