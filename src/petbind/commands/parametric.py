"""``petbind parametric``: voxelwise BP_ND (and other parameter) maps of one PET image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petbind.compute import SCHEDULER_HELP
from petbind.errors import ConfigError
from petbind.models.catalogue import model_choices


def _stem(pet: Path) -> str:
    """BIDS stem of a PET file: the name without ``_pet`` and the extension."""
    name = pet.name
    for ext in (".nii.gz", ".nii", ".v", ".img", ".hdr"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return name.removesuffix("_pet")


def _pet_argument(args: list[str]) -> str | None:
    """The PET argument among the words after ``parametric`` (None if there is none).

    Every option of this command takes a value (tests/commands/test_parametric_cli.py
    checks it), so an option word is followed by its value unless written ``--opt=value``.
    """
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if a.startswith("-") and a != "-":
            i += 1 if "=" in a else 2
            continue
        return a
    return None


def early(args: list[str]) -> None:
    """Start reading the scan named on the command line (:mod:`petbind.io.prefetch`).

    Called by :func:`petbind.commands.start_early` before typer parses the
    options: the ``.nii.gz`` is inflated in a background thread while the
    command's options are checked and its libraries imported, and
    :func:`petbind.parametric.parametric_maps` reads it from there (the same
    bytes and errors). A wrong guess costs only the reading.
    """
    pet = _pet_argument(args)
    if pet is not None and pet.endswith((".nii.gz", ".nii")):
        from petbind.io.prefetch import start

        start(pet)


def register(app: typer.Typer) -> None:
    """Add the ``parametric`` command to ``app``."""

    @app.command("parametric")
    def parametric(
        pet: Annotated[Path, typer.Argument(
            help="4D PET image (BIDS NIfTI with its JSON sidecar).")],
        model: Annotated[str, typer.Option(
            "--model", help=model_choices("reference", mappable=True))] = "mrtm2",
        ref_mask: Annotated[Path | None, typer.Option(
            "--ref-mask", metavar="FILE",
            help="Reference-region mask on the PET grid.")] = None,
        ref_label: Annotated[str | None, typer.Option(
            "--ref-label", metavar="ATLAS:NAME",
            help="Atlas (dseg) image on the PET grid and a region name from its "
                 "_dseg.tsv (or a label index).")] = None,
        ref_tac: Annotated[str | None, typer.Option(
            "--ref-tac", metavar="TSV:COLUMN",
            help="Reference TAC table (BIDS _tacs.tsv, PMOD .tac, Turku .dft) and "
                 "column.")] = None,
        mask: Annotated[Path | None, typer.Option(
            "--mask", metavar="FILE",
            help="Brain mask on the PET grid (default: duration-weighted mean image "
                 "> 0.1 x its 99th percentile).")] = None,
        k2prime: Annotated[str, typer.Option(
            "--k2prime", metavar="POLICY",
            help="k2' in 1/min for mrtm2/srtm2/logan, or 'auto' (fit of the "
                 "high-binding region) / 'pooled' or 'median' (median of voxel "
                 "estimates) / 'mrtm' or 'srtm' (that model on --k2prime-region) / "
                 "'none' (logan without the k2' term).")] = "auto",
        k2prime_region: Annotated[str | None, typer.Option(
            "--k2prime-region", metavar="FILE|ATLAS:NAME",
            help="High-binding region for --k2prime auto/pooled: a mask, or an atlas "
                 "and region name (default: the 2 % of voxels with the highest late "
                 "tissue/reference ratio).")] = None,
        out: Annotated[Path | None, typer.Option(
            "--out", metavar="DIR",
            help="Output folder (default: ./petbind-parametric).")] = None,
        chunk_voxels: Annotated[int | None, typer.Option(
            "--chunk-voxels",
            help="Voxels fitted per chunk (default: from a memory budget).")] = None,
        scheduler: Annotated[str | None, typer.Option(
            "--scheduler",
            help=SCHEDULER_HELP + " Default: threads on all CPUs.")] = None,
        pet_fwhm: Annotated[float, typer.Option(
            "--pet-fwhm", metavar="MM",
            help="Smooth every frame with a 3D Gaussian of this FWHM (mm), normalised "
                 "inside the brain mask, before the fits (default 0: no smoothing; "
                 "recorded in the sidecars).")] = 0.0,
    ) -> None:
        """Fit a reference-tissue model to every brain voxel; write BIDS-derivative maps."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        from petbind.compute import parse_scheduler
        from petbind.parametric import MAP_MODELS, RefCurve, parametric_maps, write_maps

        parse_scheduler(scheduler, default="threads")  # a wrong word fails before reading
        from petbind.errors import DataError
        from petbind.parametric.smoothing import check_fwhm

        try:
            check_fwhm(pet_fwhm, "--pet-fwhm")
        except DataError as exc:
            raise ConfigError(exc.message, field="--pet-fwhm", fix=exc.fix) from None
        if model not in MAP_MODELS:
            raise ConfigError(f"unknown model {model!r}", field="--model",
                              fix=f"use one of: {', '.join(MAP_MODELS)}")
        given = [(k, v) for k, v in (("mask", ref_mask), ("label", ref_label),
                                     ("tac", ref_tac)) if v is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one reference: --ref-mask, --ref-label or "
                              "--ref-tac", field="--ref-mask",
                              fix="e.g. --ref-label dseg.nii.gz:cerebellum")
        ref = RefCurve.from_spec(given[0][0], str(given[0][1]))
        from petbind.errors import ModelError
        from petbind.models.k2prime import parse_k2prime

        try:
            policy = parse_k2prime(k2prime, field="--k2prime")
        except ModelError as exc:
            raise ConfigError(f"--k2prime must be a number, 'auto' or 'pooled', got "
                              f"{k2prime!r} ({exc.message})", field="--k2prime",
                              fix="e.g. --k2prime 0.1") from None
        k2: float | str = policy.value if policy.value is not None else k2prime.lower()
        region: Path | tuple[str, str] | None = None
        if k2prime_region is not None:
            if Path(k2prime_region).exists() or ":" not in k2prime_region:
                region = Path(k2prime_region)
            else:
                atlas, name = k2prime_region.rsplit(":", 1)
                region = (atlas, name)
        out_dir = out if out is not None else Path("petbind-parametric")
        from petbind.io.guard import check_output_dir

        check_output_dir(out_dir, "--out")
        console = Console(stderr=True)
        with Progress(TextColumn("[bold]fitting[/] {task.description}"), BarColumn(),
                      MofNCompleteColumn(), TextColumn("voxels"),
                      TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task(model, total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = parametric_maps(pet, model=model, ref_curve=ref, mask=mask,
                                     k2prime=k2, k2prime_region=region,
                                     chunk_voxels=chunk_voxels,
                                     scheduler=scheduler, progress=progress,
                                     pet_fwhm_mm=pet_fwhm)
        files = write_maps(result, out_dir, _stem(pet),
                           sidecar_extra={"Command": "petbind parametric"})
        console.print(result.summary(), highlight=False)
        for f in files:
            typer.echo(str(f))
