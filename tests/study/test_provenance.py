"""Provenance records: a file's digest is always of its bytes; inside one check pass
(hash_memo) an unchanged file is hashed once, a changed one again."""

from __future__ import annotations

import hashlib
import os
import time

import petbind.study.provenance as prov


def _count_hashes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = prov.sha256_file

    def counting(path, chunk=1 << 20):
        calls.append(os.fspath(path))
        return real(path, chunk)

    monkeypatch.setattr(prov, "sha256_file", counting)
    return calls


def _same_size_same_mtime_edit(path) -> None:
    """Change one byte in place, then set the modification time back (as cp -p would)."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    time.sleep(0.05)  # past the filesystem's timestamp tick
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns


def test_sha256_is_the_files_sha256(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"petbind" * 1000)
    assert prov.sha256(f) == hashlib.sha256(b"petbind" * 1000).hexdigest()


def test_outside_a_pass_every_call_reads_the_bytes_so_a_same_size_same_mtime_edit_shows(
        tmp_path, monkeypatch):
    calls = _count_hashes(monkeypatch)
    f = tmp_path / "pet.json"
    f.write_bytes(b'{"a": 1}\n')
    before = prov.sha256(f)
    _same_size_same_mtime_edit(f)
    assert prov.sha256(f) != before
    assert prov.sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    assert len(calls) == 3


def test_inside_a_pass_an_unchanged_file_is_hashed_once(tmp_path, monkeypatch):
    calls = _count_hashes(monkeypatch)
    f = tmp_path / "xfm.h5"
    f.write_bytes(os.urandom(4096))
    with prov.hash_memo():
        digests = {prov.sha256(f) for _ in range(5)}
        with prov.hash_memo():  # nested: the same memo
            digests.add(prov.sha256(f))
    assert digests == {hashlib.sha256(f.read_bytes()).hexdigest()}
    assert calls == [os.fspath(f)]
    prov.sha256(f)  # the pass is over: hashed again
    assert len(calls) == 2


def test_inside_a_pass_a_file_changed_in_place_is_hashed_again(tmp_path, monkeypatch):
    calls = _count_hashes(monkeypatch)
    f = tmp_path / "pet.json"
    f.write_bytes(b'{"a": 1}\n')
    with prov.hash_memo():
        first = prov.sha256(f)
        _same_size_same_mtime_edit(f)  # the status-change time still moves
        second = prov.sha256(f)
        f.write_bytes(b'{"a": 22}\n')  # another size
        third = prov.sha256(f)
    assert len({first, second, third}) == 3
    assert third == hashlib.sha256(b'{"a": 22}\n').hexdigest()
    assert len(calls) == 3


def test_scan_is_current_notices_an_input_edited_without_changing_size_or_mtime(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pet = tmp_path / "pet.json"
    pet.write_bytes(b'{"TracerName": "DASB"}\n')
    result = out / "fits.tsv"
    result.write_text("region\tbp\nNAcc\t1.0\n")
    record = out / "prov.json"
    settings = {"model": "srtm"}
    prov.write_scan_record(record, prov.scan_record({"pet_json": pet}, settings, [result], out))
    assert prov.scan_is_current(record, {"pet_json": pet}, settings, out)
    with prov.hash_memo():
        assert prov.scan_is_current(record, {"pet_json": pet}, settings, out)
    _same_size_same_mtime_edit(pet)
    assert not prov.scan_is_current(record, {"pet_json": pet}, settings, out)
    with prov.hash_memo():
        assert not prov.scan_is_current(record, {"pet_json": pet}, settings, out)
