"""Robust colour limits and low-baseline masking of % change maps; the viewer in a browser."""

import tempfile
from pathlib import Path

import numpy as np
import pytest

from petbind.report.voxel_display import MIN_BASELINE_BP, effect_display


def test_low_baseline_voxels_are_hidden_and_limits_are_robust():
    rng = np.random.default_rng(0)
    shape = (20, 20, 10)
    effect = rng.normal(10, 3, shape)
    base = np.full(shape, 1.0)
    base[0] = 0.05  # a rim of near-zero baseline with huge % changes
    effect[0] = rng.normal(0, 400, shape[1:])
    mask = np.ones(shape, bool)
    d = effect_display(effect, mask, base)
    assert d.n_masked == 200 and not d.keep[0].any()
    kept = effect[1:]
    p1, p99 = np.percentile(kept, [1, 99])
    assert d.p1 == pytest.approx(p1) and d.p99 == pytest.approx(p99)
    assert d.vmax == pytest.approx(max(abs(p1), abs(p99))) and d.vmin == -d.vmax
    assert d.vmax < 25  # the rim would have set it to hundreds
    assert (d.shown[0] == 0).all()
    # without a baseline map only the limits are robust
    d2 = effect_display(effect, mask, None)
    assert d2.n_masked == 0 and np.isfinite(d2.vmax)
    assert MIN_BASELINE_BP == 0.2


def test_browser_colour_limits_within_percentiles_and_bpnd_map_over_anatomy(request):
    from tests.report.test_browser import CHROMIUM, LAUNCH_ARGS, _browser_or_reason

    reason = _browser_or_reason()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    report = request.getfixturevalue("built_report")["report"]
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True,
            viewport={"width": 1280, "height": 900})
        try:
            page = ctx.new_page()
            page.goto(Path(report).resolve().as_uri(), wait_until="load")
            page.wait_for_function("window.petbindViewer !== undefined", timeout=30000)
            assert page.evaluate("window.petbindViewer") == "ready"
            limits = page.evaluate(
                "() => Array.from(document.querySelectorAll('img.effect-map')).map(i => "
                "[i.dataset.vmin, i.dataset.vmax, i.dataset.p1, i.dataset.p99].map(Number))")
            assert limits
            for vmin, vmax, p1, p99 in limits:
                assert np.isfinite([vmin, vmax, p1, p99]).all()
                assert vmin == -vmax and vmax > 0
                # the limit is the larger magnitude of the 1st / 99th percentile, no more
                assert vmax == pytest.approx(max(abs(p1), abs(p99)))
                assert p1 <= p99
            # a BP_ND map: drawn over the anatomy, colour bar labelled
            options = page.evaluate(
                "() => Array.from(document.querySelectorAll('#viewer-volume option'))"
                ".map(o => [o.value, o.textContent])")
            bp = [v for v, name in options if "mean BP_ND" in name]
            assert bp
            page.select_option("#viewer-volume", bp[0])
            page.wait_for_function("window.petbindViewerState && "
                                   "window.petbindViewerState.kind === 'map'", timeout=10000)
            state = page.evaluate("window.petbindViewerState")
            assert state["underlay"] is True and state["layers"] == 2
            assert state["calMax"] > state["calMin"] > 0
            label = page.locator("#viewer-colorbar-label").text_content()
            assert "BP_ND" in label and "anatomy" in label
            # the target regions' outlines (the fixture's atlas) over the map, toggleable
            from tests.report.conftest import TARGETS

            assert state["outlines"]["shown"] is True
            assert sorted(state["outlines"]["regions"]) == sorted(TARGETS)
            assert "outlines" in label and "NAcc" in label
            with_outlines = _canvas(page)
            page.uncheck("#viewer-outlines")
            page.wait_for_function("!window.petbindViewerState.outlines.shown", timeout=10000)
            assert page.evaluate("window.petbindViewer") == "ready"
            assert page.evaluate("window.petbindViewerState.layers") == 2
            without = _canvas(page)
            changed = np.abs(with_outlines - without).sum(axis=-1) > 30
            assert changed.sum() > 100  # the outlines were drawn: NAcc, VP, XSS cross the slices
            page.check("#viewer-outlines")
            page.wait_for_function("window.petbindViewerState.outlines.shown", timeout=10000)
            again = _canvas(page)
            assert (np.abs(again - with_outlines).sum(axis=-1) > 30).sum() < 0.05 * changed.sum()
        finally:
            ctx.close()


