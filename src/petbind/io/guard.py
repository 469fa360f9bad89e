"""Outputs never overwrite inputs: not the file itself, nor its JSON sidecar.

Every command that writes files checks its planned outputs with
:func:`refuse_overwrite` before it writes anything: an output path that is
an input, the sidecar of an input, or whose own sidecar would land on an
input (``fit --out in/x_tacs.json`` beside ``in/x_tacs.tsv``) is refused.
Paths are compared after resolving links, and by inode when both exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from petbind.errors import ConfigError

PathLike = str | os.PathLike


def with_sidecars(path: PathLike) -> list[Path]:
    """``path`` and the JSON files that belong to it (BIDS sidecar, ``.json`` suffix)."""
    from petbind.io.tables import sidecar_path

    p = Path(path)
    out = [p, sidecar_path(p)]
    if p.suffix:
        out.append(p.with_suffix(".json"))
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwrite(outputs: Mapping[str, PathLike | Iterable[PathLike] | None],
                     inputs: Iterable[PathLike | None]) -> None:
    """Raise :class:`ConfigError` when an output (or its sidecar) is an input or its sidecar.

    Parameters
    ----------
    outputs : mapping option -> path, list of paths, or None
        Planned outputs keyed by the option that names them (``"--out"``).
    inputs : iterable of paths
        Files the command reads (``None`` entries are skipped).
    """
    ins = [q for i in inputs if i is not None for q in with_sidecars(i)]
    for option, value in outputs.items():
        if value is None:
            continue
        paths = [value] if isinstance(value, str | os.PathLike) else list(value)
        for out in paths:
            for o in with_sidecars(out):
                hit = next((i for i in ins if _same(o, i)), None)
                if hit is not None:
                    raise ConfigError(f"{option} would overwrite the input {hit}", path=out,
                                      field=option,
                                      fix="write the results to another file or folder")


def check_output_dir(path: PathLike, option: str) -> Path:
    """Refuse an output folder that exists as a file (or lies under one)."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            raise ConfigError(f"{q} is a file, not a folder", path=p, field=option,
                              fix="name a folder (new or existing) for the outputs")
        if q.exists():
            break
    return p
