"""``petbind init BIDS_DIR``: write a commented study config for a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def init(
    bids_dir: Annotated[Path, typer.Argument(help="BIDS-PET dataset root.")],
    out: Annotated[Path, typer.Option(
        "--out", help="The study config to write.")] = Path("study.toml"),
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an existing file.")] = False,
) -> None:
    """Inspect a dataset and write a study config with its own names, ready for `petbind run`.

    Tracers, conditions (from sub-*_sessions.tsv or the ses- labels) and the
    likely baseline, subjects, the segmentation under derivatives/ with its
    labels grouped into regions (left and right pooled), a cerebellar-cortex
    reference, models per tracer and the contrasts against baseline.
    """
    from petbind.commands.consoles import console, err_console
    from petbind.errors import PetbindError
    from petbind.io.atomic import write_text_atomic
    from petbind.study.init import config_text, survey

    if out.exists() and not force:
        raise PetbindError("the config file exists", path=out, field="--out",
                           fix="give another --out, or --force to replace it")
    root = bids_dir.resolve()
    where = Path(out).resolve()
    if where.is_relative_to(root) and not where.is_relative_to(root / "derivatives"):
        raise PetbindError("the config would be written into the input dataset", path=out,
                           field="--out", fix="write it outside the dataset, e.g. "
                           "--out study.toml in your analysis folder")
    sv = survey(bids_dir)
    text = config_text(sv)
    write_text_atomic(out, text)
    for n in sv.notes:
        err_console.print(f"note: {n}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {out}: {len(sv.tracers)} tracer(s) ({', '.join(sv.tracers)}), "
                  f"{len(sv.subjects)} subjects, conditions {', '.join(sv.conditions)} "
                  f"(baseline {sv.baseline}{', guessed' if sv.baseline_guessed else ''})"
                  + (f", segmentation {sv.segmentation}" if sv.segmentation else ""),
                  markup=False, highlight=False, soft_wrap=True)
    console.print(f"next: read it, then `petbind run {bids_dir} --config {out}`",
                  markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``petbind init`` to the CLI."""
    app.command("init")(init)
