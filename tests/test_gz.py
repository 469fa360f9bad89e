"""petbind.gz: the fast gzip path writes standard, reproducible gzip and reads it back;
broken streams fail with the standard library's exceptions."""

from __future__ import annotations

import gzip
import io
import zlib

import numpy as np
import pytest

from petbind import gz


def _payload() -> bytes:
    rng = np.random.default_rng(3)
    a = (1.0 + 0.3 * rng.standard_normal(200_000)).astype(np.float32)
    a[::7] = np.nan
    return a.tobytes()


def _write(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gz.open_write(buf) as f:
        f.write(data)
    return buf.getvalue()


def test_written_streams_are_standard_gzip_and_reproducible():
    data = _payload()
    a, b = _write(data), _write(data)
    assert a == b  # MTIME 0 and no file name: same bytes every time
    assert a[:2] == b"\x1f\x8b" and a[4:8] == b"\x00\x00\x00\x00"
    assert gzip.decompress(a) == data  # any reader accepts it
    assert len(a) < len(data)


def test_reader_returns_the_bytes_and_seeks_forward(tmp_path):
    data = _payload()
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(data, 6))
    with gz.open_read(p) as f:
        f.seek(1000)
        assert f.read(500) == data[1000:1500]
        assert f.read() == data[1500:]


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_broken_streams_raise_standard_exceptions(tmp_path, damage):
    good = gzip.compress(_payload(), 1)
    bad = good[: len(good) // 2] if damage == "truncate" else (
        good[:30] + bytes(200) + good[230:])
    p = tmp_path / "x.gz"
    p.write_bytes(bad)
    with pytest.raises((EOFError, OSError, zlib.error)), gz.open_read(p) as f:
        f.read()


def test_backend_is_reported():
    assert gz.BACKEND in ("isal", "zlib")


@pytest.mark.parametrize("damage", ["none", "truncated", "crc"])
def test_a_large_input_buffer_reads_the_same_bytes_and_fails_the_same_way(tmp_path, damage):
    data = _payload()
    raw = gzip.compress(data[:300_000], mtime=0) + gzip.compress(data[300_000:], mtime=0)
    if damage == "truncated":
        raw = raw[: len(raw) * 2 // 3]
    elif damage == "crc":
        raw = raw[:-8] + bytes([raw[-8] ^ 0xFF]) + raw[-7:]
    p = tmp_path / "x.gz"
    p.write_bytes(raw)

    def read_all(**kw):
        out = bytearray()
        with gz.open_read(p, **kw) as f:
            while b := f.read(77_777):
                out += b
        return bytes(out)

    if damage == "none":
        assert read_all(buffer_size=1 << 20) == read_all() == data
        return
    with pytest.raises((EOFError, zlib.error, gzip.BadGzipFile)) as small:
        read_all()
    with pytest.raises((EOFError, zlib.error, gzip.BadGzipFile)) as big:
        read_all(buffer_size=1 << 20)
    assert type(big.value) is type(small.value) and str(big.value) == str(small.value)


# --- members petbind writes: one per frame, found from their headers, inflated in parallel


@pytest.fixture
def one_frame_members(monkeypatch):
    """Frames of the small test images are each a member (as frames of 1 MiB and more are),
    read member by member (as files of PARALLEL_MIN bytes and more are)."""
    monkeypatch.setattr(gz, "MEMBER_MIN", 1)
    monkeypatch.setattr(gz, "PARALLEL_MIN", 0)


def _nifti_gz(tmp_path, shape=(6, 5, 4, 7), name="scan.nii.gz"):
    """A 4-D float32 image written by petbind (save_image) and its array."""
    from petbind.io.bids import save_image

    data = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    return save_image(tmp_path / name, data, np.eye(4)), data


def _members(raw: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, length, subfield) of each member, walked with the stdlib's inflater (an
    independent reading of RFC 1952: the member ends where zlib's says it does)."""
    out, off = [], 0
    while off < len(raw):
        assert raw[off:off + 4] == b"\x1f\x8b\x08\x04"  # FEXTRA only
        xlen = int.from_bytes(raw[off + 10:off + 12], "little")
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        d.decompress(raw[off:])
        assert d.eof
        n = len(raw) - off - len(d.unused_data)
        out.append((off, n, raw[off + 12:off + 12 + xlen]))
        off += n
    return out


def test_a_4d_image_is_one_member_per_frame_that_every_reader_reads(tmp_path,
                                                                   one_frame_members):
    import nibabel as nib
    import SimpleITK as sitk

    p, data = _nifti_gz(tmp_path)
    raw = p.read_bytes()
    members = _members(raw)
    frame = 6 * 5 * 4 * 4
    assert len(members) == 1 + 7  # the header, then each frame
    for off, n, extra in members:
        size = len(zlib.decompress(raw[off:off + n], 16 + zlib.MAX_WBITS))
        # subfield "PM", 8 bytes: the member's length and its inflated length
        assert extra == b"PM" + (8).to_bytes(2, "little") + n.to_bytes(4, "little") \
            + size.to_bytes(4, "little")
    assert [len(zlib.decompress(raw[o:o + n], 31)) for o, n, _ in members[1:]] == [frame] * 7
    assert gz.member_index(p) == [
        (o, n, len(zlib.decompress(raw[o:o + n], 31))) for o, n, _ in members]
    plain = gzip.decompress(raw)
    np.testing.assert_array_equal(
        np.frombuffer(plain[352:], np.float32).reshape(data.shape, order="F"), data)
    np.testing.assert_array_equal(np.asarray(nib.load(p).dataobj), data)
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))  # zlib's gzread: (t, z, y, x)
    np.testing.assert_array_equal(itk, data.transpose(3, 2, 1, 0))
    assert _nifti_gz(tmp_path, name="again.nii.gz")[0].read_bytes() == raw  # reproducible