def test_figures_cut_through_the_largest_cluster_peak():
    import pandas as pd

    from petbind.report.voxel_display import largest_cluster_peak

    c = pd.DataFrame({"size_voxels": [3, 9, 5], "peak_i": [1, 4, 2], "peak_j": [1, 5, 2],
                      "peak_k": [1, 6, 2]})
    assert largest_cluster_peak(c, (10, 10, 10)) == (4, 5, 6)
    assert largest_cluster_peak(c, (3, 3, 3)) is None  # outside this grid
    assert largest_cluster_peak(c.iloc[:0], (10, 10, 10)) is None
    assert largest_cluster_peak(None, (10, 10, 10)) is None


def _canvas(page) -> np.ndarray:
    """The viewer canvas as an RGB array (after the scene has been drawn)."""
    import io

    from PIL import Image

    page.wait_for_timeout(300)
    png = page.locator("#viewer-canvas").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)


# ----------------------------------------------------------------------------
# where: atlas regions of clusters, target regions, outlines, truth
# ----------------------------------------------------------------------------
def _fixture_atlas():
    from tests.report.conftest import ATLAS_REGIONS, atlas_labels

    from petbind.report.voxel_display import StatAtlas

    return StatAtlas(atlas_labels().astype(np.int64), dict(ATLAS_REGIONS), "fixture")


def _fixture_t():
    from tests.report.conftest import SHAPE

    i, j, k = np.indices(SHAPE, dtype=float)
    r2 = (i - 6) ** 2 + (j - 7) ** 2 + (k - 5) ** 2
    return 6.0 * np.exp(-r2 / 4.5)  # > 2.92 for r < 1.8: 27 voxels (r^2 in {0, 1, 2, 3})


def test_clusters_list_the_atlas_regions_they_cover_and_the_true_change_there():
    import pandas as pd
    from tests.report.conftest import XSS

    from petbind.report.voxel_display import cluster_regions

    atlas = _fixture_atlas()
    t = _fixture_t()
    mask = np.ones(t.shape, bool)
    truth = np.where(atlas.labels == 1, 20.0, np.where(atlas.labels == 3, 5.0, 0.0))
    clusters = pd.DataFrame({"sign": [1], "size_voxels": [27], "peak_i": [6], "peak_j": [7],
                             "peak_k": [5]})
    rows = cluster_regions(clusters, t, mask, 2.92, atlas, truth)
    # the shell (radius 1 < r < 1.8) holds 6 + 12 + 8 = 26 voxels... of which 20 have
    # r^2 in {2, 3}; the 6 face neighbours (r = 1) and the centre are NAcc (r <= 1)
    assert rows == [{"regions": f"{XSS} 20 (74 %), NAcc 7 (26 %)", "_top": XSS,
                     "true_pct_change": f"{(7 * 20.0 + 20 * 5.0) / 27:+.1f}"}]
    truth_t = np.where(atlas.labels == 1, 8.0, np.where(atlas.labels == 3, 2.0, 0.0))
    with_t = cluster_regions(clusters, t, mask, 2.92, atlas, truth, truth_t)
    assert with_t[0]["true_t"] == "2.00"  # the median over 20 shell (2.0) + 7 NAcc (8.0) voxels
    # without an atlas or threshold: nothing to add
    assert cluster_regions(clusters, t, mask, 2.92, None) is None
    assert cluster_regions(clusters, t, mask, None, atlas) is None
    # a peak that is not above the threshold matches no cluster
    off = clusters.assign(peak_i=0, peak_j=0, peak_k=0)
    assert cluster_regions(off, t, mask, 2.92, atlas)[0]["regions"] == "n/a"


