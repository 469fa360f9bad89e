"""Figure builders: they plot exactly the numbers given, with the stated scales."""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
import pytest

from petbind.report import figures


def _png_size(uri: str) -> tuple[int, int]:
    head, data = uri.split(",", 1)
    assert head == "data:image/png;base64"
    raw = base64.b64decode(data)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", raw[16:24])


def test_figure_to_data_uri_encodes_a_png_of_the_figure_size_and_clears_it():
    fig = figures.forest_figure(["NAcc"], [1.0], [0.0], [2.0])
    width, height = fig.get_size_inches()
    uri = figures.figure_to_data_uri(fig)
    assert _png_size(uri) == (round(width * figures.DPI), round(height * figures.DPI))
    assert fig.axes == []


def test_figure_to_data_uri_quantised_png_keeps_the_picture():
    from PIL import Image

    fig = figures.ortho_slices(np.arange(27.0).reshape(3, 3, 3) + 1, cut=(1, 1, 1))
    fig2 = figures.ortho_slices(np.arange(27.0).reshape(3, 3, 3) + 1, cut=(1, 1, 1))
    full = figures.figure_to_data_uri(fig, colors=None)
    small = figures.figure_to_data_uri(fig2, colors=64)

    def pixels(uri):
        raw = base64.b64decode(uri.split(",", 1)[1])
        return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=float)

    a, b = pixels(full), pixels(small)
    assert a.shape == b.shape
    assert np.mean(np.abs(a - b)) < 3.0  # grey levels out of 255
    assert len(small) < len(full)


def test_figure_to_data_uri_svg_is_valid_svg():
    uri = figures.figure_to_data_uri(figures.forest_figure(["a"], [1.0], [0.0], [2.0]), "svg")
    head, data = uri.split(",", 1)
    assert head == "data:image/svg+xml;base64"
    assert b"<svg" in base64.b64decode(data)[:400]


def test_tac_grid_draws_each_scans_regions_with_the_given_values_and_one_legend():
    t = np.array([0.5, 1.5, 3.0, 10.0])
    y1 = np.array([[1.0, 4.0, 3.0, 2.0], [0.5, 2.0, 1.5, 1.0]])
    y2 = y1 * 2
    fig = figures.tac_grid_figure([("scan A", t, y1), ("scan B", t, y2)],
                                  ["NAcc", "cerebellum"], reference="cerebellum", max_cols=2)
    first, second = fig.axes[:2]
    assert [first.get_title(), second.get_title()] == ["scan A", "scan B"]
    np.testing.assert_array_equal(first.get_lines()[0].get_xdata(), t)
    np.testing.assert_array_equal(second.get_lines()[1].get_ydata(), y2[1])
    assert second.get_lines()[1].get_color() == "black"
    # one colour per region, the same in every panel
    assert first.get_lines()[0].get_color() == second.get_lines()[0].get_color()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["NAcc", "cerebellum (ref)"]


def test_map_grid_places_each_scan_in_its_cell_with_one_colour_range():
    vol = np.zeros((6, 7, 8))
    vol[2:4, 3:5, 3:6] = 1.0
    maps = {("sub-01", "baseline"): vol, ("sub-01", "drug"): 2 * vol,
            ("sub-02", "baseline"): 3 * vol}
    fig = figures.map_grid_figure(maps, ["sub-01", "sub-02"], ["baseline", "drug"],
                                  vmax=3.0, label="BP_ND")
    cells = fig.axes[:4]
    assert [ax.get_title() for ax in cells] == ["baseline", "drug", "", ""]
    assert cells[3].get_images() == []  # sub-02 has no drug scan
    images = [ax.get_images()[0] for ax in cells[:3]]
    assert all(im.get_clim() == (0.0, 3.0) for im in images)
    # montage of the slices through the centre of the support: x = 2, y = 3, z = 4
    # (rounded centre of 2..3, 3..4, 3..5); sagittal (y, z) | coronal (x, z) | axial (x, y)
    shown = images[1].get_array()
    assert shown.shape == (8, 7 + 1 + 6 + 1 + 6)
    assert np.nanmax(shown) == 2.0
    assert fig.axes[-1].get_ylabel() == "BP_ND"


