"""petbind.io.images: one load() for every dynamic PET format, one reader of 3-D volumes."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel
import nibabel as nib
import numpy as np
import pytest

from petbind.errors import FileFormatError
from petbind.io.ecat import load_ecat
from petbind.io.images import load, open_stream, read_volume
from petbind.io.nifti import load_nifti

TINYPET = Path(nibabel.__file__).parent / "tests" / "data" / "tinypet.v"


def test_load_reads_a_bids_image_with_its_sidecar_as_true_kbq_per_ml(tmp_path, fx):
    ds = fx.make_bids_dataset(tmp_path, decay="none", units="Bq/mL")
    img = load(ds["pet"])
    assert img.units == "kBq/mL"
    np.testing.assert_allclose(img.get_data(), ds["true"], rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(img.timing.start_s, ds["starts_s"])


def test_load_dispatches_ecat_and_nifti_with_a_timing_table_to_their_readers(tmp_path, fx):
    ecat = load(TINYPET, injection_offset_s=0.0)
    ref = load_ecat(TINYPET, injection_offset_s=0.0)
    np.testing.assert_array_equal(ecat.get_data(), ref.get_data())
    assert ecat.timing == ref.timing
    # a NIfTI without sidecar: the timing is given, as load_nifti takes it
    ds = fx.make_bids_dataset(tmp_path)
    bare = tmp_path / "bare.nii.gz"
    nib.save(nib.load(ds["pet"]), bare)
    img = load(bare, timing=load(ds["pet"]).timing, units="kBq/mL", decay_corrected=True)
    np.testing.assert_allclose(img.get_data(), ds["true"], rtol=2e-6, atol=1e-5)
    same = load_nifti(bare, load(ds["pet"]).timing, units="kBq/mL", decay_corrected=True)
    np.testing.assert_array_equal(img.get_data(), same.get_data())


def test_load_refuses_an_unknown_format_naming_the_file(tmp_path):
    p = tmp_path / "scan.mnc"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(FileFormatError, match="unknown image format") as e:
        load(p)
    assert e.value.path == str(p)


def test_read_volume_squeezes_one_volume_and_applies_the_scale_slope(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4, 1)
    aff = np.diag([2.0, 3.0, 4.0, 1.0])
    img = nib.Nifti1Image(data, aff)
    img.header.set_slope_inter(0.5, 1.0)
    p = tmp_path / "map.nii.gz"
    nib.save(img, p)
    vol = read_volume(p)
    assert vol.data.shape == (2, 3, 4) and vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, data[..., 0] * 0.5 + 1.0)
    np.testing.assert_array_equal(vol.affine, aff)
    assert vol.zooms == (2.0, 3.0, 4.0)
    assert read_volume(p, dtype=None).data.dtype == np.float64  # the slope makes it float


def test_read_volume_refuses_a_truncated_or_4d_image_with_one_error_class(tmp_path):
    p = tmp_path / "map.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), p)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(FileFormatError) as e:
        read_volume(cut)
    assert e.value.path == str(cut)
    four = tmp_path / "four.nii"
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2, 3), np.float32), np.eye(4)), four)
    with pytest.raises(FileFormatError, match="3-D"):
        read_volume(four)
    with pytest.raises(FileFormatError, match="does not exist"):
        read_volume(tmp_path / "missing.nii.gz")


def test_read_volume_inflates_a_nii_gz_once_and_checks_it_as_open_image_does(
        tmp_path, monkeypatch):
    import petbind.io.verify as verify
    from petbind.io.images import open_image

    rng = np.random.default_rng(3)
    data = rng.normal(size=(40, 30, 20)).astype(np.float32)
    data[0, 0, :] = np.nan
    aff = np.diag([2.0, 2.0, 2.5, 1.0])
    p = tmp_path / "map.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), p)
    # nibabel's own reading as the reference: the same values, affine and voxel size
    want_data = np.asarray(nib.load(p).dataobj, dtype=np.float32)
    calls = []
    real = verify._inflate_all
    monkeypatch.setattr(verify, "_inflate_all", lambda *a, **k: calls.append(1) or real(*a, **k))
    read = []
    real_read = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read",
                        lambda self, *a: (lambda b: read.append(len(b)) or b)(real_read(self, *a)))
    vol = read_volume(p)
    np.testing.assert_array_equal(vol.data, want_data)
    np.testing.assert_array_equal(vol.affine, aff)
    assert vol.zooms == (2.0, 2.0, 2.5)
    # one checking decompression that keeps the bytes; nibabel read only the header
    assert len(calls) == 1
    assert sum(read) < data.nbytes / 10
    # damaged: the same error and message as the lazy, verified open
    good = p.read_bytes()
    for name, bad in (("crc", good[:-8] + bytes([good[-8] ^ 1]) + good[-7:]),
                      ("beyond", good + gzip.compress(b"x"))):
        q = tmp_path / f"{name}.nii.gz"
        q.write_bytes(bad)
        with pytest.raises(FileFormatError) as want:
            open_image(q)
        with pytest.raises(FileFormatError) as got:
            read_volume(q)
        assert (got.value.message, got.value.field) == (want.value.message, want.value.field)
        assert got.value.path == str(q)


def test_open_stream_gives_the_decompressed_bytes_of_a_gz_and_the_bytes_of_a_plain_file(
        tmp_path):
    raw = bytes(range(256)) * 40
    gz = tmp_path / "x.nii.gz"
    gz.write_bytes(gzip.compress(raw))
    plain = tmp_path / "x.nii"
    plain.write_bytes(raw)
    for p in (gz, plain):
        with open_stream(p) as f:
            assert f.read() == raw
