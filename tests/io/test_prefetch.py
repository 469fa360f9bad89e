"""A file read ahead in a background thread (petbind.io.prefetch) reads as the file itself."""

from __future__ import annotations

import gzip
import io
import time

import numpy as np
import pytest

from petbind.gz import open_read
from petbind.io import prefetch


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    # chunks far smaller than the reads below, so reads cross chunk boundaries
    monkeypatch.setattr(prefetch, "CHUNK", 1000)
    yield
    prefetch.cancel_all()


def _payload(n: int = 50_000) -> bytes:
    rng = np.random.default_rng(0)
    return rng.standard_normal(n // 4).astype(np.float32).tobytes()


@pytest.mark.parametrize("name", ["scan.nii", "scan.nii.gz"])
def test_reads_seeks_and_tells_give_the_files_bytes(tmp_path, name):
    raw = _payload()
    p = tmp_path / name
    p.write_bytes(gzip.compress(raw, mtime=0) if name.endswith(".gz") else raw)
    assert prefetch.start(p)
    assert not prefetch.start(p)  # one prefetch per file
    s = prefetch.take(p)
    assert s is not None and prefetch.take(p) is None  # taken once
    with s:
        assert s.read(352) == raw[:352] and s.tell() == 352
        assert s.seek(1000) == 1000  # forward
        buf = bytearray(4321)
        assert s.readinto(buf) == 4321 and bytes(buf) == raw[1000:5321]
        assert s.seek(10, 1) == 5331
        with pytest.raises(io.UnsupportedOperation):
            s.seek(0)
        assert s.read(7777) == raw[5331:13108]
        assert s.read() == raw[13108:]
        assert s.read(1) == b"" and s.tell() == len(raw)


def test_a_damaged_stream_raises_the_readers_error_after_the_bytes_before_it(tmp_path):
    raw = _payload(200_000)
    p = tmp_path / "scan.nii.gz"
    z = gzip.compress(raw, mtime=0)
    p.write_bytes(z[: len(z) * 3 // 4])  # truncated
    with open_read(p) as f, pytest.raises(EOFError) as direct:
        while f.read(10_000):
            pass
    prefetch.start(p)
    got = bytearray()
    with prefetch.take(p) as s, pytest.raises(EOFError) as ahead:
        while True:
            b = s.read(10_000)
            if not b:
                break
            got += b
    assert type(ahead.value) is type(direct.value)
    assert len(got) > 0 and bytes(got) == raw[:len(got)]


def test_a_file_changed_after_the_start_is_not_taken(tmp_path):
    p = tmp_path / "scan.nii"
    p.write_bytes(_payload())
    prefetch.start(p)
    p.write_bytes(_payload(60_000))
    assert prefetch.take(p) is None


def test_a_missing_file_starts_nothing_and_cancel_all_drops_the_rest(tmp_path):
    assert not prefetch.start(tmp_path / "none.nii.gz")
    p = tmp_path / "scan.nii"
    p.write_bytes(_payload())
    assert prefetch.start(p) and prefetch.pending() == [p]
    prefetch.cancel_all()
    assert prefetch.pending() == [] and prefetch.take(p) is None


def test_the_thread_reads_at_most_max_ahead_before_the_consumer(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "MAX_AHEAD", 5000)
    raw = _payload(100_000)
    p = tmp_path / "scan.nii"
    p.write_bytes(raw)
    prefetch.start(p)
    pre = prefetch._PENDING[str(p)]
    time.sleep(0.3)  # the thread stops once 5000 bytes wait
    assert pre.ahead <= 5000 and not pre.done
    with prefetch.take(p) as s:
        assert s.read() == raw


@pytest.mark.parametrize("name", ["scan.nii", "scan.nii.gz"])
def test_a_4d_nifti_is_read_ahead_one_frame_per_chunk_with_the_same_bytes(tmp_path, name):
    import nibabel as nib

    data = np.random.default_rng(1).standard_normal((5, 4, 3, 6)).astype(np.float32)
    p = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), p)
    raw = gzip.decompress(p.read_bytes()) if name.endswith(".gz") else p.read_bytes()
    assert prefetch._frame_layout(raw[:348]) == (352, 5 * 4 * 3 * 4)
    assert prefetch._frame_layout(b"x" * 348) == (348, prefetch.CHUNK)  # not NIfTI-1
    prefetch.start(p)
    with prefetch.take(p) as s:
        s.seek(352)
        frames = [s.read(5 * 4 * 3 * 4) for _ in range(6)]
        assert s.read(1) == b""
    assert b"".join(frames) == raw[352:]
    for t, f in enumerate(frames):
        np.testing.assert_array_equal(
            np.frombuffer(f, np.float32).reshape((5, 4, 3), order="F"), data[..., t])


def test_a_file_petbind_wrote_is_read_ahead_one_member_per_frame(tmp_path, monkeypatch):
    import threading

    from petbind import gz
    from petbind.io.bids import save_image

    monkeypatch.setattr(gz, "MEMBER_MIN", 1)  # one member per frame
    monkeypatch.setattr(gz, "PARALLEL_MIN", 0)
    data = np.random.default_rng(2).standard_normal((30, 20, 10, 8)).astype(np.float32)
    p = save_image(tmp_path / "scan.nii.gz", data, np.eye(4))
    raw = gzip.decompress(p.read_bytes())
    names = set()
    real = gz._inflate_member

    def inflate(raw_member, n):
        names.add(threading.current_thread().name)
        return real(raw_member, n)

    monkeypatch.setattr(gz, "_inflate_member", inflate)
    prefetch.start(p)
    with prefetch.take(p) as s:
        head = s.read(352)
        frames = [s.read(30 * 20 * 10 * 4) for _ in range(8)]
        assert s.read(1) == b""
    assert head + b"".join(frames) == raw
    assert names == {"petbind-prefetch"}  # the read-ahead thread inflates, no other
