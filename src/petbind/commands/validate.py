"""``petbind validate PATH``: list every problem of a BIDS-PET dataset or one file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def validate(
    path: Annotated[Path, typer.Argument(help="A BIDS dataset folder, a DICOM PET series "
                                         "folder or one file (_pet.nii.gz, _tacs.tsv, .tac, "
                                         ".dft, _blood.tsv, .v, .json).")],
    no_data: Annotated[bool, typer.Option(
        "--no-data", help="Check headers and sidecars only; do not read the voxel data.")]
    = False,
) -> None:
    """Check timing, decay, units and files; exit 0 when clean, 1 when any error.

    Prints a table on a terminal, tab-separated lines (severity, file, field,
    message, fix) when the output is piped.
    """
    from rich.table import Table

    from petbind.commands.consoles import console
    from petbind.io.validate import validate_path

    problems = validate_path(path, check_data=not no_data)
    n_err = sum(q.severity == "error" for q in problems)
    n_warn = len(problems) - n_err
    root = path if path.is_dir() else path.parent
    rows = []
    for q in problems:
        f = q.file or ""
        try:
            f = str(Path(f).relative_to(root)) if f else ""
        except ValueError:
            pass
        rows.append((q.severity, f, q.field or "", q.message, q.fix))
    if rows and console.is_terminal:
        table = Table(title=f"petbind validate {path}")
        table.add_column("severity", no_wrap=True)
        table.add_column("file", overflow="fold")
        table.add_column("field", no_wrap=True)
        table.add_column("message", overflow="fold", ratio=3)
        table.add_column("fix", overflow="fold", ratio=2)
        for sev, *rest in rows:
            style = "bold red" if sev == "error" else "yellow"
            table.add_row(f"[{style}]{sev}[/]", *rest)
        console.print(table)
    elif rows:  # piped: one tab-separated line per problem, easy to grep
        typer.echo("severity\tfile\tfield\tmessage\tfix")
        for row in rows:
            typer.echo("\t".join(row))
    console.print(f"{n_err} error(s), {n_warn} warning(s)", highlight=False)
    if n_err:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``petbind validate`` to the CLI."""
    app.command("validate")(validate)
