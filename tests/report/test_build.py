"""The report page: structure, content taken from the outputs, escaping, no remote code."""

from __future__ import annotations

import base64
import gzip
import io
import re
from html.parser import HTMLParser

import nibabel as nib
import numpy as np
import pytest

from petbind.errors import DataError, FileFormatError
from petbind.report import build_report, load_outputs
from petbind.report.build import REPORT_NAME
from petbind.report.sections.truth import true_effect_map
from petbind.report.sections.voxelwise import nifti_b64 as _nifti_b64

from .conftest import (
    BP_TRUE,
    CONDITIONS,
    INJECTED_MBQ,
    ROI_STATS,
    SHA_PET,
    SUBJECTS,
    TRACER,
    XSS,
    blob,
    t1_image,
    write_outputs,
)


class _Collector(HTMLParser):
    """Tags, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag in ("script", "style")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if not self._in_script:
            self.text.append(data)


@pytest.fixture(scope="module")
def parsed(built_report):
    p = _Collector()
    p.feed(built_report["html"])
    return p


def test_report_is_written_at_the_output_root_readable_by_others(built_report):
    assert built_report["report"] == built_report["out"] / REPORT_NAME
    assert built_report["report"].stat().st_mode & 0o777 == 0o644


def test_report_has_every_section_in_order(built_report):
    ids = re.findall(r'<section id="([a-z]+)"', built_report["html"])
    assert ids == ["summary", "quality", "preprocessing", "fits", "group", "voxelwise",
                   "power", "methods", "provenance"]


def test_page_loads_nothing_from_outside(parsed):
    for tag, attrs in parsed.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is None:
                continue
            assert value.startswith(("data:", "#")), (tag, key, value[:60])
    assert not any(tag == "link" for tag, _ in parsed.tags)


def test_every_image_is_an_embedded_png_with_alt_text(parsed, study_outputs):
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    n_scans = study_outputs["n_scans"]
    # the tracer's TAC grid and BP_ND map grid; per scan its fits; group: paired lines and
    # one forest per contrast; voxelwise: one t map, its % change map and the true one;
    # preprocessing: the motion overview and three QC figures per scan
    assert len(images) == 2 + n_scans + 1 + 2 + 3 + 1 + 3 * n_scans
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(attrs["src"].split(",", 1)[1])[:4] == b"\x89PNG"
        assert attrs["alt"]


def test_a_region_named_like_a_script_is_escaped_everywhere(built_report, parsed):
    html = built_report["html"]
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert any(XSS in t for t in parsed.text)
    # the only scripts are the page's own three: volumes (JSON), NiiVue, viewer glue
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert len(scripts) == 3
    assert scripts[0].get("type") == "application/json"


def test_summary_states_findings_with_numbers_and_corrected_p(parsed):
    text = " ".join(parsed.text)
    nacc = ROI_STATS[("NAcc", "ketamine - baseline")]
    # significant after Holm: named with its numbers and the truth
    assert (f"{TRACER}, NAcc, ketamine - baseline: BP_ND rose by {nacc['pct']:.1f} % "
            f"(95 % CI {nacc['lo']:.1f} to {nacc['hi']:.1f}; paired t(2) = {nacc['t']:.2f}, "
            f"p = {nacc['p']:.3f}, Holm-corrected p = {nacc['p_holm']:.3f}") in text
    assert f"simulated truth +{nacc['true']:.1f} %" in text
    # VP is not significant after correction (p_holm 0.061): not listed as a finding,
    # since NAcc is; for the interaction nothing is significant, so the largest |t| is named
    inter = ROI_STATS[("NAcc", "(ketamine - baseline) - (ketaminenbqx - baseline)")]
    assert (f"NAcc, (ketamine - baseline) - (ketaminenbqx - baseline): the difference between "
            f"the two drug effects was +{inter['pct']:.1f} percentage points") in text
    assert "not significant after correction" in text


def test_data_quality_lists_frames_and_the_injected_dose_from_the_sidecar(parsed):
    text = " ".join(parsed.text)
    for mbq in INJECTED_MBQ.values():
        assert f"{mbq} MBq" in text
    # 12 frames from 0 to 50 min (4 x 30 + 4 x 120 + 4 x 600 s)
    assert re.search(r"sub-01, baseline, AZ10419369\s+12\s+0\.00\s+50\.0\s+"
                     r"4 x 30 s, 4 x 120 s, 4 x 600 s\s+kBq/mL", text)
    assert "frame 3 shorter than stated" in text


def test_fits_table_shows_the_truth_beside_each_estimate(built_report):
    html = built_report["html"]
    assert '<th class="truth">BP_ND true</th>' in html
    # sub-01 baseline NAcc: truth 1.2 * 0.95 = 1.140; srtm estimate 1.01 x truth = 1.151
    assert re.search(r"<td class=\"l\">NAcc</td><td class=\"l\">srtm</td><td>1\.151</td>"
                     r"<td>0\.050</td><td class=\"truth\">1\.140</td>", html)


def test_group_section_has_stats_and_mixed_model_tables_for_all_models(built_report):
    html = built_report["html"]
    group = html[html.index('<section id="group">'): html.index('<section id="voxelwise">')]
    assert group.count("<td class=\"l\">logan</td>") >= len(ROI_STATS)
    assert "Mixed model" in group and "0.210" in group


def test_voxelwise_section_shows_cluster_table_and_permutation_limits(parsed):
    text = " ".join(parsed.text)
    assert "smallest attainable permutation p is 0.125" in text
    assert "216.000" in text  # cluster size in mm3


def test_methods_paragraph_names_models_weights_statistics_and_citations(parsed):
    text = " ".join(parsed.text)
    assert "SRTM, LOGAN" in text and "cerebellum as reference region" in text
    assert "Frames were weighted by duration" in text and "Holm" in text
    assert "k2' was estimated per scan by SRTM in VP" in text
    assert "smoothed with a 4.0 mm FWHM Gaussian" in text
    assert "Lammertsma AA, Hume SP" in text and "Logan J" in text
    assert "Nichols TE, Holmes AP" in text
    assert "numpy 2.4.6" in text


def test_provenance_lists_input_hashes_and_settings(built_report):
    html = built_report["html"]
    assert SHA_PET in html
    assert "cd" * 32 in html
    assert "primary_model = &#34;srtm&#34;" in html or 'primary_model = &quot;srtm&quot;' in html


def test_viewer_volumes_decode_to_the_maps_written(built_report):
    html = built_report["html"]
    block = re.search(r'<script type="application/json" id="petbind-volumes">(.*?)</script>',
                      html, re.S).group(1)
    import json

    vols = json.loads(block)
    assert [v["kind"] for v in vols] == ["underlay", "overlay", "map", "map", "map"]
    assert [v["name"] for v in vols[2:]] == [f"{TRACER}: mean BP_ND, {c}" for c in CONDITIONS]
    img = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(vols[1]["b64"])))
    written = nib.load(str(next((built_report["out"] / "group" / "voxel").glob("*stat-t.nii.gz"))))
    expected = np.asarray(written.dataobj)
    np.testing.assert_allclose(img.get_fdata(), expected, atol=np.abs(expected).max() / 32000)
    np.testing.assert_allclose(img.affine, written.affine)


def test_nifti_b64_keeps_values_within_the_int16_step():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7)) * 3.0
    img = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(
        _nifti_b64(data, np.eye(4)))))
    assert img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.get_fdata(), data, atol=np.abs(data).max() / 32000)


def test_report_without_voxel_statistics_says_so_and_still_offers_the_bp_map(tmp_path):
    paths = write_outputs(tmp_path, voxel=False)
    study = load_outputs(paths["out"])
    assert study.tmaps == []
    from petbind.report import figures
    from petbind.report.sections.voxelwise import voxel_sections as _voxel_sections

    sections, volumes = _voxel_sections(study, figures)
    assert sections == []
    assert [v["kind"] for v in volumes] == ["map", "map", "map"]
    # the mean of the fixture's baseline maps: BP * blob, BP = 1.2 x (0.95, 1.0, 1.05)
    img = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(volumes[0]["b64"])))
    expected = BP_TRUE["NAcc"] * blob((6, 7, 5), 2.5)
    np.testing.assert_allclose(img.get_fdata(), expected, atol=expected.max() / 32000 + 1e-6)


def test_missing_output_folder_raises_data_error_naming_it(tmp_path):
    with pytest.raises(DataError) as err:
        build_report(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    assert err.value.fix


def test_folder_without_pipeline_outputs_raises_data_error(tmp_path):
    (tmp_path / "something.txt").write_text("x")
    with pytest.raises(DataError, match="no pipeline output"):
        build_report(tmp_path)


def test_unreadable_table_raises_file_format_error_naming_the_file(tmp_path):
    paths = write_outputs(tmp_path)
    bad = paths["out"] / "group" / "roi_stats.tsv"
    bad.write_bytes(b"tracer\tmodel\n\"unterminated")
    with pytest.raises(FileFormatError) as err:
        load_outputs(paths["out"])
    assert err.value.path == str(bad)


def test_demo_style_folder_is_found_under_derivatives(tmp_path):
    paths = write_outputs(tmp_path / "derivatives" / "x")
    nested = tmp_path / "demo"
    (nested / "derivatives").mkdir(parents=True)
    paths["out"].rename(nested / "derivatives" / "petbind")
    assert load_outputs(nested).root == nested / "derivatives" / "petbind"


def test_page_size_stays_small(built_report):
    size_mb = len(built_report["html"].encode()) / 1e6
    assert size_mb < 4.0  # NiiVue is 2.3 MB of it
    assert io.BytesIO(built_report["html"].encode()).getbuffer().nbytes > 2_000_000


def test_true_effect_map_is_the_mean_per_subject_percent_change_of_the_true_maps(
        study_outputs):
    # the fixture's true maps are BP * blob with ketamine +20 % and ketamine+NBQX 0 %
    support = BP_TRUE["NAcc"] * 0.95 * blob((6, 7, 5), 2.5) > 0.01
    simple = true_effect_map(study_outputs["bids"], TRACER, "ketamine - baseline", SUBJECTS)
    np.testing.assert_allclose(simple[support], 20.0, rtol=1e-5)
    assert np.isnan(simple[~(BP_TRUE["NAcc"] * 1.05 * blob((6, 7, 5), 2.5) > 0.01)]).all()
    inter = true_effect_map(study_outputs["bids"], TRACER,
                            "(ketamine - baseline) - (ketaminenbqx - baseline)", SUBJECTS)
    np.testing.assert_allclose(inter[support], 20.0, rtol=1e-5)
    assert true_effect_map(study_outputs["bids"], TRACER, "ketamine - placebo",
                           SUBJECTS) is None
    assert true_effect_map(study_outputs["bids"], TRACER, "not a contrast", SUBJECTS) is None


def test_frame_table_flags_gaps_overlaps_and_empty_frames():
    import pandas as pd

    from petbind.report.sections.scans import frame_table as _frame_table

    ok = pd.DataFrame({"frame_start": [0.0, 60.0, 120.0], "frame_end": [60.0, 120.0, 300.0]})
    start, end, issues = _frame_table(ok)
    np.testing.assert_allclose(start, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(end, [1.0, 2.0, 5.0])
    assert issues == []
    bad = pd.DataFrame({"frame_start": [0.0, 70.0, 100.0, 200.0],
                        "frame_end": [60.0, 120.0, 200.0, 200.0]})
    _, _, issues = _frame_table(bad)
    assert issues == ["1 frame(s) with end <= start", "1 gap(s) between frames (largest 10.0 s)",
                      "1 overlapping frame(s)"]


def test_schedule_text_run_length_encodes_frame_durations():
    from petbind.report.sections.scans import schedule_text as _schedule_text

    durations = [10.0] * 6 + [20.0] * 3 + [30.0] * 2 + [60.0] * 4 + [120.0] * 4 + [300.0] * 5 \
        + [600.0] * 5
    assert _schedule_text(np.array(durations)) == (
        "6 x 10 s, 3 x 20 s, 2 x 30 s, 4 x 60 s, 4 x 120 s, 5 x 300 s, 5 x 600 s")


def test_k2prime_text_describes_fixed_and_estimated_k2prime():
    from petbind.report.sections.methods import k2prime_text as _k2prime_text

    assert _k2prime_text({"k2prime": 0.1}) == "fixed at 0.1 1/min"
    assert _k2prime_text({"k2prime": "mrtm", "k2prime_region": "midbrain"}).startswith(
        "estimated per scan by MRTM in midbrain")
    assert _k2prime_text({}) is None
    # the one k2' vocabulary (petbind.models.k2prime)
    assert _k2prime_text({"k2prime": "srtm@VP"}).startswith(
        "estimated per scan by SRTM in VP")
    assert _k2prime_text({"k2prime": "none"}) == "not used (Logan reference without its k2' term)"
    assert _k2prime_text({"k2prime": "median"}).startswith(
        "estimated per scan as the median MRTM k2' of the target regions")


def test_run_label_treats_missing_runs_alike_and_keeps_real_ones():
    from petbind.report.outputs import run_label as _run_label

    assert {_run_label(v) for v in (None, float("nan"), "n/a", "None")} == {""}
    assert _run_label("02") == "02"


def test_t_maps_are_shown_over_the_mean_t1w_resampled_to_the_pet_grid(built_report):
    html = built_report["html"]
    assert "t map over the subjects&#39; mean T1w" in html or \
        "t map over the subjects' mean T1w" in html
    import json

    block = re.search(r'<script type="application/json" id="petbind-volumes">(.*?)</script>',
                      html, re.S).group(1)
    under = json.loads(block)[0]
    img = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(under["b64"])))
    # PET voxel centres fall halfway between 1 mm T1 voxels: trilinear = 2x2x2 block mean
    mean_t1 = np.mean([t1_image(i) for i in range(len(SUBJECTS))], axis=0)
    blocks = mean_t1.reshape(12, 2, 14, 2, 10, 2).mean(axis=(1, 3, 5))
    inner = (slice(0, 11), slice(0, 13), slice(0, 9))  # the last plane extrapolates
    np.testing.assert_allclose(img.get_fdata()[inner], blocks[inner],
                               atol=blocks.max() / 32000 + 1e-9)


def test_anatomy_in_another_space_is_not_used(tmp_path):
    from petbind.report.sections.voxelwise import anatomy as _anatomy

    paths = write_outputs(tmp_path)
    t1 = next((paths["bids"] / "sub-01" / "anat").glob("*_T1w.nii.gz"))
    img = nib.load(str(t1))
    moved = img.affine.copy()
    moved[:3, 3] += 20.0  # a native-space MRI: another field of view
    for p in (paths["bids"]).glob("sub-*/anat/*_T1w.nii.gz"):
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), str(p))
    study = load_outputs(paths["out"])
    assert _anatomy(study, (12, 14, 10), np.diag([2.0, 2.0, 2.0, 1.0])) is None


def test_summary_glance_table_has_a_cell_per_region_and_contrast(built_report):
    html = built_report["html"]
    summary = html[html.index('<section id="summary">'): html.index('<section id="quality">')]
    assert f"At a glance: {TRACER} (srtm)" in summary
    nacc = ROI_STATS[("NAcc", "ketamine - baseline")]
    vp = ROI_STATS[("VP", "ketamine - baseline")]
    # NAcc survives Holm (0.046 < 0.05): bold; VP does not (0.061)
    assert (f'<span class="sig">+{nacc["pct"]:.1f} %</span> [{nacc["lo"]:.1f} to '
            f'{nacc["hi"]:.1f}], p<sub>Holm</sub> {nacc["p_holm"]:.3f}') in summary
    assert f'<span>+{vp["pct"]:.1f} %</span>' in summary
    assert summary.count("(truth +20.0)") == 4  # NAcc and VP, both contrasts


def test_truth_is_explained_as_tissue_value_before_blur_without_image_truth(built_report):
    html = built_report["html"]
    note = ("The truth is the tissue value before the scanner&#39;s blur; partial volume mixes "
            "small regions such as NAcc and VP with their surroundings at the scanner&#39;s "
            "finite resolution")
    assert html.count(note) == 2  # under the glance table and in the fits section
    assert "BP_ND true (image)" not in html and "% true (image)" not in html


def _image_truth(bp_true: float) -> float:
    """The test's stand-in for the blurred-image truth: diluted towards 0.1 (70 % kept)."""
    return 0.7 * bp_true + 0.1


