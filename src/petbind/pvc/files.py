"""Files of partial-volume correction: atlases with their label tables, corrected-image sidecars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from petbind.errors import DataError


def atlas_table_path(atlas: Path) -> Path:
    """The ``_dseg.tsv`` beside a ``_dseg.nii[.gz]``."""
    name = atlas.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return atlas.with_name(name[: -len(ext)] + ".tsv")
    return atlas.with_suffix(".tsv")


def read_atlas(path: Path, tsv: Path | None = None
               ) -> tuple[np.ndarray, dict[int, str], np.ndarray]:
    """Labels, ``{index: region}`` and affine of a dseg image and its label table.

    ``tsv`` defaults to the ``_dseg.tsv`` beside the image.

    Raises
    ------
    DataError
        When the image or table is missing or the table lacks ``index`` /
        ``region`` (or ``name``).
    """
    import nibabel as nib

    from petbind.io.tables import read_tsv

    if not Path(path).exists():
        raise DataError("the partial-volume-correction atlas does not exist", path=path,
                        field="pvc.atlas", fix="give an existing *_dseg.nii.gz, or \"\" for "
                        "each scan's own atlas")
    tsv = atlas_table_path(Path(path)) if tsv is None else Path(tsv)
    if not tsv.exists():
        raise DataError("the atlas has no label table", path=tsv, field="dseg.tsv",
                        fix="write the BIDS _dseg.tsv (index, name, region) beside the atlas")
    img = nib.load(str(path))
    table = read_tsv(tsv)
    col = "region" if "region" in table.columns else "name"
    if "index" not in table.columns or col not in table.columns:
        raise DataError("label table needs 'index' and 'region' (or 'name') columns",
                        path=tsv, field="index", fix="use BIDS dseg columns: index, name, region")
    names = {int(i): str(r) for i, r in zip(table["index"], table[col], strict=True)}
    return np.rint(np.asanyarray(img.dataobj)).astype(np.int64), names, np.asarray(img.affine)


def corrected_sidecar(original: dict[str, Any], timing: Any, info: dict[str, Any]
                      ) -> dict[str, Any]:
    """BIDS-PET sidecar of a corrected image: kBq/mL, decay-corrected to injection at t = 0.

    The image handed to the correction is :func:`petbind.io.bids.load_pet`'s
    (kBq/mL, decay-corrected to injection, frames relative to injection), so
    the sidecar says so: ``InjectionStart`` 0 (the injection is the time
    zero), frames from ``timing``, ``ScanStart`` moved by the old
    ``InjectionStart``, and the correction's record under
    ``PartialVolumeCorrection``.
    """
    side = dict(original)
    inj = float(side.get("InjectionStart", 0.0) or 0.0)
    if isinstance(side.get("ScanStart"), int | float):
        side["ScanStart"] = float(side["ScanStart"]) - inj
    side.update(timing.to_bids())
    side.update({"InjectionStart": 0.0, "ImageDecayCorrected": True,
                 "ImageDecayCorrectionTime": 0.0, "Units": "kBq/mL",
                 "PartialVolumeCorrection": info})
    return side
