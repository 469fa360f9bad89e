"""One reader for atlases: a label image (dseg / aparc+aseg) and the table naming its labels.

Label table formats
-------------------
BIDS ``*_dseg.tsv`` (BIDS 1.11, "Segmentations")
    Tab-separated with columns ``index`` (integer label) and ``name``;
    petbind also reads an optional ``region`` column that pools labels
    (``caudate_L`` and ``caudate_R`` -> ``caudate``).
FreeSurfer colour table (``FreeSurferColorLUT.txt``)
    Whitespace-separated ``index name R G B A`` lines, ``#`` comments.

One name rule everywhere: a label's region is its ``region`` cell when the
table has that column, else its ``name``. Missing or malformed tables are a
:class:`~petbind.errors.MetadataError`; unreadable or non-label images a
:class:`~petbind.errors.FileFormatError`; both name the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from petbind.errors import FileFormatError, MetadataError
from petbind.io.bids import open_nifti
from petbind.io.boundary import file_reader
from petbind.lazy import lazy_module

pd = lazy_module("pandas")

PathLike = str | os.PathLike


def label_table_path(dseg_path: PathLike) -> Path:
    """The label table beside a dseg image: ``*_dseg.nii[.gz]`` -> ``*_dseg.tsv``."""
    p = Path(dseg_path)
    name = p.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".tsv")
    return p.with_suffix(".tsv")


@file_reader
def read_label_table(path: PathLike) -> pd.DataFrame:
    """``index``, ``name``, ``region`` of a BIDS ``_dseg.tsv`` or a FreeSurfer colour table.

    ``region`` is the table's own ``region`` column, else a copy of ``name``
    (the one name rule of this module).

    Raises
    ------
    MetadataError
        The table is missing, lacks ``index``/``name``, has a non-integer
        index, or has a colour-table line that is not ``index name R G B A``.
    FileFormatError
        The TSV cannot be parsed.
    """
    from petbind.io.tables import read_tsv

    p = Path(path)
    if not p.is_file():
        raise MetadataError("label table not found", path=p, field="segmentation",
                            fix="give the _dseg.tsv or FreeSurferColorLUT.txt")
    if p.suffix == ".tsv":
        t = read_tsv(p)
        missing = sorted({"index", "name"} - set(t.columns))
        if missing:
            raise MetadataError(f"label table lacks column(s) {missing}", path=p,
                                field=missing[0], fix="use BIDS dseg columns: index, name"
                                "[, region]")
        try:
            index = t["index"].astype(int)
        except ValueError:
            raise MetadataError("label table has an index that is not an integer", path=p,
                                field="index", fix="give every label an integer index") \
                from None
        name = t["name"].astype(str)
        region = t["region"].astype(str) if "region" in t.columns else name
        return pd.DataFrame({"index": index, "name": name, "region": region})
    rows = []
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise MetadataError(f"cannot read the label table: {exc.strerror}", path=p,
                            field="segmentation", fix="check the path and its permissions") \
            from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            raise MetadataError(f"line {n} is not 'index name R G B A'", path=p,
                                field=f"line {n}", fix="give FreeSurfer's FreeSurferColorLUT.txt")
        rows.append((int(parts[0]), parts[1]))
    if not rows:
        raise MetadataError("the colour table names no label", path=p, field="index",
                            fix="give FreeSurfer's FreeSurferColorLUT.txt")
    table = pd.DataFrame(rows, columns=["index", "name"]).drop_duplicates("index")
    return table.assign(region=table["name"]).reset_index(drop=True)


@file_reader
def read_label_image(path: PathLike, *, field: str = "atlas"
                     ) -> tuple[NDArray[np.int32], NDArray[np.float64], Any]:
    """An integer label image (dseg, aparc+aseg): labels (int32), affine and the opened image.

    A 4-D image with one volume is squeezed to 3-D.

    Raises
    ------
    FileFormatError
        Missing, damaged or not an image; not 3-D; non-integer values
        (a probability map). ``field`` is the setting that named the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError("label image not found", path=p, field=field,
                              fix="give the dseg / aparc+aseg label image (integer labels)")
    img = open_nifti(p)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise FileFormatError(f"a label image must be 3-D, got shape {data.shape}", path=p,
                              field=field, fix="give a 3-D dseg image")
    if not np.issubdtype(data.dtype, np.integer) and np.any(data != np.round(data)):
        raise FileFormatError("the label image holds non-integer values", path=p, field=field,
                              fix="give integer labels (a dseg, not a probability map)")
    return np.rint(data).astype(np.int32), np.asarray(img.affine, float), img


def check_labels_named(labels: NDArray[np.integer], table: pd.DataFrame,
                       table_path: PathLike) -> set[int]:
    """The labels present (0 excluded); every one must be in ``table``.

    Raises
    ------
    MetadataError
        A label of the image is not in the table (the first ten are named).
    """
    present = set(np.unique(labels).tolist()) - {0}
    unnamed = sorted(present - set(table["index"].tolist()))
    if unnamed:
        raise MetadataError(f"labels {unnamed[:10]} are in the image but not in the table",
                            path=table_path, field="index",
                            fix="give the table that belongs to this image (a row per label)")
    return present