@pytest.fixture(scope="module")
def image_truth_study(tmp_path_factory):
    """The fixture study with ``bp_nd_true_image`` in outcomes.tsv and a 2.8 mm FWHM."""
    import json

    import pandas as pd

    root = tmp_path_factory.mktemp("image_truth")
    paths = write_outputs(root, voxel=False)
    oc_path = paths["out"] / "group" / "outcomes.tsv"
    oc = pd.read_csv(oc_path, sep="\t", dtype={"subject": str})
    oc["bp_nd_true_image"] = _image_truth(oc["bp_nd_true"])
    oc.to_csv(oc_path, sep="\t", index=False, na_rep="n/a")
    for side in paths["bids"].glob("sub-*/ses-*/pet/*_pet.json"):
        meta = json.loads(side.read_text())
        side.write_text(json.dumps({**meta, "ReconFilterSize": 2.8}))
    return load_outputs(paths["out"])


def test_glance_gives_the_image_truths_percent_change_beside_the_tissue_truths(
        image_truth_study):
    from petbind.report.sections.summary import glance as _glance

    # independent: per subject the tissue truth is 1.2 (1 + 0.05 (i - 1)), +20 % on ketamine
    base = BP_TRUE["NAcc"] * (1 + 0.05 * (np.arange(len(SUBJECTS)) - 1))
    pct = 100 * (_image_truth(1.2 * base) - _image_truth(base)) / _image_truth(base)
    (glance,) = _glance(image_truth_study)
    nacc = next(r for r in glance["rows"] if r["region"] == "NAcc")
    simple = nacc["cells"][glance["contrasts"].index("ketamine - baseline")]
    assert simple["truth"] == "+20.0"  # roi_stats' pct_change_true, untouched
    assert simple["truth_image"] == f"{pct.mean():+.1f}"
    assert float(simple["truth_image"]) < 20.0  # diluted
    # interaction: ketamine+NBQX has no effect, so the same value in percentage points
    inter = nacc["cells"][glance["contrasts"].index(
        "(ketamine - baseline) - (ketaminenbqx - baseline)")]
    assert inter["truth_image"] == f"{pct.mean():+.1f}"


