"""Provenance: what went into an output, so a rerun can trust or redo it.

Each scan's outputs are described by ``<stem>_provenance.json``: the SHA-256
of every input file, the settings that shape the outputs, the petbind
version, and the SHA-256 of every output written. It is written last, after
all outputs of the scan (each atomically), so its presence means the scan
finished; a rerun skips the scan only when inputs, settings, version and
every output still match.

Every check hashes the files' bytes: a file's size and modification time are
never trusted across runs (``cp -p``, ``rsync -t``, ``touch -r`` and archive
tools restore an mtime, and filesystems with 1-2 s timestamps cannot tell two
writes in one second apart). Inside one check pass (:func:`hash_memo`, the
pipeline's pre-check of every subject and scan in its own process) a file
shared by many records (a subject's transforms, the template, a scan's
motion-corrected image, which is both a preprocessing output and a fit
input) is hashed once: its digest is reused only while its device, inode,
size, modification and status-change times (``st_ctime_ns``, which no tool
can set back) are all unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from petbind import __version__
from petbind.errors import PetbindError
from petbind.io.atomic import write_json_atomic
from petbind.io.files import sha256_file
from petbind.io.tables import read_json

#: Bumped when the per-scan outputs change shape, so older outputs are redone.
SCAN_FORMAT = 1


#: Digests of one check pass (:func:`hash_memo`), by file identity; None outside a pass.
_memo: dict[tuple[Any, ...], str] | None = None
_memo_lock = threading.Lock()


def _identity(path: str | os.PathLike) -> tuple[Any, ...]:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


@contextlib.contextmanager
def hash_memo() -> Iterator[dict[tuple[Any, ...], str]]:
    """Within this block :func:`sha256` hashes each unchanged file once.

    A digest is reused only for the same path with the same device, inode,
    size, modification time and status-change time (any write, rename or
    ``touch`` changes the last). The memo lives for the block only: nothing
    is trusted from one run to the next. Blocks do not nest (the inner one
    shares the outer memo).
    """
    global _memo
    if _memo is not None:
        yield _memo
        return
    _memo = {}
    try:
        yield _memo
    finally:
        _memo = None


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (once per unchanged file inside :func:`hash_memo`)."""
    memo = _memo
    if memo is None:
        return sha256_file(path, chunk)
    key = _identity(path)
    digest = memo.get(key)
    if digest is None:
        digest = sha256_file(path, chunk)
        if _identity(path) == key:  # unchanged while it was read
            with _memo_lock:
                memo[key] = digest
    return digest


def hash_files(paths: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    """``{name: sha256}`` of the files that exist (missing ones map to ``"missing"``)."""
    return {k: sha256(p) if Path(p).exists() else "missing" for k, p in sorted(paths.items())}


def settings_digest(settings: Mapping[str, Any]) -> str:
    """SHA-256 of a JSON-serialised settings mapping (keys sorted)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def scan_record(inputs: Mapping[str, str | os.PathLike], settings: Mapping[str, Any],
                outputs: Iterable[Path], out_dir: Path) -> dict[str, Any]:
    """The content of a scan's provenance file (no timestamps: reruns give the same bytes)."""
    return {
        "format": SCAN_FORMAT,
        "petbind_version": __version__,
        "inputs": {k: {"path": str(p), "sha256": sha256(p)} for k, p in sorted(inputs.items())},
        "settings": dict(settings),
        "settings_sha256": settings_digest(settings),
        "outputs": {p.relative_to(out_dir).as_posix(): sha256(p) for p in sorted(outputs)},
    }


def write_scan_record(path: Path, record: Mapping[str, Any]) -> Path:
    """Write the provenance file atomically."""
    return write_json_atomic(path, record)


def scan_is_current(path: Path, inputs: Mapping[str, str | os.PathLike],
                    settings: Mapping[str, Any], out_dir: Path) -> bool:
    """True when ``path`` records these inputs and settings and every output is intact."""
    if not path.exists():
        return False
    try:
        rec = read_json(path)
    except PetbindError:
        return False
    if rec.get("format") != SCAN_FORMAT or rec.get("petbind_version") != __version__:
        return False
    if rec.get("settings_sha256") != settings_digest(settings):
        return False
    rec_in = rec.get("inputs", {})
    if set(rec_in) != set(inputs):
        return False
    for k, p in inputs.items():
        if not Path(p).exists() or rec_in[k].get("sha256") != sha256(p):
            return False
    for rel, digest in rec.get("outputs", {}).items():
        f = out_dir / rel
        if not f.exists() or sha256(f) != digest:
            return False
    return bool(rec.get("outputs"))


def environment() -> dict[str, str]:
    """Versions of Python and the numerical libraries."""
    import numpy
    import pandas
    import scipy
    import statsmodels

    return {"petbind_version": __version__, "python": platform.python_version(),
            "numpy": numpy.__version__, "scipy": scipy.__version__,
            "pandas": pandas.__version__, "statsmodels": statsmodels.__version__}