def test_small_frames_are_grouped_and_other_data_is_cut_in_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(gz, "MEMBER_MIN", 3 * 6 * 5 * 4 * 4 - 1)  # three frames a member
    p, _ = _nifti_gz(tmp_path)
    sizes = [n for _, _, n in gz.member_index(p)]
    assert sizes == [352, 3 * 480, 3 * 480, 480]
    monkeypatch.setattr(gz, "MEMBER_MAX", 1000)
    payload = _payload()
    raw = _write(payload)
    assert [n for *_, n in _index_of(tmp_path, raw)] == [
        min(1000, len(payload) - k) for k in range(0, len(payload), 1000)]
    assert gzip.decompress(raw) == payload
    empty = _write(b"")
    assert gzip.decompress(empty) == b"" and _index_of(tmp_path, empty) == [(0, len(empty), 0)]


def _index_of(tmp_path, raw: bytes):
    p = tmp_path / "x.gz"
    p.write_bytes(raw)
    return gz.member_index(p)


def test_other_writers_files_are_not_indexed(tmp_path):
    p, _ = _nifti_gz(tmp_path)
    raw = p.read_bytes()
    assert _index_of(tmp_path, gzip.compress(_payload(), mtime=0)) is None  # one stream
    assert _index_of(tmp_path, raw[:-5]) is None  # truncated: read as one stream
    assert _index_of(tmp_path, raw + b"garbage") is None
    assert _index_of(tmp_path, raw + bytes(300)) == gz.member_index(p)  # zero padding
    assert _index_of(tmp_path, raw + gzip.compress(b"more")) is None


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_the_parallel_reader_reads_seeks_and_tells_like_a_stream(tmp_path, threads,
                                                                  monkeypatch,
                                                                  one_frame_members):
    monkeypatch.setattr(gz, "READ_AHEAD", 1)  # one member per thread ahead at most
    p, _ = _nifti_gz(tmp_path, shape=(20, 20, 10, 9))
    plain = gzip.decompress(p.read_bytes())
    frame = 20 * 20 * 10 * 4
    with gz._MemberReader(p, gz.member_index(p), threads) as f:
        assert f.read(348) == plain[:348] and f.tell() == 348
        f.seek(352)
        first = f.read(frame)
        assert first == plain[352:352 + frame]
        buf = bytearray(frame + 100)  # across a member boundary
        assert f.readinto(buf) == len(buf) and bytes(buf) == plain[352 + frame:][:len(buf)]
        assert f.read1() == plain[352 + 2 * frame + 100:352 + 3 * frame]  # rest of a member
        f.seek(1000)  # backward: from the first member again
        assert f.read(5000) == plain[1000:6000]
        f.seek(100, 1)
        assert f.read() == plain[6100:]
        assert f.read(1) == b"" and f.tell() == len(plain)


