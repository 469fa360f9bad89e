"""Files of ``petbind power``: ``power.tsv``, ``power_n80.tsv``, ``power.json``, ``power.png``.

Also the power-curve figure, which the report reuses
(:mod:`petbind.report.power`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petbind.io.atomic import write_atomic, write_json_atomic, write_text_atomic
from petbind.stats.power import PowerResult, n_for_power


def _tsv(df: pd.DataFrame) -> str:
    return df.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g")


def power_figure(table: pd.DataFrame, model: dict[str, str] | None = None,
                 target: float = 0.8) -> Any:
    """Power vs number of subjects: one panel per tracer x contrast, one line per region.

    Parameters
    ----------
    table : DataFrame
        :func:`petbind.stats.power.summarise`'s table.
    model : dict of str to str, optional
        Model to draw per tracer (default: the first in the table).
    target : float
        Power drawn as a dashed line.

    Returns
    -------
    matplotlib Figure
        Error bars: Monte Carlo SE of the power.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    for tracer, g in table.groupby("tracer", sort=False):
        m = (model or {}).get(tracer, g["model"].iloc[0])
        for contrast, h in g[g["model"] == m].groupby("contrast", sort=False):
            panels.append((tracer, m, contrast, h))
    cols = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(3.4 * cols, 2.7 * rows), dpi=96)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.12, wspace=0.3, hspace=0.6)
    for i, (tracer, m, contrast, h) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for region, r in h.groupby("region", sort=False):
            r = r.sort_values("n")
            ax.errorbar(r["n"], r["power"], yerr=r["power_mc_se"], marker="o", ms=3,
                        lw=1.2, capsize=2, label=region)
        ax.axhline(target, ls="--", lw=0.8, color="0.4")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("subjects (n)", fontsize=8)
        ax.set_ylabel("power", fontsize=8)
        ax.set_title(f"{tracer} ({m})\n{contrast}", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6, ncol=2, frameon=False, loc="upper left")
    return fig


def write_power(result: PowerResult, out: str | Path) -> list[Path]:
    """Write the power table, the n for 80 % power, the settings and the figure.

    Returns
    -------
    list of Path
        The files written.
    """
    import io

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = result.table
    paths = [write_text_atomic(out / "power.tsv", _tsv(table))]
    n80 = n_for_power(table, 0.8)
    paths.append(write_text_atomic(out / "power_n80.tsv", _tsv(n80)))
    paths.append(write_json_atomic(out / "power.json", _jsonable(result.info)))
    fig = power_figure(table)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    paths.append(write_atomic(out / "power.png", lambda p: p.write_bytes(data)))
    return [Path(p) for p in paths]


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x
