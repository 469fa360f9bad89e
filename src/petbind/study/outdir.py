"""One output folder, one run, one config: the lock, the sweep and the clean-up.

``petbind run`` (:func:`petbind.study.pipeline.run_study`) calls

- :func:`lock_output` first: an advisory lock (``fcntl.flock``) on
  ``OUT/.petbind.lock``, held for the whole run, so that a second run on the
  same folder fails at once with a message naming the holder (pid, host,
  start time) instead of doing all the work again and mixing its outputs
  with the first one's. The lock is released by the kernel when the holder
  exits, however it exits; the file stays.
- :func:`sweep_temporaries` next: temporary files of killed runs
  (:func:`petbind.io.atomic.is_temporary` names) are removed.
- :func:`remove_stale_outputs` at the end: files of earlier runs that the
  current config does not produce (a model dropped, a tracer removed, voxel
  statistics switched off) are removed, and their names recorded in
  ``group/provenance.json`` (``removed_outputs``), so that the folder and
  the report show only what the current config produced.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from petbind.errors import PetbindError
from petbind.io.atomic import is_temporary
from petbind.io.tables import read_json

#: The lock file in the output folder (hidden: readers and validate skip it).
LOCK_NAME = ".petbind.lock"
#: Folders of the output root whose files the run owns (preprocess/ is a cache of its own).
OWNED_TOP = ("group",)


@contextlib.contextmanager
def lock_output(out: Path, *, command: str = "petbind run") -> Iterator[dict[str, Any]]:
    """Hold an exclusive advisory lock on ``out`` for the ``with`` block.

    Raises
    ------
    PetbindError
        Another process holds the lock (field ``--out``); the message names its
        pid, host and start time.
    """
    import fcntl

    from petbind.io.guard import check_output_dir

    check_output_dir(out, "--out")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise PetbindError(
                f"another petbind run is writing to this output folder ({holder})",
                path=out, field="--out",
                fix="wait for that run to finish, or give this one another --out folder"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield info
        os.ftruncate(fd, 0)  # done: no holder (a killed run's note is overwritten next time)
    finally:
        os.close(fd)  # closing releases the flock
        if created and {p.name for p in out.iterdir()} <= {LOCK_NAME}:
            # a run that failed before writing anything leaves no folder behind (an
            # unknown non-empty folder under derivatives/ would later be taken for input)
            with contextlib.suppress(OSError):
                path.unlink()
                out.rmdir()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}, "
            f"{info.get('command', 'petbind')}")


def sweep_temporaries(out: Path) -> list[Path]:
    """Remove temporary files of killed runs under ``out``; return what was removed.

    Call only while holding :func:`lock_output` (no other run can be writing).
    """
    removed = []
    for folder, _dirs, files in os.walk(out):
        for name in files:
            if is_temporary(name):
                p = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def _recorded_outputs(prov: Path, out: Path) -> set[Path]:
    try:
        rec = read_json(prov)
    except PetbindError:
        return set()
    return {out / rel for rel in rec.get("outputs", {})}


#: Files modified less than this many seconds before the run started count as this run's
#: (file-system time stamps can be coarse).
MTIME_SLACK_S = 2.0


def remove_stale_outputs(out: Path, scans: Iterable[Any], keep: Iterable[Path],
                         *, config_changed: bool, started: float | None = None) -> list[str]:
    """Delete earlier runs' outputs that the current run did not produce.

    Parameters
    ----------
    out : Path
        The output root.
    scans : iterable of Scan
        The current run's scans (``rel_dir``, ``stem``).
    keep : iterable of Path
        Study-level files of this run (``group/...``), besides the scans' own;
        their JSON sidecars are kept with them.
    config_changed : bool
        The config differs from the folder's last one: a ``report.html`` at
        the root was built from the old outputs and is removed too.
    started : float, optional
        When the run started (epoch seconds). A file written since then
        (modification time after ``started - MTIME_SLACK_S``) is this run's
        and never removed, even when no list names it (an output another
        step added); files older than the run and listed nowhere are stale.

    Returns
    -------
    list of str
        Removed files, relative to ``out`` (for ``provenance.json``).

    Notes
    -----
    Only petbind's own files are candidates: in a current scan's folder,
    files named ``<stem>_*`` not listed in its ``<stem>_provenance.json``;
    files listed in the provenance of a scan that is no longer in the study
    (and that provenance); every file under ``group/`` not in ``keep``.
    Hidden files and ``preprocess/`` (a cache of its own) are never touched.
    """
    from petbind.io.guard import with_sidecars

    out = Path(out)
    keep_set = {q.resolve() for p in keep for q in with_sidecars(p)}
    stale: set[Path] = set()
    current = {}
    by_folder: dict[Path, dict[str, set[Path]]] = {}
    for s in scans:
        folder = out / s.rel_dir
        prov = folder / f"{s.stem}_provenance.json"
        current[prov.resolve()] = s
        listed = {p.resolve() for p in _recorded_outputs(prov, out)} | {prov.resolve()}
        by_folder.setdefault(folder, {})[s.stem] = listed
    for folder, stems in by_folder.items():
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            # the longest stem owns the file (sub-01_trc-X_run-2_* is not sub-01_trc-X's)
            owners = [st for st in stems if f.name.startswith(f"{st}_")]
            if f.is_file() and owners and f.resolve() not in stems[max(owners, key=len)]:
                stale.add(f)
    for prov in out.rglob("*_provenance.json"):
        rel = prov.relative_to(out)
        if rel.parts[0] in ("preprocess", *OWNED_TOP) or prov.resolve() in current:
            continue
        stale |= {p for p in _recorded_outputs(prov, out) if p.is_file()} | {prov}
    for top in OWNED_TOP:
        d = out / top
        if d.is_dir():
            stale |= {f for f in d.rglob("*") if f.is_file() and f.resolve() not in keep_set}
    if config_changed and (out / "report.html").is_file():
        stale.add(out / "report.html")
    removed = []
    for f in sorted(stale):
        if any(part.startswith(".") for part in f.relative_to(out).parts):
            continue
        if started is not None and f.exists() and f.stat().st_mtime > started - MTIME_SLACK_S:
            continue  # written by this run
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
            removed.append(f.relative_to(out).as_posix())
    for top in OWNED_TOP:  # empty folders left behind (group/voxel when switched off)
        d = out / top
        if d.is_dir():
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
    return removed


def previous_config_digest(out: Path) -> str | None:
    """``config_sha256`` of the folder's last completed run (``group/provenance.json``)."""
    try:
        return read_json(out / "group" / "provenance.json").get("config_sha256")
    except PetbindError:
        return None
