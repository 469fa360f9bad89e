"""Atlases and regions: template-space labels into PET space, region curves, maps to template.

A template-space atlas is a BIDS ``dseg`` label image plus its label table
(``index``, ``name`` and optionally ``region``, which pools e.g. left and
right labels). :func:`atlas_to_pet` pulls it into a scan's PET grid through
the composed transform (PET points -> template points), either by nearest
neighbour at voxel centres or partial-volume aware: each PET voxel is
sampled at ``supersample**3`` points and gets the fraction of each label, so
a region's curve is the fraction-weighted mean of the voxels it touches.
An optional grey-matter mask from the T1w (three-class k-means of the
brain's intensities) restricts grey-matter regions to grey matter.

References
----------
Lloyd SP (1982). Least squares quantization in PCM. IEEE Trans Inf Theory
28:129-137 (k-means).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import SimpleITK as sitk
from numpy.typing import ArrayLike, NDArray

from petbind.errors import DataError, FileFormatError, MetadataError
from petbind.numerics.grid import block_sum
from petbind.preprocess.register import resample
from petbind.tac import TACTable
from petbind.timing import FrameTiming

#: Regions never restricted to grey matter.
NON_GREY = ("white_matter", "csf")


@dataclass
class Atlas:
    """A label image with its label table.

    Attributes
    ----------
    labels : ndarray of int (X, Y, Z)
        0 is background.
    affine : ndarray (4, 4)
        Voxel-to-world (RAS mm).
    table : pandas.DataFrame
        Columns ``index`` (int), ``name``, ``region``.
    path : str or None
        The dseg file, for messages.
    """

    labels: NDArray
    affine: NDArray
    table: pd.DataFrame
    path: str | None = None

    def region_of(self) -> dict[int, str]:
        """Label index -> region name."""
        return dict(zip(self.table["index"].astype(int), self.table["region"], strict=True))


def atlas_table_path(dseg_path: str | os.PathLike) -> Path:
    """The label table beside a dseg image: ``*_dseg.nii.gz`` -> ``*_dseg.tsv``."""
    from petbind.io.atlas import label_table_path

    return label_table_path(dseg_path)


def load_atlas(dseg_path: str | os.PathLike,
               table_path: str | os.PathLike | None = None) -> Atlas:
    """Read a template-space atlas: ``dseg`` NIfTI + label table TSV.

    Parameters
    ----------
    dseg_path : path
        Integer label image.
    table_path : path, optional
        TSV with columns ``index``, ``name`` and optionally ``region``
        (default: the ``.tsv`` beside the image).

    Raises
    ------
    FileFormatError
        The image is missing, unreadable, not 3-D or not integer-valued.
    MetadataError
        The label table is missing or lacks columns, or the image holds labels
        the table does not name.
    """
    from petbind.io.atlas import check_labels_named, read_label_image, read_label_table

    p = Path(dseg_path)
    if not p.is_file():
        raise FileFormatError("atlas label image not found", path=p, field="atlas",
                              fix="give the template's dseg image (integer labels)")
    tp = Path(table_path) if table_path is not None else atlas_table_path(p)
    if not tp.is_file():
        raise MetadataError("the atlas has no label table", path=tp, field="atlas",
                            fix=f"write {tp.name} with columns index, name[, region]")
    labels, affine, _ = read_label_image(p)  # petbind.io.atlas: one reader of atlases
    table = read_label_table(tp)  # index, name, region (region: else the name)
    present = check_labels_named(labels, table, tp)
    if not present:
        raise FileFormatError("atlas image holds no labels (all zero)", path=p, field="atlas",
                              fix="give the template's dseg image")
    return Atlas(labels=labels, affine=affine,
                 table=table[["index", "name", "region"]], path=str(p))


def atlas_to_pet(atlas: Atlas, pet_shape: Sequence[int], pet_affine: ArrayLike,
                 transform: sitk.Transform | ArrayLike | None = None, *,
                 method: Literal["nearest", "fraction"] = "fraction",
                 supersample: int | Sequence[int] | None = None
                 ) -> tuple[NDArray, NDArray | None]:
    """Bring atlas labels into a PET grid.

    Parameters
    ----------
    atlas : Atlas
    pet_shape : (X, Y, Z, ...)
        PET grid shape (a 4th dimension is ignored).
    pet_affine : array_like (4, 4)
    transform : sitk.Transform or 4x4 RAS matrix, optional
        Maps PET-space points to template points (identity if None).
    method : {"nearest", "fraction"}
        ``nearest``: label at each voxel centre. ``fraction``: each voxel is
        sampled at ``supersample**3`` sub-voxel points (nearest neighbour);
        the fraction of each label is returned and the label of each voxel is
        the majority label.
    supersample : int or (int, int, int), optional
        Sub-samples per axis for ``fraction``. Default
        (:func:`atlas_supersample`): the PET voxel edge over the atlas voxel
        edge along each axis when that is 2 or more, so that the sub-samples
        sit at the atlas's own resolution (2 mm PET, 1 mm atlas: 2 x 2 x 2,
        each sub-sample at the centre of a 1 mm sub-voxel), else 3. An odd
        count on an even ratio (3 x 3 x 3 on 2 mm / 1 mm, the old default)
        puts the middle sub-sample on the boundary between two atlas voxels,
        where nearest-neighbour rounds one way: in an aligned pose that
        shifted every region by a sixth of a PET voxel and biased region
        BP_ND by up to +3 % (docs/preprocessing.md, "Where the chain lost
        BP_ND").

    Returns
    -------
    labels : ndarray of int32 (X, Y, Z)
    fractions : ndarray of float32 (n_table_rows, X, Y, Z) or None
        Rows follow ``atlas.table`` (``None`` for ``nearest``).
    """
    shape = tuple(int(s) for s in pet_shape[:3])
    aff = np.asarray(pet_affine, dtype=float)
    if method == "nearest":
        lab = resample(atlas.labels, atlas.affine, shape, aff, transform,
                       interpolation="nearest")
        return lab.astype(np.int32), None
    if method != "fraction":
        raise DataError(f"unknown atlas resampling {method!r}", field="method",
                        fix="use 'nearest' or 'fraction'")
    if supersample is None:
        s3 = atlas_supersample(aff, atlas.affine)
    else:
        s3 = tuple(int(v) for v in np.broadcast_to(np.asarray(supersample, dtype=int), (3,)))
    if min(s3) < 1:
        raise DataError(f"supersample must be >= 1, got {s3}", field="supersample",
                        fix="give a positive number of sub-samples per axis")
    sv = np.asarray(s3, dtype=float)
    fine_shape = tuple(n * k for n, k in zip(shape, s3, strict=True))
    fine_aff = aff.copy()
    fine_aff[:3, :3] = aff[:3, :3] / sv
    # sub-voxel centres: the fine voxel (0,0,0) sits at -(s-1)/(2s) of a coarse voxel
    fine_aff[:3, 3] = aff[:3, 3] - aff[:3, :3] @ ((sv - 1) / (2.0 * sv))
    fine = resample(atlas.labels, atlas.affine, fine_shape, fine_aff, transform,
                    interpolation="nearest")
    idx = atlas.table["index"].to_numpy()
    code = _table_rows(idx, fine)
    n_sub = int(np.prod(s3))
    count = np.uint8 if n_sub <= 255 else np.int32
    # the share of each label's sub-samples in each PET voxel: counts by block sums
    # (block_sum), then one division, the same numbers as the mean over the blocks
    frac = np.stack([block_sum((code == k).view(np.uint8).astype(count, copy=False), s3)
                     / float(n_sub) for k in range(idx.size)]).astype(np.float32)
    inside = frac.sum(axis=0)
    best = np.argmax(frac, axis=0)
    background = 1.0 - inside
    labels = np.where(frac.max(axis=0) > background, idx[best], 0).astype(np.int32)
    return labels, frac


def _table_rows(index: NDArray, labels: NDArray) -> NDArray[np.int64]:
    """Row of each voxel's label in the label table (``index``), -1 where not listed.

    A look-up table as long as the largest label number when the labels are
    non-negative and at most 2^20 (FreeSurfer's stop at 14175); otherwise a
    search of the sorted table, so that a label numbered in the billions does not
    ask for a table that long, nor a negative label index it from the end.
    """
    idx = np.asarray(index, dtype=np.int64)
    lab = np.asarray(labels)
    lo = min(int(idx.min()), int(lab.min()))
    top = max(int(idx.max()), int(lab.max()))
    if lo >= 0 and top <= 1 << 20:
        lut = np.full(top + 1, -1, dtype=np.int64)
        lut[idx] = np.arange(idx.size)
        return lut[lab]
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    pos = np.maximum(np.searchsorted(sidx, lab, side="right") - 1, 0)  # last row wins
    return np.where(sidx[pos] == lab, order[pos], -1)


def atlas_supersample(pet_affine: ArrayLike, atlas_affine: ArrayLike) -> tuple[int, int, int]:
    """Sub-samples per PET axis that put the sub-samples at the atlas's resolution.

    Parameters
    ----------
    pet_affine, atlas_affine : array_like (4, 4)
        Voxel-to-world matrices (RAS mm).

    Returns
    -------
    (int, int, int)
        Per PET axis ``r = round(PET voxel edge / atlas voxel edge)`` (the
        atlas voxel edge is the mean of its three) when ``r >= 2``: one
        sub-sample per atlas voxel, at the atlas voxel centres when the grids
        are aligned. 3 when ``r <= 1``: the centre and +-1/3 of a voxel, inside
        the atlas voxel when aligned. Either way no sub-sample of an aligned
        grid falls on a boundary between atlas voxels, where nearest neighbour
        would round one way.
    """
    pet = np.linalg.norm(np.asarray(pet_affine, float)[:3, :3], axis=0)
    at = float(np.mean(np.linalg.norm(np.asarray(atlas_affine, float)[:3, :3], axis=0)))
    r = np.rint(pet / at).astype(int)
    s = np.where(r >= 2, r, 3)
    return int(s[0]), int(s[1]), int(s[2])


def grey_matter_mask(t1w: ArrayLike, brain_mask: ArrayLike | None = None, *,
                     iterations: int = 30) -> NDArray[np.bool_]:
    """Grey matter of a T1w by three-class k-means of brain intensities (CSF < GM < WM).

    Parameters
    ----------
    t1w : array_like (X, Y, Z)
        T1-weighted image.
    brain_mask : array_like of bool, optional
        Voxels to classify (default: above 10 % of the 99th percentile).
    iterations : int
        Lloyd iterations (1-D, vectorised).

    Returns
    -------
    ndarray of bool (X, Y, Z)
        Voxels assigned to the middle-intensity class.
    """
    img = np.asarray(t1w, dtype=float)
    mask = (img > 0.1 * np.percentile(img, 99)) if brain_mask is None else np.asarray(
        brain_mask, bool)
    vals = img[mask]
    if vals.size < 3:
        raise DataError("too few brain voxels to classify grey matter", field="t1w",
                        fix="check the T1w image or give a brain mask")
    centers = np.percentile(vals, [10.0, 50.0, 90.0])
    for _ in range(iterations):
        assign = np.argmin(np.abs(vals[:, None] - centers[None, :]), axis=1)
        new = np.array([vals[assign == k].mean() if np.any(assign == k) else centers[k]
                        for k in range(3)])
        if np.allclose(new, centers):
            break
        centers = new
    order = np.argsort(centers)
    assign = np.argmin(np.abs(vals[:, None] - centers[None, :]), axis=1)
    out = np.zeros(img.shape, dtype=bool)
    out[mask] = assign == order[1]
    return out


def region_tacs(data: ArrayLike, timing: FrameTiming, atlas: Atlas, labels: NDArray,
                fractions: NDArray | None = None, *, grey_matter: ArrayLike | None = None,
                non_grey: Sequence[str] = NON_GREY, units: str = "kBq/mL",
                metadata: dict | None = None) -> TACTable:
    """Region curves: (fraction-)weighted means of the voxels of each atlas region.

    Parameters
    ----------
    data : array_like (X, Y, Z, T)
        Dynamic PET on the grid of ``labels``.
    timing : FrameTiming
    atlas : Atlas
        For the label table (``region`` pools labels).
    labels : ndarray (X, Y, Z)
        Labels in PET space (from :func:`atlas_to_pet`).
    fractions : ndarray (n_table_rows, X, Y, Z), optional
        Partial-volume fractions; weights instead of hard labels.
    grey_matter : array_like (X, Y, Z), optional
        Grey-matter fraction or mask on the PET grid; regions other than
        ``non_grey`` are weighted by it (voxels below 0.5 dropped).
    non_grey : sequence of str
        Regions not restricted to grey matter.

    Returns
    -------
    TACTable
        One row per ``region`` (in table order), ``units``.
    """
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim != 4:
        raise DataError(f"region curves need a 4-D image, got shape {arr.shape}",
                        field="data", fix="give the dynamic PET")
    table = atlas.table
    idx = table["index"].to_numpy()
    if fractions is None:
        weights = np.stack([(labels == k) for k in idx]).astype(np.float32)
    else:
        weights = np.asarray(fractions, dtype=np.float32)
    if grey_matter is not None:
        gm = (np.asarray(grey_matter, dtype=np.float32) >= 0.5).astype(np.float32)
        restrict = ~table["region"].isin(list(non_grey)).to_numpy()
        weights = np.where(restrict[:, None, None, None], weights * gm[None], weights)
    regions = list(dict.fromkeys(table["region"].tolist()))
    group = np.array([regions.index(r) for r in table["region"]])
    w_region = np.zeros((len(regions), *weights.shape[1:]), np.float32)
    np.add.at(w_region, group, weights)
    w2 = w_region.reshape(len(regions), -1)
    total = w2.sum(axis=1)
    empty = [r for r, t in zip(regions, total, strict=True) if t <= 0]
    if empty:
        raise DataError(f"regions {empty} have no voxels in PET space", path=atlas.path,
                        field="region",
                        fix="check the registration (QC figures) or drop these labels")
    values = (w2 @ arr.reshape(-1, arr.shape[3])) / total[:, None]
    return TACTable(timing, values, regions, units=units, metadata=metadata or {})


def to_template(data: ArrayLike, affine: ArrayLike, template_shape: Sequence[int],
                template_affine: ArrayLike, transform: sitk.Transform | ArrayLike,
                *, interpolation: Literal["linear", "nearest"] = "linear") -> NDArray:
    """Resample a PET-space map (e.g. BP_ND) into template space for voxel statistics.

    ``transform`` maps template points to PET points (the composition of
    template -> T1w and T1w -> PET). NaN voxels of the map (failed fits,
    excluded regions) do not enter: the interpolation is normalised by the
    interpolated validity (normalised convolution, Knutsson & Westin 1993),
    so a value next to a NaN region is the weighted mean of its valid
    neighbours, not pulled towards 0. The result is NaN where less than half
    of the interpolated neighbourhood was valid, and outside the PET field of
    view.
    """
    arr = np.asarray(data, dtype=np.float32)
    valid = np.isfinite(arr)
    out = resample(np.where(valid, arr, 0.0), affine, template_shape, template_affine,
                   transform, interpolation=interpolation)
    ok = resample(valid.astype(np.float32), affine, template_shape, template_affine,
                  transform, interpolation=interpolation)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok >= 0.5, out / ok, np.nan).astype(np.float32)