def test_image_truth_is_shown_beside_the_tissue_truth_with_the_partial_volume_note(
        image_truth_study):
    from petbind.report.build import render_report

    html = render_report(image_truth_study)
    assert '<th class="truth">BP_ND true</th><th class="truth">BP_ND true (image)</th>' in html
    # sub-01 baseline NAcc: tissue 1.2 x 0.95 = 1.140, image 0.7 x 1.140 + 0.1 = 0.898
    assert re.search(r'<td class="l">NAcc</td><td class="l">srtm</td><td>1\.151</td>'
                     r'<td>0\.050</td><td class="truth">1\.140</td><td class="truth">0\.898</td>',
                     html)
    assert "% true (image)" in html
    assert "scanner&#39;s 2.8 mm FWHM resolution" in html
    assert "estimates scatter around the image truth and fall short of the tissue truth" in html
    assert "(truth +20.0; image +" in html


def test_true_effect_map_refuses_maps_on_another_grid(study_outputs):
    same = true_effect_map(study_outputs["bids"], TRACER, "ketamine - baseline", SUBJECTS,
                           affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    assert same is not None
    shifted = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted[:3, 3] = [4.0, 0.0, 0.0]  # same shape, another place
    assert true_effect_map(study_outputs["bids"], TRACER, "ketamine - baseline", SUBJECTS,
                           affine=shifted) is None


def _template_space_study(root, matrix):
    """The fixture study with its voxel maps renamed to space-template, and a true xfm."""
    import json

    paths = write_outputs(root)
    vox = paths["out"] / "group" / "voxel"
    for p in list(vox.iterdir()):
        p.rename(p.with_name(p.name.replace(f"trc-{TRACER}_", f"trc-{TRACER}_space-template_")))
    for sub in SUBJECTS:
        anat = paths["bids"] / "derivatives" / "petbind-sim" / f"sub-{sub}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-{sub}_desc-true_xfm.json").write_text(json.dumps(
            {"Parameters": [0, 0, 0, 0, 0, 0], "RotationCentre": [0, 0, 0],
             "Matrix": np.asarray(matrix).tolist()}))
    return load_outputs(paths["out"])