def test_fit_figure_residual_panel_shows_data_minus_fit_for_each_model():
    t = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    data = np.array([2.0, 3.0, 2.5, 2.0, 1.0])
    fit_a = np.array([2.1, 2.9, 2.4, 2.1, 1.05])
    fit_b = np.array([np.nan, np.nan, 2.6, 1.9, 1.0])
    fig = figures.fit_figure(t, {"VP": data, "NAcc": data * 2},
                             {"srtm": {"VP": fit_a, "NAcc": fit_a * 2},
                              "logan": {"VP": fit_b, "NAcc": fit_b * 2}})
    assert len(fig.axes) == 4  # curve + residual panel per region
    curve, resid = fig.axes[0], fig.axes[1]
    assert curve.get_title() == "VP"
    ys = [line.get_ydata() for line in resid.get_lines()]
    # first line is the zero line, then one residual line per model
    np.testing.assert_allclose(ys[1], [-0.1, 0.1, 0.1, -0.1, -0.05], atol=1e-12)
    np.testing.assert_allclose(ys[2], [np.nan, np.nan, -0.1, 0.1, 0.0], atol=1e-12)


def test_ortho_slices_uses_the_given_range_and_cuts():
    vol = np.zeros((9, 10, 11))
    vol[2, 3, 4] = 5.0
    fig = figures.ortho_slices(vol, vmin=0.0, vmax=3.0, cut=(2, 3, 4), label="BP_ND")
    images = [ax.get_images()[0] for ax in fig.axes[:3]]
    assert all(im.get_clim() == (0.0, 3.0) for im in images)
    # sagittal slice x = 2 shows the voxel at (y, z) = (3, 4): transposed for display
    sag = images[0].get_array()
    assert sag.shape == (11, 10) and sag[4, 3] == 5.0
    assert fig.axes[3].get_ylabel() == "BP_ND"


def test_ortho_slices_symmetric_range_is_centred_on_zero_and_threshold_hides_small_values():
    rng = np.random.default_rng(3)
    vol = rng.normal(size=(8, 8, 8))
    fig = figures.ortho_slices(vol, symmetric=True, threshold=1.0, cut=(4, 4, 4),
                               underlay=np.ones_like(vol))
    ax = fig.axes[0]
    _under, over = ax.get_images()
    lo, hi = over.get_clim()
    assert lo == -hi and hi == pytest.approx(np.percentile(np.abs(vol), 98))
    shown = over.get_array()
    np.testing.assert_array_equal(np.ma.getmaskarray(shown), (np.abs(vol[4]) < 1.0).T)


def test_ortho_slices_default_cut_is_the_centre_of_the_non_zero_voxels():
    vol = np.zeros((20, 20, 20))
    vol[10:13, 4:7, 15:18] = 1.0
    fig = figures.ortho_slices(vol)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["x = 11", "y = 5", "z = 16"]


def test_paired_lines_connect_each_subjects_values_in_condition_order():
    values = {"NAcc": {"01": {"baseline": 1.0, "ketamine": 1.2},
                       "02": {"ketamine": 1.5, "baseline": 1.1}}}
    truth = {"NAcc": {"01": {"baseline": 1.0, "ketamine": 1.25}}}
    fig = figures.paired_lines_figure(values, ["baseline", "ketamine"], truth=truth)
    lines = fig.axes[0].get_lines()
    solid = [line for line in lines if line.get_linestyle() == "-"]
    dashed = [line for line in lines if line.get_linestyle() == "--"]
    np.testing.assert_array_equal(solid[1].get_ydata(), [1.1, 1.5])
    np.testing.assert_array_equal(dashed[0].get_ydata(), [1.0, 1.25])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["baseline", "ketamine"]


def test_forest_figure_error_bars_span_the_confidence_interval():
    fig = figures.forest_figure(["NAcc", "VP"], [10.0, -5.0], [2.0, -15.0], [18.0, 5.0],
                                truth=[20.0, -10.0])
    ax = fig.axes[0]
    bars = [c for c in ax.collections if c.get_segments()]
    segs = bars[0].get_segments()
    spans = sorted((s[0][0], s[1][0]) for s in segs)
    assert spans == [(-15.0, 5.0), (2.0, 18.0)]
    truth_line = next(line for line in ax.get_lines() if line.get_marker() == "D")
    np.testing.assert_array_equal(truth_line.get_xdata(), [20.0, -10.0])


