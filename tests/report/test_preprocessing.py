"""The report's preprocessing section, from preprocessing files written by the tests.

The fixture (conftest.write_preprocess) writes each scan's motion table with
framewise displacement from ``fixture_fd`` (sub-02 ketamine moves at frames 3
and 7: 0.8 and 1.25 mm, above the 0.5 mm threshold) and three solid-colour
QC PNGs of 900 x 300 px; expected numbers below come from that generator.
"""

from __future__ import annotations

import base64
import io
import re
import struct

import numpy as np
import pandas as pd
import pytest

from petbind.errors import FileFormatError
from petbind.report import figures, load_outputs
from petbind.report.build import render_report
from petbind.report.preprocessing import (
    QC_WIDTH,
    find_preprocessed,
    preprocessing_section,
    read_motion,
)

from .conftest import (
    BLOCKS,
    CONDITIONS,
    FD_THRESHOLD,
    MOTION_SPIKES,
    QC_PNG_SIZE,
    SUBJECTS,
    TRACER,
    fixture_fd,
    qc_png,
    write_outputs,
    write_preprocess,
)

N_FRAMES = len(BLOCKS)
N_SCANS = len(SUBJECTS) * len(CONDITIONS)


def _section(html: str) -> str:
    return html[html.index('<section id="preprocessing">'): html.index('<section id="fits">')]


def _row(html: str, label: str) -> str:
    """The table row of a scan (from its <tr to the next </tr>)."""
    section = _section(html)
    i = section.index(f">{label}</a></td>")
    return section[section.rindex("<tr", 0, i): section.index("</tr>", i)]


def test_table_gives_frames_blocks_max_fd_threshold_and_flagged_frames(built_report):
    html = built_report["html"]
    fd = fixture_fd("02", "ketamine")
    row = _row(html, f"sub-02, ketamine, {TRACER}")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[1:8] == [
        f"{N_FRAMES} of {N_FRAMES}", str(len(set(BLOCKS))), f"{fd.max():.2f}",
        f"{fd.mean():.2f}", f"{FD_THRESHOLD:.2f}", "2",
        ", ".join(str(f) for f in sorted(MOTION_SPIKES[("02", "ketamine")]))]
    assert cells[8] == "2 of 2" and cells[9] == "complete"
    calm = _row(html, f"sub-03, baseline, {TRACER}")
    calm_fd = fixture_fd("03", "baseline")
    assert re.findall(r"<td[^>]*>(.*?)</td>", calm, re.S)[3:8] == [
        f"{calm_fd.max():.2f}", f"{calm_fd.mean():.2f}", "0.50", "0", "none"]


def test_only_scans_with_a_flagged_frame_are_highlighted(built_report):
    section = _section(built_report["html"])
    highlighted = re.findall(r'<tr class="flagged"><td class="l"><a href="#[^"]+">([^<]+)</a>',
                             section)
    assert highlighted == [f"sub-{s}, {c}, {TRACER}" for s, c in MOTION_SPIKES]


def test_summary_says_every_frame_and_registration_was_checked(built_report):
    html = built_report["html"]
    summary = html[html.index('<section id="summary">'): html.index('<section id="quality">')]
    n_flag = sum(len(v) for v in MOTION_SPIKES.values())
    worst = max(max(v.values()) for v in MOTION_SPIKES.values())
    expected = (
        f"Head motion: every frame was realigned ({N_SCANS * N_FRAMES} of "
        f"{N_SCANS * N_FRAMES} frames, {N_SCANS} of {N_SCANS} scans); {n_flag} frames in 1 scan "
        f"flagged (FD &gt; {FD_THRESHOLD:g} mm; largest FD {worst:.2f} mm, sub-02, ketamine, "
        f"{TRACER}). Registration overlays for visual checking: PET to T1w for {N_SCANS} of "
        f"{N_SCANS} scans, T1w to template for {N_SCANS} of {N_SCANS} scans")
    assert expected in summary
    assert '<a href="#preprocessing">Preprocessing</a>' in html  # in the navigation


