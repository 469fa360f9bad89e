"""``petbind preprocess``: motion correction, registration and atlas regions of raw scans."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petbind.errors import ConfigError, FileFormatError, MetadataError

__all__ = ["find_pet_scans", "register"]


def __getattr__(name: str) -> object:
    # find_t1w is re-exported lazily: importing petbind.preprocess (numpy) would add
    # about 0.1 s to every `petbind` start, --help included
    if name == "find_t1w":
        from petbind.preprocess.scan import find_t1w

        return find_t1w
    raise AttributeError(name)


def find_pet_scans(bids_dir: Path, subject: str | None = None) -> list[Path]:
    """Every ``*_pet.nii[.gz]`` under ``sub-*/[ses-*/]pet`` of a BIDS folder (not derivatives)."""
    pats = ("sub-*/pet/*_pet.nii.gz", "sub-*/pet/*_pet.nii",
            "sub-*/ses-*/pet/*_pet.nii.gz", "sub-*/ses-*/pet/*_pet.nii")
    found = sorted({p for pat in pats for p in bids_dir.glob(pat)})
    if subject:
        found = [p for p in found if p.name.startswith(f"sub-{subject.removeprefix('sub-')}_")]
    return found


def register(app: typer.Typer) -> None:
    """Add the ``preprocess`` command to ``app``."""

    @app.command("preprocess")
    def preprocess(
        path: Annotated[Path, typer.Argument(
            help="BIDS dataset folder, or one *_pet.nii.gz (then give --t1w).")],
        template: Annotated[Path, typer.Option(
            "--template", metavar="FILE", help="Template T1-weighted image (common space).")],
        atlas: Annotated[Path | None, typer.Option(
            "--atlas", metavar="FILE",
            help="Template-space dseg (default: *_dseg.nii.gz beside the template); its "
                 "label table is the _dseg.tsv beside it.")] = None,
        t1w: Annotated[Path | None, typer.Option(
            "--t1w", metavar="FILE", help="T1w for a single PET file.")] = None,
        subject: Annotated[str | None, typer.Option(
            "--subject", help="Only this subject (label without sub-).")] = None,
        out: Annotated[Path | None, typer.Option(
            "--out", metavar="DIR",
            help="Output root (default BIDS_DIR/derivatives/petbind-preprocess).")] = None,
        motion: Annotated[bool, typer.Option(
            "--motion/--no-motion", help="Realign frames.")] = True,
        reference_window: Annotated[tuple[float, float] | None, typer.Option(
            "--reference-window", metavar="START END",
            help="Minutes after injection averaged into the motion reference "
                 "(default 10-60 % of the scan).")] = None,
        fd_threshold: Annotated[float, typer.Option(
            "--fd-threshold", help="Flag frames with framewise displacement above (mm).")] = 0.5,
        nonlinear: Annotated[bool, typer.Option(
            "--nonlinear/--affine-only", help="Add SyN after the affine T1w->template.")] = True,
        atlas_method: Annotated[str, typer.Option(
            "--atlas-method", help="fraction (partial-volume aware) | nearest")] = "fraction",
        grey_matter: Annotated[bool, typer.Option(
            "--grey-matter", help="Restrict grey-matter regions to T1w grey matter.")] = False,
    ) -> None:
        """Realign frames, register PET->T1w->template, and write atlas region curves.

        Per scan: motion TSV + realigned PET, ITK transforms (.tfm/.h5), atlas in PET
        space, *_tacs.tsv, and QC figures (motion plot, registration edge overlays).
        """
        from rich.table import Table

        from petbind.commands.consoles import console
        from petbind.preprocess.scan import (
            PreprocessOptions,
            SubjectRegistration,
            default_atlas,
            preprocess_scan,
            register_subject,
            save_subject_registration,
        )

        if atlas_method not in ("fraction", "nearest"):
            raise ConfigError(f"unknown atlas method {atlas_method!r}", field="--atlas-method",
                              fix="use 'fraction' or 'nearest'")
        opts = PreprocessOptions(motion=motion, reference_window=reference_window,
                                 fd_threshold_mm=fd_threshold, nonlinear=nonlinear,
                                 atlas_method=atlas_method, grey_matter=grey_matter)
        if path.is_dir():
            bids = path
            scans = find_pet_scans(bids, subject)
            if not scans:
                raise FileFormatError("no *_pet.nii.gz under sub-*/[ses-*/]pet", path=bids,
                                      field="PATH", fix="give a BIDS dataset folder")
            root = out if out is not None else bids / "derivatives" / "petbind-preprocess"
            from petbind.preprocess.scan import find_t1w

            jobs = [(p, t1w or find_t1w(bids, p), root / p.parent.relative_to(bids))
                    for p in scans]
        elif path.is_file():
            if t1w is None:
                raise ConfigError("a single PET file needs --t1w", path=path, field="--t1w",
                                  fix="give the subject's T1w with --t1w")
            root = out if out is not None else Path("petbind-preprocess")
            jobs = [(path, t1w, root)]
        else:
            raise FileFormatError("no such file or folder", path=path, field="PATH",
                                  fix="give a BIDS dataset folder or a *_pet.nii.gz")
        atlas_file = atlas if atlas is not None else default_atlas(template)
        if not atlas_file.is_file():
            raise MetadataError("the template has no atlas", path=template, field="--atlas",
                                fix=f"give --atlas (a dseg in template space) or add "
                                    f"{atlas_file.name} beside the template")
        table = Table("scan", "max FD (mm)", "flagged frames", "regions", "outputs")
        subjects: dict[Path, SubjectRegistration] = {}
        for pet, anat, dest in jobs:
            console.print(f"preprocessing {pet.name} ...")
            # T1w -> template once per T1w; its transforms are written beside every scan
            if anat not in subjects:
                subjects[anat] = register_subject(anat, template, opts)
            sub = (pet.name.split("_")[0] if pet.name.startswith("sub-")
                   else pet.name.split(".")[0].removesuffix("_pet"))
            reg = save_subject_registration(subjects[anat], dest, sub)
            res = preprocess_scan(pet, anat, template, dest, atlas_path=atlas, options=opts,
                                  subject=reg)
            subjects[anat].qc = res.outputs["t1w_template_qc"]  # later scans copy the figure
            s = res.summary
            fd = s.get("max_fd_mm")
            table.add_row(pet.name, "-" if fd is None else f"{fd:.2f}",
                          ",".join(str(f) for f in s.get("flagged_frames", [])) or "-",
                          str(len(s.get("regions", []))), str(dest))
        console.print(table)
