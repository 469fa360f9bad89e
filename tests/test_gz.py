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


# -- parallel inflate (rapidgzip) with ISA-L's bytes and errors
@pytest.fixture
def rapidgzip():
    return pytest.importorskip("rapidgzip")


def _big_payload() -> bytes:
    rng = np.random.default_rng(5)
    return (1.0 + 0.3 * rng.standard_normal(2_000_000)).astype(np.float32).tobytes()


def _damaged(data: bytes, how: str) -> bytes:
    good = gzip.compress(data, 1, mtime=0)
    if how == "none":
        return good
    if how == "truncate":
        return good[: int(len(good) * 0.8)]
    if how == "trailer":  # every data byte there, CRC-32 and ISIZE gone
        return good[:-8]
    if how == "crc":
        return good[:-8] + bytes([good[-8] ^ 0xFF]) + good[-7:]
    if how == "stored_flip":  # a bit flipped inside a stored block: only the CRC tells
        raw = gzip.compress(data, 0, mtime=0)
        k = len(raw) // 2
        return raw[:k] + bytes([raw[k] ^ 0x10]) + raw[k + 1:]
    if how == "corrupt":  # deflate data overwritten in the middle
        k = len(good) // 2
        return good[:k] + bytes(4000) + good[k + 4000:]
    if how == "beyond":
        return good + gzip.compress(b"12345678", mtime=0)
    if how == "padding":  # zero padding after the last member is allowed
        return good + bytes(1000)
    raise AssertionError(how)


def _read_all(f, step: int = 1_000_003) -> tuple[bytes, BaseException | None]:
    out = bytearray()
    try:
        while b := f.read(step):
            out += b
    except Exception as exc:  # compared below
        return bytes(out), exc
    return bytes(out), None


@pytest.mark.parametrize("how", ["none", "truncate", "trailer", "crc", "stored_flip",
                                 "corrupt", "beyond", "padding"])
def test_parallel_inflate_gives_isal_bytes_and_errors(tmp_path, monkeypatch, how, capfd,
                                                      rapidgzip):
    monkeypatch.setattr(gz, "PARALLEL_MIN_BYTES", 0)
    data = _big_payload()
    p = tmp_path / "x.gz"
    p.write_bytes(_damaged(data, how))
    with gz.open_read(p, buffer_size=1 << 20) as f:
        want, want_exc = _read_all(f)
    with gz.open_read_parallel(p, size=len(data), buffer_size=1 << 20, threads=2) as f:
        # rapidgzip only where the trailer says one intact member of the expected size
        parallel = isinstance(f, gz._ParallelReader)
        got, got_exc = _read_all(f)
        fell_back = parallel and not f._parallel
    assert parallel == (how in ("none", "crc", "stored_flip", "corrupt"))
    # rapidgzip met the damage and ISA-L took over; an intact file stays parallel
    assert fell_back == (how in ("crc", "stored_flip", "corrupt"))
    assert got == want
    assert type(got_exc) is type(want_exc) and str(got_exc) == str(want_exc)
    if how in ("none", "beyond", "padding"):
        assert want_exc is None and want[:len(data)] == data
    else:
        assert want_exc is not None
    assert capfd.readouterr().err == ""  # nothing printed beside the error (the CLI's one line)


def test_isize_matches_reads_the_trailer(tmp_path):
    data = _payload()
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(data, mtime=0))
    assert gz.isize_matches(p, len(data))
    assert gz.isize_matches(p, len(data) + 2**32)  # ISIZE is the length modulo 2**32
    assert not gz.isize_matches(p, len(data) + 1)
    p.write_bytes(b"\x1f\x8b")
    assert not gz.isize_matches(p, 0)
    assert not gz.isize_matches(tmp_path / "none.gz", 0)


def test_small_streams_and_one_thread_use_isal_alone(tmp_path, monkeypatch, rapidgzip):
    data = _payload()
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(data, mtime=0))
    with gz.open_read_parallel(p, size=len(data), buffer_size=1 << 20, threads=2) as f:
        assert not isinstance(f, gz._ParallelReader)  # below PARALLEL_MIN_BYTES
        assert f.read() == data
    assert gz.PARALLEL_MIN_BYTES > len(data)
    monkeypatch.setattr(gz, "PARALLEL_MIN_BYTES", 0)
    with gz.open_read_parallel(p, size=len(data), buffer_size=1 << 20, threads=1) as f:
        assert not isinstance(f, gz._ParallelReader)
    with gz.open_read_parallel(p, size=len(data), buffer_size=1 << 20, threads=2) as f:
        assert isinstance(f, gz._ParallelReader) and f.read() == data