def test_builders_accept_no_data_without_failing():
    fig = figures.ortho_slices(np.zeros((4, 4, 4)))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.tell() > 0


def test_motion_overview_plots_each_scans_fd_and_its_maximum_red_above_threshold():
    from matplotlib.colors import to_rgba

    t = np.array([0.5, 1.5, 4.0, 12.0])
    calm = np.array([0.0, 0.1, 0.05, 0.2])
    moved = np.array([0.0, 0.3, 1.4, 0.1])
    fig = figures.motion_overview_figure([("calm", t, calm), ("moved", t, moved)],
                                         threshold=0.5)
    left, right = fig.axes
    # one line per scan with exactly the FD given (threshold line last)
    lines = left.get_lines()
    np.testing.assert_array_equal(lines[0].get_xdata(), t)
    np.testing.assert_array_equal(lines[0].get_ydata(), calm)
    np.testing.assert_array_equal(lines[1].get_ydata(), moved)
    assert lines[0].get_color() == "0.6"  # below threshold: grey, no legend entry
    assert [x.get_text() for x in left.get_legend().get_texts()] == ["moved"]
    assert lines[2].get_ydata()[0] == 0.5 and lines[2].get_linestyle() == "--"
    # bars: the largest FD per scan, first scan on top, red only above threshold
    bars = sorted(right.patches, key=lambda b: -b.get_y())
    assert [b.get_width() for b in bars] == [0.2, 1.4]
    assert bars[0].get_facecolor() == to_rgba("#1f77b4")
    assert bars[1].get_facecolor() == to_rgba("#d62728")
    ticks = dict(zip(right.get_yticks(), (x.get_text() for x in right.get_yticklabels()),
                     strict=True))
    assert ticks == {1: "calm", 0: "moved"}
    figures.figure_to_data_uri(fig)


def test_motion_overview_of_many_moving_scans_draws_their_median_instead_of_a_legend():
    t = np.array([0.5, 1.5, 4.0, 12.0])
    rng = np.random.default_rng(3)
    fds = [np.abs(rng.normal(1.0, 0.5, t.size)) + 0.6 for _ in range(12)]
    fig = figures.motion_overview_figure([(f"s{i}", t, fd) for i, fd in enumerate(fds)],
                                         threshold=0.5)
    left, _ = fig.axes
    lines = left.get_lines()
    assert all(line.get_color() == "#d62728" for line in lines[:12])
    # median per frame, computed here independently of the figure code
    expected = np.array([sorted(fd[k] for fd in fds)[5:7] for k in range(t.size)]).mean(1)
    np.testing.assert_allclose(lines[12].get_ydata(), expected)
    assert [x.get_text() for x in left.get_legend().get_texts()] == ["median of 12 scans"]


def test_motion_overview_without_threshold_draws_every_scan_grey():
    t = np.arange(3.0)
    fig = figures.motion_overview_figure([("a", t, np.array([0.0, 2.0, 1.0]))])
    left, right = fig.axes
    assert left.get_legend() is None
    assert [line.get_color() for line in left.get_lines()] == ["0.6"]
    assert right.patches[0].get_width() == 2.0


def test_png_file_to_data_uri_shrinks_wide_images_keeping_the_aspect(tmp_path):
    from PIL import Image

    wide = tmp_path / "wide.png"
    img = Image.new("RGB", (1200, 300), (200, 30, 30))
    img.paste((255, 255, 255), (0, 150, 1200, 300))
    img.save(wide)
    uri = figures.png_file_to_data_uri(wide, max_width=600)
    assert _png_size(uri) == (600, 150)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 80), (0, 0, 0)).save(small)
    assert _png_size(figures.png_file_to_data_uri(small, max_width=600)) == (100, 80)
    # colours survive: top half red, bottom half white
    raw = base64.b64decode(uri.split(",", 1)[1])
    px = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=int)
    np.testing.assert_allclose(px[10, 300], [200, 30, 30], atol=6)
    np.testing.assert_allclose(px[140, 300], [255, 255, 255], atol=6)


