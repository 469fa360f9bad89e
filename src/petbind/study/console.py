"""Console output of a study run: the progress bars and the tables `petbind run` / `demo` print."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def progress_bar(enabled: bool, console: Any) -> Any:
    """The rich progress display of a run (stages, scans, simulation); off when not ``enabled``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, disable=not enabled,
                    transient=False)


def _num(x: Any, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, fmt)


def _p(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def summary_tables(rows: Sequence[Mapping[str, Any]], *,
                   regions: Sequence[str] | None = None) -> list[Any]:
    """One rich Table per contrast: tracer, region, % change [95 % CI], p, Holm p, truth.

    Parameters
    ----------
    rows : sequence of mappings
        ``roi_stats.tsv`` rows (``summary.json`` ``highlights``).
    regions : sequence of str, optional
        Only these regions, in this order (default: all, as given).

    Returns
    -------
    list of rich.table.Table
    """
    from rich import box
    from rich.table import Table

    has_truth = any(r.get("pct_change_true") is not None for r in rows)
    order = {r: i for i, r in enumerate(regions or [])}
    contrasts = list(dict.fromkeys(r["contrast"] for r in rows))
    tables = []
    for c in contrasts:
        sel = [r for r in rows if r["contrast"] == c and (regions is None or r["region"] in order)]
        sel.sort(key=lambda r: (r["tracer"], order.get(r["region"], 0)))
        if not sel:
            continue
        unit = "% points" if sel[0].get("kind") == "interaction" else "% change"
        models = ", ".join(sorted({str(r["model"]) for r in sel}))
        ns = "/".join(str(n) for n in sorted({int(r.get("n", 0)) for r in sel}))
        table = Table(title=f"{c}: {unit} in BP_ND ({models}, n = {ns})",
                      title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("tracer", overflow="fold")
        table.add_column("region", overflow="fold")
        for name in (f"{unit} [95% CI]", "p", "p Holm"):
            table.add_column(name, justify="right", no_wrap=True)
        if has_truth:
            table.add_column("truth", justify="right", no_wrap=True)
        for r in sel:
            pct = (f"{_num(r.get('pct_change'), '+.1f')} [{_num(r.get('pct_ci_low'), '+.1f')}, "
                   f"{_num(r.get('pct_ci_high'), '+.1f')}]")
            cells = [r["tracer"], r["region"], pct, _p(r.get("p")), _p(r.get("p_holm"))]
            if has_truth:
                cells.append(_num(r.get("pct_change_true"), "+.1f"))
            table.add_row(*cells)
        tables.append(table)
    return tables
