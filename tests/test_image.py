"""Tests for petbind.image.DynamicImage: voxel curves, chunks, region means."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from petbind.errors import DataError, FileFormatError, TimingError
from petbind.image import DynamicImage
from petbind.timing import FrameTiming

SHAPE = (7, 5, 4)
T = 6
TIMING = FrameTiming.from_schedule([(3, 60), (3, 120)], unit="s")


def _data():
    return np.random.default_rng(5).uniform(0, 10, SHAPE + (T,))


def _mask():
    m = np.zeros(SHAPE, bool)
    m[1:6, 1:4, 1:3] = True
    m[0, 0, 0] = True
    return m


def test_voxel_curves_match_direct_indexing_in_c_order():
    data = _data()
    img = DynamicImage(data, np.eye(4), TIMING)
    curves = img.voxel_curves(_mask())
    assert curves.dtype == np.float32
    np.testing.assert_allclose(curves, data[_mask()], rtol=1e-6)


def test_frame_scale_is_applied_per_frame():
    data = _data()
    scale = np.arange(1, T + 1, dtype=float)
    img = DynamicImage(data, np.eye(4), TIMING, frame_scale=scale)
    np.testing.assert_allclose(img.voxel_curves(_mask()), data[_mask()] * scale, rtol=1e-6)


@pytest.mark.parametrize("n_voxels", [1, 7, 16, 1000])
def test_chunks_cover_every_voxel_curve_exactly_once(n_voxels):
    img = DynamicImage(_data(), np.eye(4), TIMING)
    full = img.voxel_curves(_mask())
    out = np.full(full.shape, np.nan, dtype=np.float32)
    seen = np.zeros(full.shape[0], int)
    for rows, curves in img.iter_chunks(_mask(), n_voxels):
        out[rows] = curves
        seen[rows] += 1
        if n_voxels >= 16:  # the largest plane holds 16 masked voxels
            assert curves.shape[0] <= n_voxels
    np.testing.assert_array_equal(seen, 1)
    np.testing.assert_array_equal(out, full)


def test_chunks_of_a_file_read_only_their_planes(tmp_path):
    import tracemalloc

    timing = FrameTiming.from_schedule([(24, 60)])
    data = np.random.default_rng(2).uniform(0, 1, (40, 40, 20, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "a.nii"))
    img = DynamicImage(nib.load(str(tmp_path / "a.nii")).dataobj, np.eye(4), timing)
    mask = np.ones(data.shape[:3], bool)
    tracemalloc.start()
    for _ in img.iter_chunks(mask, 40 * 40):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # one plane of all frames is 0.15 MB; the whole image is 3 MB
    assert peak < 0.5 * data.nbytes


def test_region_means_pool_labels_that_share_a_name():
    data = _data()
    lab = np.zeros(SHAPE, int)
    lab[:3] = 1
    lab[3:5] = 2
    lab[5:] = 3
    img = DynamicImage(data, np.eye(4), TIMING)
    tac = img.region_means(lab, {1: "caudate", 2: "caudate", 3: "cerebellum"})
    assert tac.regions == ["caudate", "cerebellum"]
    np.testing.assert_allclose(tac.curve("caudate"), data[:5].reshape(-1, T).mean(0),
                               rtol=1e-6)
    np.testing.assert_allclose(tac.curve("cerebellum"), data[5:].reshape(-1, T).mean(0),
                               rtol=1e-6)
    assert tac.metadata["n_voxels"] == {"caudate": 5 * 5 * 4, "cerebellum": 2 * 5 * 4}
    assert tac.timing == TIMING


def test_region_means_default_names_are_label_numbers():
    lab = np.zeros(SHAPE, np.int16)
    lab[0] = 4
    lab[1] = 9
    tac = DynamicImage(_data(), np.eye(4), TIMING).region_means(lab)
    assert tac.regions == ["4", "9"]


def test_region_with_no_voxels_is_refused():
    lab = np.zeros(SHAPE, int)
    lab[0] = 1
    with pytest.raises(DataError, match="no voxels"):
        DynamicImage(_data(), np.eye(4), TIMING).region_means(lab, {1: "a", 2: "b"})


def test_nan_outside_the_mask_is_harmless_but_inside_is_refused():
    data = _data()
    data[6, 4, 3, 2] = np.nan
    img = DynamicImage(data, np.eye(4), TIMING)
    img.voxel_curves(_mask())
    m = _mask()
    m[6, 4, 3] = True
    with pytest.raises(DataError):
        img.voxel_curves(m)
    with pytest.raises(DataError):
        list(img.iter_chunks(m, 10))


def test_mask_on_another_grid_is_refused():
    img = DynamicImage(_data(), np.eye(4), TIMING)
    with pytest.raises(DataError) as e:
        img.voxel_curves(np.ones((7, 5, 3), bool))
    assert e.value.field == "mask"


def test_frame_count_must_match_timing():
    with pytest.raises(TimingError):
        DynamicImage(np.zeros(SHAPE + (5,)), np.eye(4), TIMING)
    with pytest.raises(DataError):
        DynamicImage(np.zeros(SHAPE), np.eye(4), TIMING)


def test_lazy_proxy_gives_the_same_curves_as_the_array(tmp_path):
    data = _data().astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "a.nii.gz"))
    proxy = nib.load(str(tmp_path / "a.nii.gz"), keep_file_open=True).dataobj
    img = DynamicImage(proxy, np.diag([2, 2, 2, 1]), TIMING)
    np.testing.assert_array_equal(img.voxel_curves(_mask()), data[_mask()])
    out = np.empty((int(_mask().sum()), T), np.float32)
    for rows, curves in img.iter_chunks(_mask(), 5):
        out[rows] = curves
    np.testing.assert_array_equal(out, data[_mask()])
    assert img.voxel_volume_ml == pytest.approx(0.008)


@pytest.mark.parametrize("writer", ["nibabel", "petbind"])  # one stream; a member a frame
def test_chunks_of_a_gz_file_equal_voxel_curves_and_leave_no_temporary_file(tmp_path,
                                                                            monkeypatch,
                                                                            writer):
    import tempfile

    import petbind.gz
    from petbind.io.bids import save_image

    data = _data().astype(np.float32)
    if writer == "nibabel":
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "a.nii.gz"))
    else:
        monkeypatch.setattr(petbind.gz, "MEMBER_MIN", 1)
        monkeypatch.setattr(petbind.gz, "PARALLEL_MIN", 0)
        save_image(tmp_path / "a.nii.gz", data, np.eye(4))
        assert len(petbind.gz.member_index(tmp_path / "a.nii.gz")) == 1 + T
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    img = DynamicImage(nib.load(str(tmp_path / "a.nii.gz")).dataobj, np.eye(4), TIMING,
                       frame_scale=np.full(T, 0.5))
    out = np.empty((int(_mask().sum()), T), np.float32)
    n_chunks = 0
    for rows, curves in img.iter_chunks(_mask(), 16):
        out[rows] = curves
        n_chunks += 1
        assert len(list(scratch.iterdir())) == 1  # the decompressed copy, while iterating
    assert n_chunks > 1
    np.testing.assert_allclose(out, data[_mask()] * 0.5, rtol=1e-7)
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "scratch"]


def test_frame_blocks_of_a_gz_file_are_read_through_one_open_stream(tmp_path, monkeypatch):
    # nibabel's proxy re-opens a .nii.gz for every slice and inflates it again from its
    # start up to the slice; reading block after block must open it once
    from nibabel.openers import ImageOpener

    import petbind.gz

    data = _data().astype(np.float32)
    p = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(p))
    scale = np.linspace(0.5, 2.0, T)
    img = DynamicImage(nib.load(str(p)).dataobj, np.eye(4), TIMING, frame_scale=scale)
    monkeypatch.setattr(DynamicImage, "BLOCK_BYTES", 4 * int(np.prod(SHAPE)) * 2)  # 2 frames
    assert len(img._frame_blocks()) == 3
    opened: list[str] = []
    real_open = petbind.gz.open_read
    monkeypatch.setattr(petbind.gz, "open_read",
                        lambda *a, **k: opened.append("petbind") or real_open(*a, **k))
    real_init = ImageOpener.__init__

    def counting_init(self, fileish, *a, **k):
        if isinstance(fileish, str):
            opened.append("nibabel")
        real_init(self, fileish, *a, **k)

    monkeypatch.setattr(ImageOpener, "__init__", counting_init)
    labels = np.arange(int(np.prod(SHAPE))).reshape(SHAPE) % 3 + 1
    expected = data * scale.astype(np.float32)
    np.testing.assert_array_equal(img.get_data(), expected)
    assert opened == ["petbind"]
    np.testing.assert_array_equal(img.voxel_curves(_mask()), expected[_mask()])
    means = img.region_means(labels)
    for k in (1, 2, 3):
        np.testing.assert_allclose(means.values[k - 1],
                                   expected[labels == k].astype(np.float64).mean(axis=0),
                                   rtol=1e-12)
    assert opened == ["petbind"] * 3
    # a damaged stream still fails naming the file
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    img = DynamicImage(nib.load(str(p)).dataobj, np.eye(4), TIMING, path=str(p))
    with pytest.raises(FileFormatError) as exc:
        img.get_data()
    assert exc.value.field == "data" and str(p) in str(exc.value)


@pytest.mark.parametrize("damage", ["trailer", "beyond"])
def test_a_whole_in_order_read_checks_the_end_of_the_stream(tmp_path, damage):
    # every data byte is there, but the gzip trailer (CRC-32, length) is gone, or more
    # data follows what the header needs: only reading on past the last frame tells
    import gzip

    data = _data().astype(np.float32)
    p = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(p))
    raw = p.read_bytes()
    p.write_bytes(raw[:-8] if damage == "trailer" else raw + gzip.compress(b"1234", mtime=0))
    img = DynamicImage(nib.load(str(p)).dataobj, np.eye(4), TIMING, path=str(p))
    np.testing.assert_array_equal(img.frames(0, 2), data[..., :2])  # a part reads fine
    for read in (img.get_data, lambda: img.voxel_curves(_mask()),
                 lambda: img.region_means(np.ones(SHAPE, int))):
        with pytest.raises(FileFormatError) as exc:
            read()
        assert exc.value.field == "data" and str(p) in str(exc.value)
