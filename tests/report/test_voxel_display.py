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
