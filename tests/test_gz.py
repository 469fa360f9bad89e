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