def test_png_file_to_data_uri_raises_oserror_for_a_file_that_is_no_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(OSError):
        figures.png_file_to_data_uri(bad)


def test_forest_draws_the_image_truth_as_open_squares():
    fig = figures.forest_figure(["NAcc", "VP"], [10.0, 5.0], [0.0, -5.0], [20.0, 15.0],
                                truth=[20.0, 20.0], truth_image=[14.0, 12.0])
    ax = fig.axes[0]
    squares = [ln for ln in ax.get_lines() if ln.get_marker() == "s"]
    assert len(squares) == 1
    np.testing.assert_array_equal(squares[0].get_xdata(), [14.0, 12.0])
    np.testing.assert_array_equal(squares[0].get_ydata(), [1, 0])  # first label on top


# ---------------------------------------------------------------- map grid, one map at a time
def _random_maps(rng: np.random.Generator, n: int, shape=(9, 10, 11)) -> list[np.ndarray]:
    maps = []
    for _ in range(n):
        vol = np.zeros(shape, dtype=np.float32)
        inside = rng.random(shape) < 0.6
        vol[inside] = rng.gamma(2.0, 0.7, inside.sum()).astype(np.float32)
        neg = rng.random(shape) < 0.02  # negative BP_ND (noise)
        vol[neg] = -rng.random(neg.sum()).astype(np.float32)
        vol[rng.random(shape) < 0.01] = np.nan
        maps.append(vol)
    return maps


def test_percentile_from_two_order_statistics_is_numpys_bit_for_bit():
    from petbind.report.figures.maps import MapGridScale

    rng = np.random.default_rng(7)
    for n_maps in (1, 2, 5, 13):
        maps = _random_maps(rng, n_maps, shape=(int(rng.integers(3, 12)), 7, 5))
        scale = MapGridScale()
        for m in maps:
            scale.add(m)
        selected = [scale.tile(m)[1] for m in maps]
        # the former map_grid_figure: every map as float64, stacked
        stack = np.stack([m.astype(float) for m in maps])
        vals = stack[np.isfinite(stack) & (stack != 0)]
        assert scale.vmax(selected) == float(np.percentile(vals, 98))
        # only the values near the percentile are kept from the second pass
        assert sum(s.size for s in selected) < vals.size


def test_percentile_linear_matches_numpy_at_every_rank():
    from petbind.report.figures.maps import MapGridScale

    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 50, 101, 1000):
        vals = rng.normal(size=(n, 1, 1)).astype(np.float32)
        vals[vals == 0] = 1.0
        for q in (0.0, 2.0, 50.0, 98.0, 100.0):
            scale = MapGridScale(q)
            scale.add(vals)
            assert scale.vmax([scale.tile(vals)[1]]) == float(
                np.percentile(vals.astype(float), q)), (n, q)


def test_map_grid_slices_and_colour_range_are_those_of_the_stacked_maps():
    from petbind.report.figures.maps import MapGridScale

    rng = np.random.default_rng(11)
    maps = _random_maps(rng, 4)
    maps[2][:4] = 0.0  # another support: the cut is through the union of them all
    keys = [("sub-01", "a"), ("sub-01", "b"), ("sub-02", "a"), ("sub-02", "b")]
    fig = figures.map_grid_figure(dict(zip(keys, maps, strict=True)), ["sub-01", "sub-02"],
                                  ["a", "b"], label="BP_ND")
    stack = np.stack([m.astype(float) for m in maps])
    support = np.any(np.isfinite(stack) & (stack != 0), axis=0)
    centre = np.round(np.argwhere(support).mean(axis=0)).astype(int)
    i, j, k = centre
    vmax = float(np.percentile(stack[np.isfinite(stack) & (stack != 0)], 98))
    for ax, vol in zip(fig.axes[:4], stack, strict=True):
        image = ax.get_images()[0]
        assert image.get_clim() == (0.0, vmax)
        shown = image.get_array()
        sag, cor, axi = vol[i, :, :].T, vol[:, j, :].T, vol[:, :, k].T
        h = max(sag.shape[0], cor.shape[0], axi.shape[0])
        expect = np.full((h, sag.shape[1] + cor.shape[1] + axi.shape[1] + 2), np.nan)
        expect[:sag.shape[0], :sag.shape[1]] = sag
        x0 = sag.shape[1] + 1
        expect[:cor.shape[0], x0:x0 + cor.shape[1]] = cor
        x0 += cor.shape[1] + 1
        expect[:axi.shape[0], x0:] = axi
        expect[expect == 0] = np.nan
        np.testing.assert_array_equal(np.ma.filled(shown, np.nan), expect)
    scale = MapGridScale()
    for m in maps:
        scale.add(m)
    assert scale.cut == (i, j, k)


