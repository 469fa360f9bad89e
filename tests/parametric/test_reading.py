"""A ``.nii.gz`` scan is decompressed once and still verified (parametric/images.py, issue 18).

``parametric_maps`` / ``brain_mask`` given a path open the scan without the
whole-stream CRC pass of ``open_nifti`` and check the stream's end after
reading every frame (``io.verify.check_stream_end``). These tests damage the
gzip stream in the ways that pass could catch (a flipped data byte under an
intact header, a truncated file, data beyond what the header needs) and check
that each still fails with one FileFormatError naming the file, and that the
maps from the path equal the maps from the eagerly verified image.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from petbind.errors import FileFormatError
from petbind.io.bids import load_pet
from petbind.io.images import load
from petbind.parametric import RefCurve, brain_mask, parametric_maps

SHAPE = (6, 5, 4)
STARTS = [0.0, 60.0, 180.0, 420.0, 900.0, 1800.0]
DURS = [60.0, 120.0, 240.0, 480.0, 900.0, 1800.0]
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
MARK = np.float32(12345.5)  # one voxel value whose bytes are found in a stored gzip block


def _data(seed: int = 0) -> np.ndarray:
    """Positive noisy curves rising then falling (kBq/mL); one marked voxel in frame 2."""
    rng = np.random.default_rng(seed)
    mid = (np.array(STARTS) + np.array(DURS) / 2) / 60.0
    shape_t = mid * np.exp(-mid / 20.0)
    scale = 1.0 + rng.random(SHAPE)
    d = scale[..., None] * shape_t * (1 + 0.05 * rng.standard_normal(SHAPE + (len(STARTS),)))
    d = d.astype(np.float32)
    d[1, 1, 1, 2] = MARK
    return d


def _write(folder: Path, data: np.ndarray, *, level: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "sub-01_pet.nii.gz"
    raw = nib.Nifti1Image(data, AFFINE).to_bytes()
    p.write_bytes(gzip.compress(raw, compresslevel=level, mtime=0))
    side = {"Units": "kBq/mL", "TracerRadionuclide": "C11", "TimeZero": "10:00:00",
            "ScanStart": 0, "InjectionStart": 0, "FrameTimesStart": STARTS,
            "FrameDuration": DURS, "ImageDecayCorrected": True,
            "ImageDecayCorrectionTime": 0}
    (folder / "sub-01_pet.json").write_text(json.dumps(side))
    return p


def _masks() -> tuple[np.ndarray, np.ndarray]:
    k = np.indices(SHAPE)[2]
    return k == 0, k > 0


def _fit(image, **kw):
    ref, brain = _masks()
    return parametric_maps(image, model="mrtm2", k2prime=0.1, ref_curve=ref, mask=brain,
                           scheduler="sync", **kw)


def _flip_marked_voxel(p: Path) -> None:
    """Change the marked voxel's value inside a level-0 (stored) gzip member; the header,
    the other bytes and the CRC trailer are kept, so only the CRC can tell."""
    b = bytearray(p.read_bytes())
    at = bytes(b).find(MARK.tobytes())
    assert at > 0 and bytes(b).count(MARK.tobytes()) == 1
    b[at + 3] ^= 0x01
    p.write_bytes(bytes(b))


def test_maps_from_the_path_equal_maps_from_the_eagerly_verified_image(tmp_path):
    p = _write(tmp_path / "a", _data())
    from_path = _fit(p)
    from_image = _fit(load_pet(p))  # opened with the whole-stream check
    for k in from_image.maps:
        np.testing.assert_array_equal(from_path.maps[k], from_image.maps[k])
    np.testing.assert_array_equal(from_path.valid, from_image.valid)
    assert from_path.valid.sum() > 0


def test_a_multi_member_stream_is_read_whole_and_gives_the_same_maps(tmp_path):
    data = _data(1)
    single = _write(tmp_path / "one", data)
    multi = _write(tmp_path / "two", data)
    raw = gzip.decompress(single.read_bytes())
    cut = len(raw) // 3
    # RFC 1952 2.2: a gzip file is a series of members; zero padding after the last
    multi.write_bytes(gzip.compress(raw[:cut], mtime=0) + gzip.compress(raw[cut:], mtime=0)
                      + b"\x00" * 16)
    a, b = _fit(single), _fit(multi)
    np.testing.assert_array_equal(a.bp_nd, b.bp_nd)


def test_a_flipped_data_byte_under_an_intact_header_fails_naming_the_file(tmp_path):
    p = _write(tmp_path / "a", _data(), level=0)
    _fit(p)  # intact: reads
    _flip_marked_voxel(p)
    # opening without the whole-stream pass does not notice ...
    assert load(p, verify_gzip=False).dataobj.shape == SHAPE + (len(STARTS),)
    with pytest.raises(FileFormatError) as eager:
        load(p)
    assert eager.value.field == "data"
    # ... but reading the frames does, at the stream's end (CRC-32)
    with pytest.raises(FileFormatError) as exc:
        _fit(p)
    assert exc.value.field == "data" and str(p) in str(exc.value)
    assert "damaged" in exc.value.message and "\n" not in str(exc.value)
    with pytest.raises(FileFormatError) as exc2:
        brain_mask(p)  # the derived mask reads the whole stream too
    assert exc2.value.field == "data"


def test_a_truncated_stream_fails_naming_the_file(tmp_path):
    p = _write(tmp_path / "a", _data())
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * 0.8)])
    with pytest.raises(FileFormatError) as exc:
        _fit(p)
    assert exc.value.field == "data" and str(p) in str(exc.value)


def test_a_lost_crc_trailer_fails(tmp_path):
    p = _write(tmp_path / "a", _data())
    p.write_bytes(p.read_bytes()[:-8])  # every data byte there, CRC-32 and ISIZE gone
    with pytest.raises(FileFormatError) as exc:
        _fit(p)
    assert exc.value.field == "data"


def test_data_beyond_what_the_header_needs_fails(tmp_path):
    p = _write(tmp_path / "a", _data())
    p.write_bytes(p.read_bytes() + gzip.compress(b"12345678", mtime=0))
    with pytest.raises(FileFormatError) as exc:
        _fit(p)
    assert exc.value.field == "data" and "more than" in exc.value.message
    ref, _brain = _masks()
    with pytest.raises(FileFormatError):
        parametric_maps(p, model="mrtm2", k2prime=0.1, ref_curve=RefCurve(mask=ref))


def test_a_derived_brain_mask_reads_the_scan_once_and_gives_the_two_pass_maps(
        tmp_path, monkeypatch):
    # some voxels far below the mask threshold, one non-finite: the derived mask is a
    # proper subset, so the curves are packed from scattered voxels
    data = _data(2)
    data[0] *= 0.01
    data[4, 2, 3, 1] = np.nan
    p = _write(tmp_path / "a", data)
    ref, _brain = _masks()
    expected_mask = brain_mask(p)
    assert 0 < expected_mask.sum() < expected_mask.size - 20
    import petbind.io.images as images

    opened: list[str] = []
    real = images.open_stream

    def counting(path):
        opened.append(str(path))
        return real(path)

    monkeypatch.setattr(images, "open_stream", counting)
    derived = parametric_maps(p, model="mrtm2", k2prime=0.1, ref_curve=RefCurve(mask=ref),
                              scheduler="sync")
    assert opened == [str(p)]  # one decompression for the mask and the curves
    given = parametric_maps(p, model="mrtm2", k2prime=0.1, ref_curve=RefCurve(mask=ref),
                            mask=expected_mask, scheduler="sync")
    np.testing.assert_array_equal(derived.valid, given.valid)
    np.testing.assert_array_equal(derived.valid, expected_mask & derived.valid)
    assert derived.valid.sum() == given.valid.sum() > 0
    for k in given.maps:
        np.testing.assert_array_equal(derived.maps[k], given.maps[k])


def test_a_truncated_stream_fails_with_a_derived_mask(tmp_path):
    p = _write(tmp_path / "a", _data())
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * 0.8)])
    ref, _brain = _masks()
    with pytest.raises(FileFormatError) as exc:
        parametric_maps(p, model="mrtm2", k2prime=0.1, ref_curve=RefCurve(mask=ref))
    assert exc.value.field == "data" and str(p) in str(exc.value)


# -- the scan read ahead from the command line (io.prefetch), as `petbind parametric` does
def _damage(p: Path, how: str) -> None:
    b = p.read_bytes()
    if how == "flip":
        _flip_marked_voxel(p)
    elif how == "truncate":
        p.write_bytes(b[: int(len(b) * 0.8)])
    elif how == "trailer":
        p.write_bytes(b[:-8])
    elif how == "beyond":
        p.write_bytes(b + gzip.compress(b"12345678", mtime=0))


def _fit_ahead(p: Path, mask: bool = True):
    from petbind.io import prefetch

    assert prefetch.start(p)
    try:
        if mask:
            return _fit(p)
        ref, _brain = _masks()
        return parametric_maps(p, model="mrtm2", k2prime=0.1, ref_curve=RefCurve(mask=ref),
                               scheduler="sync")
    finally:
        assert prefetch.pending() == []  # the reader took the stream read ahead


@pytest.mark.parametrize("plain", [False, True])
@pytest.mark.parametrize("mask", [True, False])
def test_maps_from_a_scan_read_ahead_equal_maps_read_directly(tmp_path, plain, mask):
    p = _write(tmp_path / "a", _data(3))
    if plain:  # the uncompressed .nii of the same image
        q = p.with_name("sub-01_pet.nii")
        q.write_bytes(gzip.decompress(p.read_bytes()))
        p.with_name("sub-01_pet.json").rename(q.with_name("sub-01_pet.json"))
        p.unlink()
        p = q
    ref, _brain = _masks()
    direct = _fit(p) if mask else parametric_maps(
        p, model="mrtm2", k2prime=0.1, ref_curve=RefCurve(mask=ref), scheduler="sync")
    ahead = _fit_ahead(p, mask)
    assert direct.valid.sum() > 0
    np.testing.assert_array_equal(ahead.valid, direct.valid)
    for k in direct.maps:
        np.testing.assert_array_equal(ahead.maps[k], direct.maps[k])


@pytest.mark.parametrize("how", ["flip", "truncate", "trailer", "beyond"])
def test_a_damaged_scan_read_ahead_fails_as_when_read_directly(tmp_path, how):
    p = _write(tmp_path / "a", _data(), level=0 if how == "flip" else 6)
    _damage(p, how)
    with pytest.raises(FileFormatError) as direct:
        _fit(p)
    with pytest.raises(FileFormatError) as ahead:
        _fit_ahead(p)
    assert ahead.value.field == direct.value.field == "data"
    # the same message, but for the frame being read when the reader met the damage: the
    # read-ahead takes 16 MiB of the file at a time and may meet it sooner (a CRC is
    # checked at the end of its member)
    import re

    def unframed(e):
        return re.sub(r"reading frame \d+: ", "", str(e.value))

    assert unframed(ahead) == unframed(direct) and str(p) in str(ahead.value)
    with pytest.raises(FileFormatError) as derived:  # derived brain mask: one pass too
        _fit_ahead(p, mask=False)
    assert derived.value.field == "data" and str(p) in str(derived.value)


@pytest.mark.parametrize("split", [True, False])
def test_the_curves_gathered_in_two_slabs_are_frame_by_mask(tmp_path, monkeypatch, split):
    from petbind.parametric import images

    # a mask with holes and empty planes, so the two slabs hold unequal parts
    data = _data(5)
    rng = np.random.default_rng(6)
    mask = rng.random(SHAPE) > 0.3
    mask[0] = False
    mask[3, :, 1] = False
    monkeypatch.setattr(images, "SPLIT_GATHER_VOXELS", 1 if split else 10**9)
    monkeypatch.setattr("petbind.compute.usable_cpus", lambda: 2)
    copied: list[tuple] = []
    real = images._copy_slab
    monkeypatch.setattr(images, "_copy_slab", lambda *a: (copied.append(a[3]), real(*a)))
    p = _write(tmp_path / "a", data)
    curves, ref = images._gather(load(p), mask, None)
    assert ref is None
    assert len(copied) == (2 * len(STARTS) if split else 0)
    expected = np.stack([data[..., t][mask] for t in range(len(STARTS))])
    np.testing.assert_array_equal(curves, expected)
    slabs = images._slabs(mask, 2)
    assert len(slabs) == 2 and slabs[0][2] == 0 and slabs[1][3] == mask.sum()
    assert slabs[0][3] == slabs[1][2] == mask[:slabs[0][1]].sum()


@pytest.mark.parametrize("order", ["F", "C"])
def test_the_reference_mean_read_at_its_places_is_the_boolean_masks(order):
    from petbind.parametric import images

    rng = np.random.default_rng(7)
    f = np.asarray(rng.uniform(0, 10, SHAPE).astype(np.float32), order=order)
    ref = rng.random(SHAPE) > 0.6
    f[ref.nonzero()[0][3], ref.nonzero()[1][3], ref.nonzero()[2][3]] = np.nan
    r = f[ref]
    expected = np.mean(r[np.isfinite(r)], dtype=np.float64)
    got = images._ref_mean(f, ref, images._f_index(ref))
    assert got == expected  # the same values summed in the same order
    assert np.isnan(images._ref_mean(np.full(SHAPE, np.nan, np.float32, order="F"), ref,
                                     images._f_index(ref)))
