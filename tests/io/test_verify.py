"""Images are verified as read: gzip CRC and length, voxel type, dimensions (issue 17)."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest

from petbind.errors import FileFormatError
from petbind.io.bids import load_pet
from petbind.io.validate import validate_path
from petbind.io.verify import check_dynamic_shape, verify_gzip

N = 5
STARTS = [0.0, 60.0, 120.0, 180.0, 240.0]
DURS = [60.0] * N


def _stored_gzip_pet(tmp, fx, value=2.0):
    """A PET image gzip-compressed with level 0 (stored blocks: every data byte visible)."""
    p = fx.write_pet(tmp / "sub-01_pet.nii.gz", np.full(fx.SHAPE + (N,), value),
                     fx.pet_sidecar(STARTS, DURS))
    raw = gzip.decompress(p.read_bytes())
    assert len(raw) < 65536
    # RFC 1952 member: header (no name, MTIME 0), one final stored deflate block
    # (RFC 1951 3.2.4: BFINAL=1, BTYPE=00, LEN, NLEN), CRC-32 and ISIZE
    block = b"\x01" + struct.pack("<HH", len(raw), 0xFFFF ^ len(raw)) + raw
    trailer = struct.pack("<II", zlib.crc32(raw), len(raw))
    p.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + block + trailer)
    return p, len(raw)


def _flip_data_byte(p):
    """Turn the first voxel's 2.0 into 4.0 inside the stored block; header and trailer kept.

    A level-0 gzip member holds the raw bytes in a stored deflate block. float32
    2.0 is 00 00 00 40 little-endian, 4.0 is 00 00 80 40: a silently wrong number
    to a lazy reader, which never reaches the CRC.
    """
    b = bytearray(p.read_bytes())
    off = int(nib.load(str(p)).dataobj.offset)
    idx = 10 + 5 + off
    assert bytes(b[idx:idx + 4]) == np.float32(2.0).tobytes()
    b[idx + 2] ^= 0x80
    p.write_bytes(bytes(b))


def test_gzip_crc_error_in_data_fails_load_pet_and_validate(tmp_path, fx):
    p, _ = _stored_gzip_pet(tmp_path, fx)
    _flip_data_byte(p)
    with pytest.raises(FileFormatError) as exc:
        img = load_pet(p)
        # before the fix this read returned 4.0 for the first voxel, no error
        img.voxel_curves(np.ones(img.spatial_shape, bool))
    assert exc.value.field == "data" and str(p) in str(exc.value)
    problems = validate_path(p)
    assert any(q.severity == "error" and q.field == "data" for q in problems)


def test_intact_stored_gzip_reads_and_verifies(tmp_path, fx):
    p, n_raw = _stored_gzip_pet(tmp_path, fx)
    img = load_pet(p)
    assert np.allclose(img.voxel_curves(np.ones(img.spatial_shape, bool)), 2.0)
    assert verify_gzip(p) == n_raw


def test_multi_member_gzip_is_read_whole(tmp_path, fx):
    p, n_raw = _stored_gzip_pet(tmp_path, fx)
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:1000], mtime=0) + gzip.compress(raw[1000:], mtime=0))
    assert verify_gzip(p, expected_size=n_raw) == n_raw


def test_rgb_image_is_refused(tmp_path, fx):
    rgb = np.zeros(fx.SHAPE + (N,), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    p = tmp_path / "sub-01_pet.nii.gz"
    img = nib.Nifti1Image(rgb, np.eye(4))
    nib.save(img, str(p))
    (tmp_path / "sub-01_pet.json").write_text(
        json.dumps(fx.pet_sidecar(STARTS, DURS)))
    with pytest.raises(FileFormatError) as exc:
        load_pet(p)
    assert exc.value.field == "datatype" and "RGB" in exc.value.message
    assert any(q.field == "datatype" for q in validate_path(p))


def test_zero_slice_image_is_refused(tmp_path, fx):
    p = tmp_path / "sub-01_pet.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 0, N), np.float32), np.eye(4)), str(p))
    (tmp_path / "sub-01_pet.json").write_text(
        json.dumps(fx.pet_sidecar(STARTS, DURS)))
    with pytest.raises(FileFormatError) as exc:
        load_pet(p)
    assert exc.value.field == "dim" and "slices" in exc.value.message
    assert any(q.severity == "error" and q.field == "dim" for q in validate_path(p))


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4, 3, 2), (4, 0, 4), (4, 4, 4, 0)])
def test_dynamic_shape_needs_3d_or_4d_without_empty_axis(shape):
    with pytest.raises(FileFormatError):
        check_dynamic_shape(shape, "x.nii")
    assert check_dynamic_shape((4, 4, 4, 3), "x.nii") == 3


@pytest.mark.parametrize("damage", ["none", "crc", "truncated", "garbage"])
def test_a_file_petbind_wrote_is_verified_member_by_member(tmp_path, monkeypatch, damage):
    """A scan petbind wrote (one gzip member per frame, inflated on several threads) gets
    the same checks as a one-stream file: every member's CRC-32 and length, the size the
    header needs; a damaged one fails naming the file."""
    import petbind.gz
    from petbind.io.bids import save_image

    monkeypatch.setattr(petbind.gz, "MEMBER_MIN", 1)
    monkeypatch.setattr(petbind.gz, "PARALLEL_MIN", 0)  # read member by member
    data = np.random.default_rng(4).standard_normal((8, 7, 6, N)).astype(np.float32)
    p = save_image(tmp_path / "sub-01_pet.nii.gz", data, np.eye(4))
    index = petbind.gz.member_index(p)
    assert len(index) == 1 + N
    raw = bytearray(p.read_bytes())
    size = 352 + data.nbytes
    if damage == "crc":
        off, n, _ = index[3]
        raw[off + n - 6] ^= 0x01  # a CRC-32 byte of the third frame
    elif damage == "truncated":
        raw = raw[:-100]
    elif damage == "garbage":
        raw += b"not gzip"
    p.write_bytes(bytes(raw))
    if damage == "none":
        assert verify_gzip(p, expected_size=size) == size
        return
    with pytest.raises(FileFormatError) as exc:
        verify_gzip(p, expected_size=size)
    assert exc.value.field == "data" and str(p) in str(exc.value)