def test_quantised_png_is_the_one_of_a_png_written_and_read_back():
    """figure_to_data_uri quantises the canvas's pixels directly; it used to write a
    PNG and read it back: the same bytes (PNG is lossless)."""
    import base64
    import io

    from PIL import Image

    def fig():
        t = np.linspace(0.5, 90.0, 25)
        return figures.fit_figure(t, {"VP": np.exp(-t / 30), "NAcc": np.exp(-t / 50)},
                                  {"srtm": {"VP": np.exp(-t / 31), "NAcc": np.exp(-t / 49)}},
                                  title="sub-01, baseline")

    ours = figures.figure_to_data_uri(fig(), colors=64)
    png = io.BytesIO()
    fig().savefig(png, format="png", dpi=figures.DPI, metadata={"Software": None})
    img = Image.open(io.BytesIO(png.getvalue())).convert("RGB")
    out = io.BytesIO()
    img.quantize(colors=64, method=Image.Quantize.FASTOCTREE).save(out, format="PNG",
                                                                   optimize=True)
    assert ours == f"data:image/png;base64,{base64.b64encode(out.getvalue()).decode('ascii')}"


@pytest.fixture
def no_automatic_gc():
    """The garbage collector runs only when asked (what the code frees is then its doing)."""
    import gc

    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_a_large_figures_renderer_is_freed_before_its_pixels_are_quantised(
        no_automatic_gc, monkeypatch):
    """Issue 18: a worker's peak while it draws a grid part was the renderer's pixels
    and PIL's quantiser's at once; the renderer is freed first."""
    import weakref

    from PIL import Image

    from petbind.report.figures.base import COLLECT_PIXELS, new_figure

    fig = new_figure(12.0, 12.0)
    assert (12 * figures.DPI) ** 2 >= COLLECT_PIXELS
    ax = fig.subplots()
    ax.plot([0.0, 1.0], [1.0, 0.0])
    ax.set_title("a title")  # text artists keep the renderer they were drawn with
    del ax
    fig.canvas.draw()
    renderer = weakref.ref(fig.canvas.get_renderer())  # savefig draws with this one again
    alive_when_quantised = []
    real = Image.Image.quantize

    def quantize(self, *args, **kwargs):
        alive_when_quantised.append(renderer() is not None)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "quantize", quantize)
    figures.figure_to_data_uri(fig)
    assert alive_when_quantised == [False]


def test_a_figure_task_frees_its_figures_before_it_returns(no_automatic_gc, monkeypatch):
    """Issue 18: the worker gives its free heap back when a task ends, so the task's
    figures (artists in reference cycles) must be freed by then, not later."""
    import weakref

    from petbind.report.figures import deferred

    drawn = []
    real = figures.fit_figure

    def fit_figure(*args, **kwargs):
        fig = real(*args, **kwargs)
        drawn.append(weakref.ref(fig))
        return fig

    monkeypatch.setattr(deferred._figures, "fit_figure", fit_figure)
    t = np.array([1.0, 2.0, 3.0])
    recipe = deferred.Recipe("fit_figure", (t, {"a": t}, {"m": {"a": t + 0.1}}), {})
    uris = deferred.draw([(recipe, (), {}), (recipe, (), {})])
    assert len(uris) == 2 and uris[0] == uris[1]
    assert len(drawn) == 2 and all(ref() is None for ref in drawn)