def test_members_are_inflated_by_the_workers_and_by_the_reader_when_they_lag(
        tmp_path, monkeypatch, one_frame_members):
    import threading
    import time

    p, _ = _nifti_gz(tmp_path, shape=(20, 20, 10, 12))
    plain = gzip.decompress(p.read_bytes())
    who: list[str] = []
    real = gz._inflate_member

    def inflate(raw, n):
        name = threading.current_thread().name
        if name.startswith("petbind-inflate"):
            time.sleep(0.05)  # a slow worker: the reader catches up and takes members
        who.append(name)
        return real(raw, n)

    monkeypatch.setattr(gz, "_inflate_member", inflate)
    with gz._MemberReader(p, gz.member_index(p), 1) as f:
        assert f.read() == plain
    assert threading.current_thread().name in who
    assert any(n.startswith("petbind-inflate") for n in who)
    assert len(who) == 1 + 12  # every member inflated once


def test_small_files_and_single_members_are_read_as_one_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(gz, "MEMBER_MIN", 1)
    p, _ = _nifti_gz(tmp_path, shape=(20, 20, 10, 3))  # 48 kB: under PARALLEL_MIN
    assert len(gz.member_index(p)) == 4 and gz.parallel_index(p) is None
    with gz.open_read(p) as f:
        assert not isinstance(f, gz._MemberReader)
        assert f.read() == gzip.decompress(p.read_bytes())
    monkeypatch.setattr(gz, "PARALLEL_MIN", 0)
    assert gz.parallel_index(p) == gz.member_index(p)
    from petbind.io.bids import save_image

    m = save_image(tmp_path / "map.nii.gz", np.zeros((20, 20, 10), np.float32), np.eye(4))
    assert len(gz.member_index(m)) == 1 and gz.parallel_index(m) is None


def test_open_read_uses_the_parallel_reader_and_returns_whole_frames(tmp_path,
                                                                     one_frame_members):
    p, _ = _nifti_gz(tmp_path, shape=(20, 20, 10, 4))
    plain = gzip.decompress(p.read_bytes())
    with gz.open_read(p) as f:
        assert isinstance(f, gz._MemberReader)
        f.read(352)
        frames = [f.read(16_000) for _ in range(4)]
        assert all(type(x) is bytes for x in frames) and b"".join(frames) == plain[352:]


@pytest.mark.parametrize("where", ["crc", "body"])
def test_a_damaged_member_fails_after_the_bytes_before_it(tmp_path, where, one_frame_members):
    p, _ = _nifti_gz(tmp_path, shape=(20, 20, 10, 5))
    raw = bytearray(p.read_bytes())
    plain = gzip.decompress(bytes(raw))
    off, n, _ = gz.member_index(p)[3]  # the third frame
    if where == "crc":
        raw[off + n - 8] ^= 0xFF
    else:
        raw[off + n // 2] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(gzip.BadGzipFile if where == "crc" else (zlib.error, gzip.BadGzipFile)):
        gzip.decompress(bytes(raw))  # the stdlib agrees the file is damaged
    good = 352 + 2 * 16_000  # the bytes before the damaged member
    got = bytearray()
    with pytest.raises(zlib.error), gz.open_read(p) as f:
        while b := f.read(7000):
            got += b
    assert good - 7000 < len(got) <= good and bytes(got) == plain[:len(got)]
    with gz.open_read(p) as f:
        assert f.read(good) == plain[:good]
        with pytest.raises(zlib.error):
            f.read(1)


def test_the_zlib_fallback_writes_and_reads_the_same_members(tmp_path, monkeypatch,
                                                            one_frame_members):
    p, _ = _nifti_gz(tmp_path)
    monkeypatch.setattr(gz, "_isal_zlib", None)
    q, _ = _nifti_gz(tmp_path, name="zlib.nii.gz")
    plain = gzip.decompress(p.read_bytes())
    assert gzip.decompress(q.read_bytes()) == plain
    assert [n for *_, n in gz.member_index(q)] == [n for *_, n in gz.member_index(p)]
    with gz.open_read(q) as f:
        assert f.read() == plain


def test_writing_survives_a_view_of_a_member_kept_alive(tmp_path, monkeypatch,
                                                         one_frame_members):
    # a dask worker's profiler keeps frames, and the memoryviews in them, alive: the
    # writer failed with "Existing exports of data: object cannot be re-sized"
    kept = []
    real = gz.member

    def member(data, level=gz.LEVEL):
        kept.append(data)
        return real(data, level)

    monkeypatch.setattr(gz, "member", member)
    p, data = _nifti_gz(tmp_path)
    assert len(kept) == 1 + data.shape[3]
    np.testing.assert_array_equal(
        np.frombuffer(gzip.decompress(p.read_bytes())[352:], np.float32).reshape(
            data.shape, order="F"), data)