def test_native_space_truth_is_not_shown_beside_a_template_space_effect_map(tmp_path):
    from petbind.report import figures
    from petbind.report.sections.voxelwise import effect_figures as _effect_figures

    moved = np.eye(4)
    moved[:3, 3] = [3.0, -2.0, 1.0]
    study = _template_space_study(tmp_path / "moved", moved)
    (tm,) = study.tmaps
    assert tm["space"] == "template" and tm["contrast"] == "ketamineVsBaseline"
    # the true maps share the template grid's shape and affine: only the xfm tells
    shown, why = _effect_figures(study, tm, {}, "ketamine - baseline", (2.0, 2.0, 2.0), figures)
    assert [f["label"] for f in shown] == ["estimated mean % change"]
    assert "native PET space" in why
    # subjects simulated in template position: the truth is in the same space
    study = _template_space_study(tmp_path / "aligned", np.eye(4))
    shown, why = _effect_figures(study, study.tmaps[0], {}, "ketamine - baseline",
                                 (2.0, 2.0, 2.0), figures)
    assert [f["label"] for f in shown] == ["estimated mean % change", "simulated truth"]
    assert why is None


def test_truth_on_another_grid_is_left_out_with_a_reason(tmp_path):
    from petbind.report import figures
    from petbind.report.sections.voxelwise import effect_figures as _effect_figures

    paths = write_outputs(tmp_path)
    for p in (paths["bids"] / "derivatives" / "petbind-sim").glob("sub-*/ses-*/pet/*bpnd*"):
        img = nib.load(str(p))
        aff = img.affine.copy()
        aff[:3, 3] += 10.0
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), str(p))
    study = load_outputs(paths["out"])
    shown, why = _effect_figures(study, study.tmaps[0], {}, "ketamine - baseline",
                                 (2.0, 2.0, 2.0), figures)
    assert len(shown) == 1 and "another grid" in why


