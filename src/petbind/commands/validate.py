"""``petbind validate PATH``: list every problem of a BIDS-PET dataset or one file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def validate(
    path: Annotated[Path, typer.Argument(help="A BIDS dataset folder or one file "
                                         "(_pet.nii.gz, _tacs.tsv, .tac, .dft, _blood.tsv, "
                                         ".v, .json).")],
    no_data: Annotated[bool, typer.Option(
        "--no-data", help="Check headers and sidecars only; do not read the voxel data.")]
    = False,
) -> None:
    """Check timing, decay, units and files; exit 0 when clean, 1 when any error."""
    from rich.table import Table

    from petbind.cli import console
    from petbind.io.validate import validate_path

    problems = validate_path(path, check_data=not no_data)
    n_err = sum(q.severity == "error" for q in problems)
    n_warn = len(problems) - n_err
    if problems:
        table = Table(title=f"petbind validate {path}", show_lines=False)
        for col in ("severity", "file", "field", "message", "fix"):
            table.add_column(col, overflow="fold")
        root = path if path.is_dir() else path.parent
        for q in problems:
            f = q.file or ""
            try:
                f = str(Path(f).relative_to(root)) if f else ""
            except ValueError:
                pass
            style = "bold red" if q.severity == "error" else "yellow"
            table.add_row(f"[{style}]{q.severity}[/]", f, q.field or "", q.message, q.fix)
        console.print(table)
    console.print(f"{n_err} error(s), {n_warn} warning(s)", highlight=False)
    if n_err:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``petbind validate`` to the CLI."""
    app.command("validate")(validate)