def test_each_scan_states_realigned_and_flagged_frames(built_report):
    section = _section(built_report["html"])
    assert (f"{N_FRAMES} of {N_FRAMES} frames realigned (in {len(set(BLOCKS))} registration "
            f"blocks), 2 flagged (FD &gt; 0.5 mm): frames 3, 7; largest FD 1.25 mm.") in section
    assert section.count(f"{N_FRAMES} of {N_FRAMES} frames realigned") == N_SCANS


def test_qc_figures_are_embedded_shrunk_per_subject_and_moved_subjects_open(built_report):
    section = _section(built_report["html"])
    summaries = re.findall(r"<details class=\"qc\"( open)?><summary>([^<]+)</summary>", section)
    assert [(bool(o), s) for o, s in summaries] == [
        (sub == "02", f"sub-{sub}: 3 scan(s), {2 if sub == '02' else 0} flagged frame(s)")
        for sub in SUBJECTS]
    uris = re.findall(r'<img alt="(?:head motion|PET edges on T1w|T1w edges on template): '
                      r'[^"]+" src="(data:image/png;base64,[^"]+)"', section)
    assert len(uris) == 3 * N_SCANS
    for uri in uris[:3]:
        raw = base64.b64decode(uri.split(",", 1)[1])
        width, height = struct.unpack(">II", raw[16:24])
        assert (width, height) == (QC_WIDTH, QC_PNG_SIZE[1] * QC_WIDTH // QC_PNG_SIZE[0])
    # the third figure of the first scan is the fixture's (80, 120, 120) with a white band
    from PIL import Image

    px = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[2].split(",", 1)[1])))
                    .convert("RGB"), dtype=int)
    np.testing.assert_allclose(px[10, 10], [80, 120, 120], atol=6)
    np.testing.assert_allclose(px[100, 300], [255, 255, 255], atol=6)
    assert "missing:" not in section


def test_no_preprocessing_files_means_no_section(tmp_path):
    paths = write_outputs(tmp_path, voxel=False)
    assert preprocessing_section(load_outputs(paths["out"]), figures) is None
    # an empty preprocess folder is no preprocessing either; render a bare output (fast)
    out = tmp_path / "bare"
    (out / "group").mkdir(parents=True)
    (out / "preprocess" / "sub-01").mkdir(parents=True)
    html = render_report(load_outputs(out))
    assert 'id="preprocessing"' not in html and "#preprocessing" not in html
    assert "Head motion:" not in html


def test_scan_names_in_preprocessing_files_are_escaped(tmp_path):
    evil = "<img src=x onerror=alert(1)>"
    out = tmp_path / "out"
    (out / "group").mkdir(parents=True)
    folder = out / "preprocess" / "sub-01" / f"ses-{evil}" / "pet"
    stem = f"sub-01_ses-{evil}_trc-{TRACER}"
    folder.mkdir(parents=True)
    pd.DataFrame({"frame": [0, 1], "framewise_displacement": [0.0, 0.9],
                  "flagged": [False, True]}).to_csv(
        folder / f"{stem}_desc-motion_timeseries.tsv", sep="\t", index=False)
    qc_png(folder / f"{stem}_desc-motion_qc.png", (0, 0, 0))
    html = render_report(load_outputs(out))
    assert evil not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    section = _section(html)
    # no threshold anywhere: the flag column is still read, and said to lack a threshold
    assert "2 frames realigned, 1 flagged (no threshold): frames 1; largest FD 0.90 mm." \
        in section
    assert re.search(r'<a href="#pre-sub-01_ses-[A-Za-z0-9_-]+_trc-AZ10419369">', section)
    assert "missing: " in section and "no PET edges on T1w figure" in section