def test_preprocessed_study_shows_template_space_maps_over_the_template_t1w(tmp_path):
    """preprocess.enabled: voxel statistics are on the template grid (pipeline's contract)."""
    import json

    from petbind.report import figures
    from petbind.report.sections.voxelwise import voxel_sections as _voxel_sections

    paths = write_outputs(tmp_path)
    out, bids = paths["out"], paths["bids"]
    with (out / "study_config.toml").open("a") as fh:
        fh.write('[preprocess]\nenabled = true\ntemplate = "tpl/tpl-x_T1w.nii.gz"\n')
    (bids / "tpl").mkdir()
    nib.save(nib.Nifti1Image(np.full((24, 28, 20), 5.0, dtype=np.float32),
                             np.array([[1.0, 0, 0, -0.5], [0, 1.0, 0, -0.5],
                                       [0, 0, 1.0, -0.5], [0, 0, 0, 1]])),
             str(bids / "tpl" / "tpl-x_T1w.nii.gz"))
    # each scan's map brought to the template: twice the native one, to tell them apart
    for native in out.glob("sub-*/ses-*/pet/*_model-srtm_bpnd.nii.gz"):
        img = nib.load(str(native))
        stem = native.name.split("_model-")[0]
        nib.save(nib.Nifti1Image(2 * np.asarray(img.dataobj), img.affine),
                 str(native.with_name(f"{stem}_space-template_model-srtm_bpnd.nii.gz")))
    study = load_outputs(out)
    scan = study.scans[0]
    assert list(scan.maps("bpnd")) == ["srtm"] and list(scan.maps("bpnd", "template")) == [
        "srtm"]
    assert scan.maps("bpnd", "template")["srtm"].name.startswith(f"{scan.stem}_space-template")
    sections, volumes = _voxel_sections(study, figures)
    assert sections[0]["underlay"] == "the template T1w (resampled to the statistics grid)"
    under = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(volumes[0]["b64"])))
    inner = (slice(0, 11), slice(0, 13), slice(0, 9))
    np.testing.assert_allclose(under.get_fdata()[inner], 5.0, atol=5.0 / 32000)
    baseline = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(
        next(v for v in volumes if v["name"].endswith("mean BP_ND, baseline"))["b64"])))
    expected = 2 * BP_TRUE["NAcc"] * blob((6, 7, 5), 2.5)  # mean of 0.95, 1.0, 1.05 x BP
    np.testing.assert_allclose(baseline.get_fdata(), expected, atol=expected.max() / 32000)
    # the fixture's subjects were not moved (no true xfm): the truth is still comparable
    assert [e["label"] for e in sections[0]["effect"]] == ["estimated mean % change",
                                                           "simulated truth"]
    # one subject simulated away from the template: its truth is native, so none is shown
    anat = bids / "derivatives" / "petbind-sim" / "sub-02" / "anat"
    anat.mkdir(parents=True)
    moved = np.eye(4)
    moved[0, 3] = 2.0
    (anat / "sub-02_desc-true_xfm.json").write_text(json.dumps({"Matrix": moved.tolist()}))
    sections, _ = _voxel_sections(load_outputs(out), figures)
    assert [e["label"] for e in sections[0]["effect"]] == ["estimated mean % change"]
    assert "native PET space" in sections[0]["effect_note"]