def test_target_table_counts_voxels_beyond_threshold_per_region_and_compares_with_truth():
    from petbind.report.voxel_display import target_table, truth_sentence

    atlas = _fixture_atlas()
    t = _fixture_t() - 4.0 * (atlas.labels == 2)  # VP: t = 6 exp(-9/4.5) - 4 ~ -3.19
    mask = np.ones(t.shape, bool)
    effect = np.where(atlas.labels == 1, 18.0, 2.0)
    truth_pct = np.where(atlas.labels == 1, 20.0, 0.0)
    truth_t = np.where(atlas.labels == 1, 9.0, np.where(atlas.labels == 2, -1.0, 0.0))
    rows = target_table(t, effect, mask, 2.92, atlas, ["NAcc", "VP", "caudate"], truth_pct,
                        truth_t=truth_t)
    assert [r["region"] for r in rows] == ["NAcc", "VP"]  # caudate is not in the atlas
    nacc, vp = rows
    assert nacc["voxels"] == "7" and nacc["above +t"] == "100 %" and nacc["below -t"] == "0 %"
    assert nacc["peak t"] == "6.00" and nacc["mean % change"] == "+18.0"
    assert nacc["true % change"] == "+20.0" and nacc["true t"] == "9.00"
    # VP (centre (6, 7, 8), r^2 = 9 from the peak): t = 6 exp(-r^2 / 4.5) - 4 is below
    # -2.92 where r^2 > 4.5 ln(6 / 1.08) = 7.7: every VP voxel but (6, 7, 7) (r^2 = 4)
    assert vp["below -t"] == f"{100 * 6 / 7:.0f} %" and vp["above +t"] == "0 %"
    assert float(vp["peak t"]) == pytest.approx(6 * np.exp(-16 / 4.5) - 4, abs=0.005)
    note = truth_sentence(rows, 2.92, 4)
    assert "|t| > 2.92 with 4 subjects" in note
    assert "are NAcc;" in note and "found at voxel level: NAcc (100 % of its voxels)" in note
    assert "also lie in VP" in note  # beyond the threshold where the truth's t is not
    assert target_table(t, effect, mask, None, atlas, ["NAcc"]) is None


def test_region_labels_number_the_named_regions_in_order():
    from petbind.report.voxel_display import StatAtlas, region_labels

    labels = np.zeros((5, 5, 5), dtype=np.int64)
    labels[1:3] = 7
    labels[3] = 8
    labels[4, 0, 0] = 9  # a second label of the same region (left / right)
    atlas = StatAtlas(labels, {7: "VP", 8: "NAcc", 9: "NAcc"}, "test")
    out, found = region_labels(atlas, ["NAcc", "caudate", "VP"])
    assert found == ["NAcc", "VP"]
    assert (out[3] == 1).all() and out[4, 0, 0] == 1 and (out[1:3] == 2).all()
    assert int((out == 0).sum()) == 5 * 5 * 5 - 25 - 1 - 50


def test_region_outlines_are_the_surface_voxels_of_each_region():
    from petbind.report.voxel_display import StatAtlas, outline_colours, region_outlines

    labels = np.zeros((9, 9, 9), dtype=np.int64)
    labels[2:7, 2:7, 2:7] = 5  # a 5-voxel cube: 125 voxels, 27 inside
    labels[0, 0, 0] = 6  # a single voxel is all outline
    atlas = StatAtlas(labels, {5: "NAcc", 6: "VP"}, "test")
    out, found = region_outlines(atlas, ["NAcc", "absent", "VP"])
    assert found == ["NAcc", "VP"]
    assert int((out == 1).sum()) == 125 - 27 and not out[3:6, 3:6, 3:6].any()
    assert int((out == 2).sum()) == 1
    assert outline_colours(2)[0] == [255, 0, 255]


