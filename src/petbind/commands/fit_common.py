"""Helpers shared by ``petbind fit``'s reference and plasma branches.

:mod:`petbind.commands.fit` and :mod:`petbind.commands.fit_plasma` both import
from here, so neither imports the other at module level (no import cycle).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import typer

from petbind.errors import ConfigError


def parse_number_or(value: str, option: str, keyword: str, *, what: str, example: str
                    ) -> float | str:
    """A command-line value that is either ``keyword`` (any case) or a finite number.

    Parameters
    ----------
    value : str
        The text given on the command line.
    option : str
        The option's name (``--k2prime``), named in the error.
    keyword : str
        The word accepted instead of a number (``auto``, ``fit``).
    what : str
        What the number is, with its unit (``"minutes"``), for the error.
    example : str
        The fix shown in the error (``"e.g. --delay -0.1 or --delay fit"``).

    Returns
    -------
    float or str
        The number, or ``keyword`` itself.

    Raises
    ------
    ConfigError
        When ``value`` is neither (field: the option).
    """
    if value.strip().lower() == keyword:
        return keyword
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is None or not math.isfinite(number):
        raise ConfigError(f"{option} must be {what} or '{keyword}', got {value!r}",
                          field=option, fix=example)
    return number


def select_regions(regions: str, names: list[str], path: Path) -> list[str]:
    """The regions named in ``--regions A,B,...``, each checked against the table.

    Parameters
    ----------
    regions : str
        Comma-separated names (blanks around names are dropped).
    names : list of str
        The regions of the TAC table.
    path : Path
        The table, named in the error.

    Raises
    ------
    ConfigError
        When a name is not a region of the table (field ``--regions``).
    """
    targets = [r.strip() for r in regions.split(",") if r.strip()]
    missing = [r for r in targets if r not in names]
    if missing:
        raise ConfigError(f"regions {missing} are not in the table", path=path,
                          field="--regions", fix=f"use names from {', '.join(names)}")
    return targets


def refuse_overwrite(outputs: dict[str, Path | None], inputs: list[Path]) -> None:
    """Raise ConfigError when an output path (keyed by its option) is an input file."""
    given = {p.resolve() for p in inputs}
    for option, path in outputs.items():
        if path is not None and path.resolve() in given:
            raise ConfigError(f"{option} would overwrite the input {path.name}", path=path,
                              field=option, fix="write the results to another file")


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "region"


def _tsv_text(df: Any) -> str:
    return df.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g",
                     lineterminator="\n")


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out a matplotlib figure and write it as PNG (atomically, 110 dpi).

    petbind builds figures with :class:`matplotlib.figure.Figure`, not pyplot, so
    no backend is switched; a pyplot figure a caller passes is closed.
    """
    import sys

    from petbind.io.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt = sys.modules.get("matplotlib.pyplot")  # a caller's pyplot figure is closed
    if plt is not None and getattr(fig, "number", None) in plt.get_fignums():
        plt.close(fig)
    return path


def emit_table(df: Any, out: Path | None, sidecar: dict[str, Any]) -> None:
    """Print the results table, or write it to ``out`` with its JSON sidecar."""
    from petbind.io.atomic import write_json_atomic, write_text_atomic

    text = _tsv_text(df)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_text_atomic(out, text)
        write_json_atomic(out.with_suffix(".json"), sidecar)
        typer.echo(f"wrote {out} ({len(df)} regions, {int(df['valid'].sum())} valid)")


def warn_invalid(df: Any) -> None:
    """Name the regions without a valid fit on stderr."""
    n_bad = int((~df["valid"]).sum())
    if n_bad:
        bad = ", ".join(df.loc[~df["valid"], "region"].astype(str))
        typer.echo(f"warning: {n_bad} region(s) gave no valid fit: {bad}", err=True)