def test_methods_describe_preprocessing_from_the_config_with_citations(tmp_path):
    from petbind.report.sections.methods import methods as _methods
    from petbind.report.sections.summary import design as _design

    paths = write_outputs(tmp_path, voxel=False)
    study = load_outputs(paths["out"])
    assert "realignment" not in _methods(study, _design(study))["paragraph"]
    with (paths["out"] / "study_config.toml").open("a") as fh:
        fh.write("[preprocess]\nenabled = true\ntemplate = \"tpl/tpl-x_T1w.nii.gz\"\n"
                 "motion = true\nmin_block_min = 2.0\n"
                 "fd_threshold_mm = 0.4\nnonlinear = false\natlas_method = \"nearest\"\n")
    study = load_outputs(paths["out"])
    methods = _methods(study, _design(study))
    assert ("Head motion was corrected by rigid realignment of every frame to a mean image "
            "(early frames pooled into blocks of at least 2 min); framewise displacement (FD) "
            "was computed per frame and frames with FD above 0.4 mm were flagged; the mean "
            "realigned PET was registered rigidly to the subject's T1w (Mattes mutual "
            "information) and the T1w to the template (affine); the template atlas was brought "
            "into each scan's PET space by nearest-neighbour resampling, and voxel statistics "
            "were computed in template space.") in methods["paragraph"]
    cited = " ".join(methods["citations"])
    assert "Power JD" in cited and "Mattes D" in cited and "Avants BB" not in cited


