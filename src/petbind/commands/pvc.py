"""``petbind pvc``: partial-volume correction of one PET scan (docs/pvc.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petbind.errors import ConfigError, PetbindError


def _fwhm(text: str | None) -> float | list[float] | None:
    """``"2.8"`` or ``"2.8,2.8,3.2"`` (mm) -> number or list; None stays None."""
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise ConfigError(f"--fwhm-mm must be one number or three separated by commas, got "
                          f"{text!r}", field="--fwhm-mm", fix="e.g. --fwhm-mm 2.8 or "
                          "--fwhm-mm 2.8,2.8,3.2") from None
    return vals[0] if len(vals) == 1 else vals


def register(app: typer.Typer) -> None:
    """Add the ``pvc`` command to ``app``."""

    @app.command("pvc")
    def pvc(
        pet: Annotated[Path, typer.Argument(
            help="4D PET image (BIDS NIfTI with its JSON sidecar).")],
        dseg: Annotated[Path, typer.Option(
            "--dseg", metavar="FILE",
            help="Atlas (*_dseg.nii.gz) on the PET grid, or on a finer grid aligned with it "
                 "(each PET voxel f x f x f atlas voxels: partial-volume aware).")],
        dseg_tsv: Annotated[Path | None, typer.Option(
            "--dseg-tsv", metavar="FILE",
            help="Label table (index, name, region); default: the _dseg.tsv beside "
                 "--dseg.")] = None,
        method: Annotated[str, typer.Option(
            "--method", help="gtm | sgtm (region curves) or rbv | iy | mg (corrected 4D "
                             "image too).")] = "gtm",
        fwhm_mm: Annotated[str | None, typer.Option(
            "--fwhm-mm", metavar="MM|X,Y,Z",
            help="Scanner PSF FWHM in mm (default: from the sidecar's "
                 "ScannerResolutionFWHM / Gaussian ReconFilterSize).")] = None,
        iterations: Annotated[int, typer.Option(
            "--iterations", help="Iterations of iterative Yang.")] = 10,
        out: Annotated[Path | None, typer.Option(
            "--out", metavar="DIR", help="Output folder (default: ./petbind-pvc).")] = None,
    ) -> None:
        """Correct one scan for partial volume; write desc-pvc TACs (and 4D image)."""
        import numpy as np

        from petbind.io.bids import load_pet, pet_sidecar, read_pet_sidecar, save_image
        from petbind.io.tables import write_tacs
        from petbind.pvc.files import corrected_sidecar, read_atlas
        from petbind.pvc.psf import resolve_psf
        from petbind.pvc.scan import METHODS, correct_image
        from petbind.tac import TACTable

        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}", field="--method",
                              fix=f"use one of: {', '.join(METHODS)}")
        if iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {iterations}",
                              field="--iterations", fix="e.g. --iterations 10")
        out_dir = out if out is not None else Path("petbind-pvc")
        inputs = {pet.resolve().parent, dseg.resolve().parent}
        if out_dir.resolve() in inputs:
            raise PetbindError("the output folder is an input folder", path=out_dir,
                               field="--out", fix="write to another folder (--out DIR)")
        img = load_pet(pet)
        psf = resolve_psf(_fwhm(fwhm_mm), img.metadata, sidecar_path=pet_sidecar(img.path),
                          config_field="--fwhm-mm")
        labels, names, laff = read_atlas(dseg, dseg_tsv)
        res = correct_image(img.get_data(), img.affine, labels, names, psf, method,
                            labels_affine=laff, n_iter=iterations, atlas_path=dseg)
        stem = pet.name
        for ext in (".nii.gz", ".nii"):
            stem = stem.removesuffix(ext)
        stem = stem.removesuffix("_pet")
        info = {**res.info, "Command": "petbind pvc", "Source": str(pet), "Atlas": str(dseg)}
        written = []
        if res.image is not None:
            written.append(save_image(out_dir / f"{stem}_desc-pvc_pet.nii.gz",
                                      res.image.astype(np.float32), img.affine,
                                      corrected_sidecar(read_pet_sidecar(pet)[0], img.timing,
                                                        info)))
        tacs = TACTable(img.timing, res.tacs, res.regions,
                        metadata={"PartialVolumeCorrection": info})
        written.append(write_tacs(out_dir / f"{stem}_desc-pvc_tacs.tsv", tacs))
        rec = ", ".join(f"{r} {v:.2f}" for r, v in info["RecoveryCoefficient"].items())
        typer.echo(f"{method}: PSF {psf.fwhm_mm} mm FWHM ({psf.source}), GTM condition "
                   f"number {info['GTMConditionNumber']:.1f}; recovery: {rec}", err=True)
        for f in written:
            typer.echo(str(f))