def test_figure_tasks_in_flight_are_at_most_two_per_worker():
    """Issue 18: a task sent to a cluster waits on a worker with its arguments, so the
    figure tasks are sent two per worker at a time, the next as one finishes."""
    import threading

    from petbind.report.figures.deferred import DeferredFigures

    class Engine:  # records how many tasks it holds at once
        n_workers = 2

        def __init__(self):
            self.lock = threading.Lock()
            self.now = self.most = 0
            self.release = threading.Event()

        def run(self, tasks):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            self.release.wait(5.0)  # held until every figure has been recorded
            out = {t.key: t.func(*t.args, **t.kwargs) for t in tasks}
            with self.lock:
                self.now -= 1
            return out

    engine = Engine()
    deferred = DeferredFigures(engine, batch=1)
    t = np.array([1.0, 2.0])
    keys = [deferred.figure_to_data_uri(deferred.fit_figure(t, {"a": t}, {"m": {"a": t}}))
            for _ in range(6)]
    engine.release.set()
    page = deferred.fill(" ".join(keys))
    assert engine.most == 2 * engine.n_workers
    assert page.count("data:image/png;base64,") == 6


def _fit_inputs(rng, scale, t, regions=("VP", "NAcc", "cerebellum"), models=("srtm", "mrtm2")):
    measured = {r: scale * (1 + i) * np.exp(-t / 40) * (1 + 0.05 * rng.standard_normal(t.size))
                for i, r in enumerate(regions)}
    fitted = {m: {r: scale * (1 + i) * np.exp(-t / (40 + 3 * j)) for i, r in enumerate(regions)}
              for j, m in enumerate(models)}
    return measured, fitted


def test_a_refilled_fit_figure_draws_the_pixels_of_a_new_one():
    """Issue 18: inside ``reusing()`` one fit figure is built and refilled for every scan of
    the same layout (half of its cost was making axes and ticks); each page image must be
    the one a new figure gives, whatever the scan's scale, frame times or gaps."""
    from petbind.report.figures.base import reusing

    rng = np.random.default_rng(3)
    t = np.linspace(0.5, 90.0, 25)
    scans = []
    for k, scale in enumerate([1.0, 30.0, 0.02, 4e4, 1.0, 7.0]):
        measured, fitted = _fit_inputs(rng, scale, t if k != 4 else t * 1.3)
        if k == 2:
            fitted["srtm"]["VP"] = np.full(t.size, np.nan)  # a failed fit: no line
        if k == 5:
            measured["NAcc"] = -measured["NAcc"]  # negative values and residuals
            fitted["mrtm2"]["cerebellum"][:10] = np.nan  # a model that skips early frames
        scans.append((measured, fitted, f"sub-0{k}, baseline $x$"))
    new = [figures.figure_to_data_uri(figures.fit_figure(t if k != 4 else t * 1.3, m, f,
                                                         title=title))
           for k, (m, f, title) in enumerate(scans)]
    with reusing():
        figs = []
        refilled = []
        for k, (m, f, title) in enumerate(scans):
            fig = figures.fit_figure(t if k != 4 else t * 1.3, m, f, title=title)
            figs.append(fig)
            refilled.append(figures.figure_to_data_uri(fig))
    assert refilled == new
    assert len({id(f) for f in figs}) == 1  # one figure, built once
    assert len(set(new)) == len(new)


def test_fit_figure_axes_without_a_label_draw_as_if_placed_automatically():
    """The fit figure skips placing empty axis labels (matplotlib measures every tick
    label to place them at each draw): the same pixels as with matplotlib's placement,
    over scales that bring in the axis offset text and a grid of two rows."""
    rng = np.random.default_rng(8)
    t = np.linspace(0.5, 90.0, 25)
    regions = ("VP", "NAcc", "cerebellum", "putamen", "thalamus")
    for scale, cols in [(1.0, 6), (4e4, 6), (0.02, 3)]:
        m, f = _fit_inputs(rng, scale, t, regions=regions)
        fast = figures.fit_figure(t, m, f, title="sub-01", max_cols=cols)
        skipped = [a for ax in fast.axes for a in (ax.xaxis, ax.yaxis)
                   if not a.get_label_text()]
        assert skipped and all(not a._autolabelpos for a in skipped)
        auto = figures.fit_figure(t, m, f, title="sub-01", max_cols=cols)
        assert figures.figure_to_data_uri(fast) == figures.figure_to_data_uri(_auto(auto))
    # the TAC grid of many scans: inner panels share x, one panel left empty
    panels = [(f"sub-{k:02d}", t, rng.uniform(0.5, 2.0, (3, 1)) * np.exp(-t / 50))
              for k in range(8)]
    fast = figures.tac_grid_figure(panels, ["VP", "NAcc", "cerebellum"],
                                   reference="cerebellum")
    auto = figures.tac_grid_figure(panels, ["VP", "NAcc", "cerebellum"],
                                   reference="cerebellum")
    assert figures.figure_to_data_uri(fast) == figures.figure_to_data_uri(_auto(auto))