def test_report_names_why_fits_were_invalid(tmp_path):
    # issue 17: the reason of every invalid fit is counted in summary.json and shown
    import json

    out = write_outputs(tmp_path)["out"]
    path = out / "group" / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(n_invalid_fits=3, invalid_reasons={
        "no residual degree of freedom": 1, "parameter at bound: k1": 2})
    path.write_text(json.dumps(summary))
    html = build_report(out).read_text()
    assert ("3 fit(s) were invalid and left out of the statistics (1 no residual degree of "
            "freedom; 2 parameter at bound: k1).") in html


# ---------------------------------------------------------------- figures as tasks
# Issue 18: petbind demo draws the report's figures on its cluster.

@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["threads:2", "local:2"])
def test_figures_drawn_as_tasks_give_the_same_page_byte_for_byte(built_report, scheduler):
    from petbind.compute import open_engine
    from petbind.report.build import render_report

    study = load_outputs(built_report["out"])
    with open_engine(scheduler) as engine:
        html = render_report(study, engine)
    assert len(re.findall("data:image/", html)) > 10
    assert html == built_report["html"]  # the in-process page of the session fixture


def test_a_deferred_figure_is_a_placeholder_until_drawn_as_a_task():
    from petbind.compute import open_engine
    from petbind.report.figures import figure_to_data_uri, fit_figure
    from petbind.report.figures.deferred import DeferredFigures

    args = ([1.0, 2.0], {"a": [1.0, 2.0]}, {"m": {"a": [1.0, 1.5]}})
    deferred = DeferredFigures()
    key = deferred.figure_to_data_uri(deferred.fit_figure(*args, title="x"))
    assert key.startswith("petbind-figure-") and list(deferred.pending) == [key]
    with open_engine("threads:2") as engine:
        page = deferred.fill(f"<img src='{key}'>", engine)
    assert page == f"<img src='{figure_to_data_uri(fit_figure(*args, title='x'))}'>"


def test_a_figure_with_a_panel_per_scan_is_sent_at_once_as_a_task_of_its_own():
    from petbind.compute import open_engine
    from petbind.report.figures import figure_to_data_uri, fit_figure, tac_grid_figure
    from petbind.report.figures.deferred import DeferredFigures

    fit = ([1.0, 2.0], {"a": [1.0, 2.0]}, {"m": {"a": [1.0, 1.5]}})
    panels = [("scan A", [1.0, 2.0], [[1.0, 2.0]]), ("scan B", [1.0, 2.0], [[2.0, 1.0]])]
    with open_engine("threads:2") as engine:
        deferred = DeferredFigures(engine, batch=4)
        small = deferred.figure_to_data_uri(deferred.fit_figure(*fit))
        large = deferred.figure_to_data_uri(deferred.tac_grid_figure(panels, ["a"]))
        # the grid went to the engine at once; the fit figure waits for its batch
        assert [keys for keys, _ in deferred._sent] == [[large]]
        assert deferred._unsent == [small]
        page = deferred.fill(f"{small} {large}")
    assert page == (f"{figure_to_data_uri(fit_figure(*fit))} "
                    f"{figure_to_data_uri(tac_grid_figure(panels, ['a']))}")