def test_true_paired_t_of_the_simulated_changes(tmp_path):
    import nibabel as nib

    from petbind.report.voxel_display import true_paired_t

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    base = np.array([1.0, 1.1, 0.9])
    drug = np.array([1.3, 1.35, 1.2])  # per-subject changes 0.30, 0.25, 0.30
    for s, (b, d) in enumerate(zip(base, drug, strict=True)):
        for cond, v in (("baseline", b), ("ketamine", d)):
            folder = tmp_path / "derivatives" / "petbind-sim" / f"sub-0{s}" / f"ses-{cond}" / "pet"
            folder.mkdir(parents=True)
            nib.save(nib.Nifti1Image(np.full((3, 3, 3), v, np.float32), affine),
                     folder / f"sub-0{s}_ses-{cond}_trc-X_desc-true_bpnd.nii.gz")
    subjects = ["00", "01", "02"]
    t = true_paired_t(tmp_path, "X", "ketamine - baseline", subjects, (3, 3, 3), affine)
    d = drug - base
    expected = d.mean() / (d.std(ddof=1) / np.sqrt(3))
    np.testing.assert_allclose(t, expected, rtol=1e-5)
    assert true_paired_t(tmp_path, "X", "ketamine - baseline", subjects, (3, 3, 4),
                         affine) is None  # another grid
    assert true_paired_t(tmp_path, "X", "ketamine - other", subjects, (3, 3, 3),
                         affine) is None  # a missing condition


def test_figures_cut_through_the_largest_cluster_in_a_target_region():
    import pandas as pd

    from petbind.report.voxel_display import cut_through_targets

    c = pd.DataFrame({"size_voxels": [20, 9, 5], "peak_i": [1, 4, 2], "peak_j": [1, 5, 2],
                      "peak_k": [1, 6, 2]})
    rows = [{"_top": "other_cortex"}, {"_top": "NAcc"}, {"_top": "VP"}]
    assert cut_through_targets(c, rows, ["NAcc", "VP"], (10, 10, 10)) == (4, 5, 6)
    assert cut_through_targets(c, rows, ["caudate"], (10, 10, 10)) is None
    assert cut_through_targets(c, None, ["NAcc"], (10, 10, 10)) is None


def test_methods_sentence_states_both_smoothings():
    from petbind.report.voxel_display import voxel_methods_text

    on = voxel_methods_text(4.0, 3.0)
    assert "smoothed with a 3.0 mm FWHM Gaussian, normalised inside the brain mask" in on
    assert "smoothed with a 4.0 mm FWHM Gaussian" in on
    off = voxel_methods_text(0.0, None)
    assert "not smoothed before the voxel fits" in off and "(not smoothed)" in off


def test_stat_atlas_is_the_scans_atlas_on_the_statistics_grid_or_none(tmp_path):
    import nibabel as nib
    import pandas as pd

    from petbind.report.voxel_display import stat_atlas

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    labels = np.zeros((4, 5, 6), dtype=np.int16)
    labels[1:3, 1:3, 1:3] = 2
    labels[3] = 3
    bids = tmp_path / "bids"
    dseg = bids / "derivatives" / "atlas" / "sub-01_dseg.nii.gz"
    dseg.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(labels, affine), dseg)
    pd.DataFrame({"index": [2, 3], "name": ["NAcc_L", "VP_L"], "region": ["NAcc", "VP"]}
                 ).to_csv(dseg.parent / "sub-01_dseg.tsv", sep="\t", index=False)

    from types import SimpleNamespace

    scan = SimpleNamespace(tracer="X", provenance={
        "inputs": {"dseg": {"path": "derivatives/atlas/sub-01_dseg.nii.gz"}}})
    study = SimpleNamespace(dataset=bids, scans=[scan], config={})

    atlas = stat_atlas(study, "X", (4, 5, 6), affine)
    assert atlas is not None and atlas.names == {2: "NAcc", 3: "VP"}
    assert int(atlas.region_mask("NAcc").sum()) == 8 and int(atlas.region_mask("VP").sum()) == 30
    shifted = affine.copy()
    shifted[0, 3] = 1.0
    assert stat_atlas(study, "X", (4, 5, 6), shifted) is None  # another grid: never resampled
    assert stat_atlas(study, "X", (4, 5, 7), affine) is None
    assert stat_atlas(study, "Y", (4, 5, 6), affine) is None  # no scan of that tracer
    template = SimpleNamespace(dataset=bids, scans=[], config={
        "preprocess": {"atlas": "derivatives/atlas/sub-01_dseg.nii.gz"}})
    assert stat_atlas(template, "X", (4, 5, 6), affine, template=True) is not None
