"""``petbind report``: the study report, one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to ``app``."""

    @app.command("report")
    def report(
        outdir: Annotated[Path, typer.Argument(
            help="Output folder of `petbind run` / `petbind demo` (the one holding group/ "
            "and sub-*/); a `petbind demo --out DIR` folder also works.")],
    ) -> None:
        """Write OUTDIR/report.html: summary, data quality, fits, group results,
        voxelwise maps, power, methods and provenance, readable offline."""
        from petbind.commands.consoles import console
        from petbind.report import build_report

        path = build_report(outdir)
        size_mb = path.stat().st_size / 1e6
        console.print(f"report: {path} ({size_mb:.1f} MB)", highlight=False, soft_wrap=True)