def test_map_grid_section_drawn_as_a_task_is_the_in_process_one(built_report):
    from petbind.compute import open_engine
    from petbind.report import figures
    from petbind.report.figures.deferred import DeferredFigures
    from petbind.report.sections.scans import map_grids

    here = map_grids(load_outputs(built_report["out"]), figures)
    assert here and here[0]["figure"].startswith("data:image/png;base64,")
    with open_engine("threads:2") as engine:
        deferred = DeferredFigures(engine)
        grids = map_grids(load_outputs(built_report["out"]), deferred)
        filled = deferred.fill(grids[0]["figure"])
    assert filled == here[0]["figure"]


def test_mean_maps_read_each_map_once_and_are_the_means_of_the_maps(built_report, monkeypatch):
    from petbind.report.sections import voxelwise

    study = load_outputs(built_report["out"])
    reads = []
    real = voxelwise.load_map
    monkeypatch.setattr(voxelwise, "load_map", lambda p: reads.append(p) or real(p))
    tracer = study.scans[0].tracer
    maps = {s.stem: (s.condition, real(next(iter(s.maps("bpnd").values())))[0])
            for s in study.scans if s.tracer == tracer and s.maps("bpnd")}
    shape = next(iter(maps.values()))[1].shape
    for condition in [None, *CONDITIONS]:
        mean = voxelwise.mean_map(study, tracer, "srtm", shape, condition)
        chosen = [np.nan_to_num(v) for c, v in maps.values() if condition in (None, c)]
        total = chosen[0]
        for v in chosen[1:]:  # summed in scan order, as the report always did
            total = total + v
        np.testing.assert_array_equal(mean, total / len(chosen))
        mean[...] = -1.0  # a caller's change does not reach the next caller
    assert len(reads) == len(maps)  # one pass for every condition
    assert voxelwise.mean_map(study, tracer, "srtm", shape).min() >= 0


def _png_height(uri: str) -> int:
    import base64
    import struct

    data = base64.b64decode(uri.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])[1]


def test_grids_of_many_subjects_are_drawn_in_parts_of_grid_rows(built_report, monkeypatch):
    """A grid taller than GRID_ROWS rows is several figures (one colour range, every panel)."""
    from petbind.report import figures
    from petbind.report.sections import scans as section

    study = load_outputs(built_report["out"])
    whole_tacs = section.tac_grids(study, figures)
    whole_maps = section.map_grids(study, figures)
    assert [len(g["figures"]) for g in whole_tacs + whole_maps] == [1] * (
        len(whole_tacs) + len(whole_maps))
    monkeypatch.setattr(section, "GRID_ROWS", 1)
    tacs = section.tac_grids(study, figures)
    maps = section.map_grids(study, figures)
    n_subjects = len(SUBJECTS)
    for whole, split in zip(whole_tacs + whole_maps, tacs + maps, strict=True):
        assert len(split["figures"]) == n_subjects  # one row (a subject's conditions) each
        assert split["figure"] == split["figures"][0]
        heights = [_png_height(f) for f in split["figures"]]
        # each part is one row: much shorter than the whole grid of n_subjects rows
        assert max(heights) < _png_height(whole["figure"]) * 0.75
    rows_seen = [m["figures"] for m in maps]
    assert all(len(set(f)) == n_subjects for f in rows_seen)  # different subjects' rows


def test_report_page_names_the_parts_of_a_split_grid(built_report, monkeypatch, tmp_path):
    import shutil

    from petbind.report import build_report
    from petbind.report.sections import scans as section

    out = tmp_path / "out"
    shutil.copytree(built_report["out"], out)
    monkeypatch.setattr(section, "GRID_ROWS", 1)
    html = build_report(out).read_text(encoding="utf-8")
    n = len(SUBJECTS)
    assert f"(part {n} of {n})" in html and f"(part {n + 1} of" not in html


def test_figure_tasks_hold_four_figures_or_a_quarter_of_a_workers_scans():
    from petbind.report.build import figure_batch

    assert figure_batch(8, 2) == 4
    assert figure_batch(32, 2) == 4  # 16 scans a worker
    assert figure_batch(34, 2) == 5
    assert figure_batch(128, 2) == 16
    assert figure_batch(1000, 8) == 32
    assert figure_batch(0, 2) == 4