def test_missing_motion_table_and_figures_are_reported_not_hidden(tmp_path):
    paths = write_outputs(tmp_path, voxel=False)
    out = paths["out"]
    write_preprocess(out, [("01", "baseline"), ("01", "ketamine")])
    pet = out / "preprocess" / "sub-01" / "ses-ketamine" / "pet"
    stem = f"sub-01_ses-ketamine_trc-{TRACER}"
    (pet / f"{stem}_desc-motion_timeseries.tsv").unlink()
    (pet / f"{stem}_desc-pet2t1w_qc.png").unlink()
    sec = preprocessing_section(load_outputs(out), figures)
    rows = {r["stem"]: r for r in sec["rows"]}
    assert len(rows) == N_SCANS  # every scan of the study is listed, checked or not
    assert rows[stem]["problems"] == ["no motion estimate", f"no PET edges on T1w figure "
                                                            f"({stem}_desc-pet2t1w_qc.png)"]
    assert rows[stem]["registrations"] == 1
    unchecked = rows[f"sub-02_ses-baseline_trc-{TRACER}"]
    assert unchecked["problems"][0] == "no motion estimate" and unchecked["registrations"] == 0
    assert sec["summary"].startswith(
        f"Head motion: 1 of {N_SCANS} scans were realigned ({N_FRAMES} of {N_FRAMES} frames); "
        "no frame flagged (FD > 0.5 mm).")
    assert f"PET to T1w for 1 of {N_SCANS} scans, T1w to template for 2 of {N_SCANS}" \
        in sec["summary"]


def test_subject_level_template_figure_stands_in_for_a_scans(tmp_path):
    out = tmp_path / "out"
    (out / "group").mkdir(parents=True)
    write_preprocess(out, [("01", "baseline")])
    stem = f"sub-01_ses-baseline_trc-{TRACER}"
    pet = out / "preprocess" / "sub-01" / "ses-baseline" / "pet"
    (pet / f"{stem}_desc-t1w2template_qc.png").unlink()
    qc_png(out / "preprocess" / "sub-01" / "anat" / "sub-01_desc-t1w2template_qc.png",
           (1, 2, 3))
    row = preprocessing_section(load_outputs(out), figures)["rows"][0]
    assert row["figures"][2]["file"] == "sub-01_desc-t1w2template_qc.png"
    assert row["figures"][2]["uri"] and row["problems"] == []
    # no scan outputs: the frame count is not known, so it is not claimed
    assert row["sentence"].startswith(f"{N_FRAMES} frames realigned")


def test_read_motion_takes_threshold_from_sidecar_else_default_and_flags_from_fd(tmp_path):
    tsv = tmp_path / "x_desc-motion_timeseries.tsv"
    pd.DataFrame({"frame": [0, 1, 2, 3], "frame_start": [0, 60, 120, 300],
                  "frame_duration": [60, 60, 180, 300],
                  "framewise_displacement": [0.0, 0.4, 0.7, 0.2]}).to_csv(
        tsv, sep="\t", index=False)
    mc = read_motion(tsv, default_threshold=0.3)
    assert mc.threshold == 0.3 and mc.n_blocks is None
    np.testing.assert_array_equal(mc.flagged, [False, True, True, False])
    np.testing.assert_allclose(mc.t_mid_min, [0.5, 1.5, 3.5, 7.5])
    tsv.with_suffix(".json").write_text('{"Settings": {"fd_threshold_mm": 0.5}}')
    mc = read_motion(tsv, default_threshold=0.3)
    assert mc.threshold == 0.5
    np.testing.assert_array_equal(mc.flagged, [False, False, True, False])


def test_read_motion_without_fd_column_raises_naming_file_and_column(tmp_path):
    tsv = tmp_path / "x_desc-motion_timeseries.tsv"
    tsv.write_text("frame\ttrans_x\n0\t0.1\n")
    with pytest.raises(FileFormatError) as err:
        read_motion(tsv)
    assert err.value.path == str(tsv)
    assert err.value.field == "framewise_displacement"
    assert err.value.fix


