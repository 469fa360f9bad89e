"""Provenance: what went into an output, so a rerun can trust or redo it.

Each scan's outputs are described by ``<stem>_provenance.json``: the SHA-256
of every input file, the settings that shape the outputs, the petbind
version, and the SHA-256 of every output written. It is written last, after
all outputs of the scan (each atomically), so its presence means the scan
finished; a rerun skips the scan only when inputs, settings, version and
every output still match.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from petbind import __version__
from petbind.errors import PetbindError
from petbind.io.atomic import write_json_atomic
from petbind.io.files import sha256_file
from petbind.io.tables import read_json

#: Bumped when the per-scan outputs change shape, so older outputs are redone.
SCAN_FORMAT = 1


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    return sha256_file(path, chunk)


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