def _auto(fig):
    """``fig`` with matplotlib's own placement of every axis label, empty or not."""
    for ax in fig.axes:
        for a in (ax.xaxis, ax.yaxis):
            a._autolabelpos = True
    return fig


def test_fit_figures_built_before_drawing_are_not_the_same_figure():
    """A refillable figure is taken by one builder call until it is drawn again."""
    from petbind.report.figures.base import reusing

    rng = np.random.default_rng(4)
    t = np.linspace(0.5, 90.0, 20)
    a, b = _fit_inputs(rng, 1.0, t), _fit_inputs(rng, 5.0, t)
    expected = [figures.figure_to_data_uri(figures.fit_figure(t, *x)) for x in (a, b, a)]
    with reusing():
        figures.figure_to_data_uri(figures.fit_figure(t, *b))  # one kept
        fa = figures.fit_figure(t, *a)  # takes the kept one
        fb = figures.fit_figure(t, *b)  # none kept now: a new figure
        assert fa is not fb
        got = [figures.figure_to_data_uri(fa), figures.figure_to_data_uri(fb)]
        other = figures.fit_figure(t, *a, title="")  # same layout as before: refilled
        got.append(figures.figure_to_data_uri(other))
    assert got == expected


def test_a_fit_figure_of_another_layout_is_built_anew():
    """Other regions, models, fits present or frames: a new figure, not a refill."""
    from petbind.report.figures.base import reusing

    rng = np.random.default_rng(5)
    t = np.linspace(0.5, 90.0, 20)
    with reusing():
        fig = figures.fit_figure(t, *_fit_inputs(rng, 1.0, t))
        figures.figure_to_data_uri(fig)
        others = [figures.fit_figure(t, *_fit_inputs(rng, 1.0, t, regions=("VP", "NAcc"))),
                  figures.fit_figure(t, *_fit_inputs(rng, 1.0, t, models=("srtm",))),
                  figures.fit_figure(t[:-1], *_fit_inputs(rng, 1.0, t[:-1])),
                  figures.fit_figure(t, *_fit_inputs(rng, 1.0, t), title="with a title")]
        assert all(o is not fig for o in others)
    m, f = _fit_inputs(rng, 1.0, t)
    del f["srtm"]["NAcc"]  # srtm not fitted in one region: another layout
    with reusing():
        fig = figures.fit_figure(t, *_fit_inputs(rng, 1.0, t))
        figures.figure_to_data_uri(fig)
        assert figures.fit_figure(t, m, f) is not fig


def test_outside_reusing_a_drawn_fit_figure_is_released():
    rng = np.random.default_rng(6)
    t = np.linspace(0.5, 90.0, 20)
    fig = figures.fit_figure(t, *_fit_inputs(rng, 1.0, t))
    figures.figure_to_data_uri(fig)
    assert fig.axes == []
    assert figures.fit_figure(t, *_fit_inputs(rng, 1.0, t)) is not fig


def test_fit_figures_of_several_tracers_interleaved_are_all_refilled():
    """A report lists scans subject by subject, each with its tracers (one layout each):
    three layouts in turn are each refilled, not evicted by the others."""
    from petbind.report.figures.base import reusing

    rng = np.random.default_rng(7)
    t = np.linspace(0.5, 90.0, 20)
    regions = [("VP", "NAcc"), ("VP", "NAcc", "putamen"), ("thalamus",)]
    first: dict[int, object] = {}
    refilled = []
    with reusing():
        for _subject in range(3):
            for k, regs in enumerate(regions):
                fig = figures.fit_figure(t, *_fit_inputs(rng, 1.0, t, regions=regs))
                refilled.append(first.setdefault(k, fig) is fig)
                figures.figure_to_data_uri(fig)
    assert all(refilled)