def test_find_preprocessed_groups_files_by_scan_and_ignores_others(tmp_path):
    assert find_preprocessed(tmp_path) == {}
    write_preprocess(tmp_path, [("01", "baseline")])
    pet = tmp_path / "preprocess" / "sub-01" / "ses-baseline" / "pet"
    (pet / "sub-01_ses-baseline_trc-X_desc-mc_pet.nii.gz").write_bytes(b"")
    found = find_preprocessed(tmp_path)
    assert list(found) == [f"sub-01_ses-baseline_trc-{TRACER}"]
    assert sorted(found[f"sub-01_ses-baseline_trc-{TRACER}"]) == [
        "motion", "motion_qc", "pet2t1w", "t1w2template"]


def test_registration_metrics_from_scan_provenance_and_motion_switched_off(tmp_path):
    import json

    paths = write_outputs(tmp_path, voxel=False)
    out = paths["out"]
    write_preprocess(out, [("01", "baseline")])
    stem = f"sub-01_ses-baseline_trc-{TRACER}"
    prov = out / "sub-01" / "ses-baseline" / "pet" / f"{stem}_provenance.json"
    record = json.loads(prov.read_text())
    record["preprocess"] = {"max_fd_mm": 0.08, "pet_t1w_metric": -0.51234,
                            "t1w_template_metric": -0.6}
    prov.write_text(json.dumps(record))
    sec = preprocessing_section(load_outputs(out), figures)
    row = next(r for r in sec["rows"] if r["stem"] == stem)
    assert sec["metrics"] and (row["pet_t1w_metric"], row["t1w_template_metric"]) == (
        "-0.512", "-0.600")
    # the subject-level registration (computed once per subject) has its metric in its
    # own provenance; the scan's record then says None
    record["preprocess"]["t1w_template_metric"] = None
    prov.write_text(json.dumps(record))
    anat = out / "preprocess" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (anat / "sub-01_provenance.json").write_text(json.dumps({"metric": -1.4834}))
    sec = preprocessing_section(load_outputs(out), figures)
    row = next(r for r in sec["rows"] if r["stem"] == stem)
    assert row["t1w_template_metric"] == "-1.483"
    # motion correction switched off in the config: said so, and not counted as a problem
    pet = out / "preprocess" / "sub-01" / "ses-baseline" / "pet"
    (pet / f"{stem}_desc-motion_timeseries.tsv").unlink()
    (pet / f"{stem}_desc-motion_qc.png").unlink()
    with (out / "study_config.toml").open("a") as fh:
        fh.write("[preprocess]\nenabled = true\nmotion = false\n"
                 "template = \"tpl/tpl-x_T1w.nii.gz\"\n")
    sec = preprocessing_section(load_outputs(out), figures)
    row = next(r for r in sec["rows"] if r["stem"] == stem)
    assert row["sentence"].startswith("motion correction is switched off")
    assert row["problems"] == [] and row["registrations"] == 2
    assert sec["summary"].startswith(
        "Head motion: not corrected (the config's preprocess.motion is false). Registration "
        f"overlays for visual checking: PET to T1w for 1 of {N_SCANS} scans")


def test_a_motion_table_shorter_than_the_scan_is_not_called_complete(tmp_path):
    paths = write_outputs(tmp_path, voxel=False)
    out = paths["out"]
    write_preprocess(out, [(s, c) for s in SUBJECTS for c in CONDITIONS])
    stem = f"sub-03_ses-ketamine_trc-{TRACER}"
    tsv = out / "preprocess" / "sub-03" / "ses-ketamine" / "pet" / \
        f"{stem}_desc-motion_timeseries.tsv"
    table = pd.read_csv(tsv, sep="\t")
    table.iloc[:10].to_csv(tsv, sep="\t", index=False)  # two frames without an estimate
    sec = preprocessing_section(load_outputs(out), figures)
    row = next(r for r in sec["rows"] if r["stem"] == stem)
    assert row["problems"] == [f"motion estimated for 10 of {N_FRAMES} frames"]
    assert row["sentence"].startswith(f"10 of {N_FRAMES} frames realigned")
    total = N_SCANS * N_FRAMES
    assert sec["summary"].startswith(
        f"Head motion: {N_SCANS} of {N_SCANS} scans were realigned ({total - 2} of {total} "
        "frames)")
