"""Files of partial-volume correction: atlases with their label tables, corrected-image sidecars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from petbind.errors import DataError
from petbind.io.atlas import label_table_path, read_label_image, read_label_table


def atlas_table_path(atlas: Path) -> Path:
    """The ``_dseg.tsv`` beside a ``_dseg.nii[.gz]`` (:func:`petbind.io.atlas.label_table_path`)."""
    return label_table_path(atlas)


def read_atlas(path: Path, tsv: Path | None = None
               ) -> tuple[np.ndarray, dict[int, str], np.ndarray]:
    """Labels, ``{index: region}`` and affine of a dseg image and its label table.

    ``tsv`` defaults to the ``_dseg.tsv`` beside the image. Read by
    :mod:`petbind.io.atlas` (a label's region: the ``region`` column, else
    its ``name``).

    Raises
    ------
    DataError
        When the image or table is missing.
    MetadataError
        When the table lacks ``index`` / ``name``.
    FileFormatError
        When the image is damaged or not an integer label image.
    """
    if not Path(path).exists():
        raise DataError("the partial-volume-correction atlas does not exist", path=path,
                        field="pvc.atlas", fix="give an existing *_dseg.nii.gz, or \"\" for "
                        "each scan's own atlas")
    tsv = atlas_table_path(Path(path)) if tsv is None else Path(tsv)
    if not tsv.exists():
        raise DataError("the atlas has no label table", path=tsv, field="dseg.tsv",
                        fix="write the BIDS _dseg.tsv (index, name, region) beside the atlas")
    labels, affine, _ = read_label_image(path, field="pvc.atlas")
    table = read_label_table(tsv)
    names = {int(i): str(r) for i, r in zip(table["index"], table["region"], strict=True)}
    return labels.astype(np.int64), names, affine


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
