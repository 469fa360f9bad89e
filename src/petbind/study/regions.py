"""Analysis regions from atlas labels: names and glob patterns, pooled volume-weighted.

A study's ``[regions]`` table defines each analysis region as a list of atlas
label names or shell-style patterns (``fnmatch``, case-sensitive)::

    [regions]
    cerebellum = ["Left-Cerebellum-Cortex", "Right-Cerebellum-Cortex"]
    NAcc = ["*-Accumbens-area"]

A region's curve is the volume-weighted mean of its labels' curves. With
``m_l`` the mean of label ``l`` over its (fractional) volume ``V_l``, the
pooled mean ``sum_l V_l m_l / sum_l V_l`` is exactly the mean over the union
of the labels' voxels, so pooling after extraction equals extracting the
union. Without volumes (a TAC table from elsewhere) the labels are weighted
equally and the caller says so.

``A+B`` (``petbind fit --ref A+B``) names the pool of the columns ``A`` and
``B`` of a table. :func:`region_curves` gives the pipeline a scan's region
curves from its PET-space atlas or its subject's segmentation
(:mod:`petbind.study.segmentation`), pooled by ``[regions]``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petbind.errors import ConfigError, DataError
from petbind.tac import TACTable


def match_labels(patterns: Sequence[str], names: Sequence[str]) -> list[str]:
    """The label names matched by ``patterns`` (exact names or globs), in atlas order."""
    hit = []
    for n in names:
        if any(n == p or fnmatch.fnmatchcase(n, p) for p in patterns):
            hit.append(n)
    return hit


def resolve_regions(regions: Mapping[str, Sequence[str]], names: Sequence[str], *,
                    source: str | None = None) -> dict[str, list[str]]:
    """Each configured region's atlas labels.

    Raises
    ------
    ConfigError
        A region whose patterns match no label of the atlas (naming the region
        and the labels there are).
    """
    out: dict[str, list[str]] = {}
    for region, pats in regions.items():
        hit = match_labels(pats, names)
        if not hit:
            shown = ", ".join(list(names)[:12]) + (" ..." if len(names) > 12 else "")
            raise ConfigError(f"region {region!r} ({', '.join(pats)}) matches no atlas label",
                              path=source, field=f"regions.{region}",
                              fix=f"use label names or patterns of the atlas: {shown}")
        out[region] = hit
    return out


def split_pool(name: str) -> list[str]:
    """``"A+B"`` -> ``["A", "B"]`` (one name -> a list of one)."""
    return [p.strip() for p in str(name).split("+") if p.strip()]


def pool_curves(tacs: TACTable, groups: Mapping[str, Sequence[str]],
                volumes: Mapping[str, float] | None = None) -> tuple[TACTable, list[str]]:
    """Pool the table's columns into regions, volume-weighted where volumes are known.

    Parameters
    ----------
    tacs : TACTable
        Curves per label.
    groups : mapping region -> label names (columns of ``tacs``)
    volumes : mapping label -> volume (voxels or mL), optional
        Default: ``tacs.metadata["n_voxels"]`` when present.

    Returns
    -------
    TACTable
        One curve per region, same timing and units; ``metadata["n_voxels"]``
        holds the pooled volumes when known.
    notes : list of str
        One line per pool weighted equally for lack of volumes.

    Raises
    ------
    DataError
        A label that is not a column of the table.
    """
    vol = dict(volumes if volumes is not None else tacs.metadata.get("n_voxels") or {})
    cols = list(tacs.regions)
    values = []
    notes = []
    pooled_vol: dict[str, float] = {}
    for region, labels in groups.items():
        missing = [lab for lab in labels if lab not in cols]
        if missing:
            raise DataError(f"region {region!r} needs column(s) {missing} that the curves "
                            "lack", path=tacs.source, field="region",
                            fix=f"use columns of the table: {', '.join(cols)}")
        rows = np.stack([tacs.curve(lab) for lab in labels])
        if len(labels) > 1 and all(lab in vol for lab in labels):
            w = np.array([float(vol[lab]) for lab in labels])
            pooled_vol[region] = float(w.sum())
        else:
            w = np.ones(len(labels))
            if len(labels) > 1:
                notes.append(f"{region} = {' + '.join(labels)}: no region volumes in the "
                             "table, so the columns were averaged with equal weights")
            elif labels[0] in vol:
                pooled_vol[region] = float(vol[labels[0]])
        values.append((w @ rows) / w.sum())
    md = {k: v for k, v in tacs.metadata.items() if k != "n_voxels"}
    if pooled_vol:
        md["n_voxels"] = pooled_vol
    return TACTable(tacs.timing, np.stack(values), list(groups), tacs.units, md,
                    source=tacs.source), notes


def pool_named(tacs: TACTable, names: Sequence[str],
               volumes: Mapping[str, float] | None = None) -> tuple[TACTable, list[str]]:
    """Add ``A+B`` pools of ``names`` as columns (plain names pass through)."""
    groups = {n: split_pool(n) for n in dict.fromkeys(names)}
    return pool_curves(tacs, groups, volumes)


def add_pools(tacs: TACTable, names: Sequence[str], *, field: str = "--ref"
              ) -> tuple[TACTable, list[str]]:
    """``tacs`` with a column for each ``A+B`` among ``names`` (volume-weighted pools).

    Plain names are left to the caller. Volumes come from the table's
    ``n_voxels`` metadata (``petbind run``'s ``_tacs.json`` holds them);
    without them the pool is an equal-weight average and a note says so.

    Raises
    ------
    ConfigError
        A pooled name whose parts are not all columns of the table.
    """
    pools = [n for n in dict.fromkeys(names) if "+" in n and n not in tacs.regions]
    if not pools:
        return tacs, []
    for n in pools:
        missing = [p for p in split_pool(n) if p not in tacs.regions]
        if missing:
            raise ConfigError(f"{n!r}: region(s) {missing} are not in the table",
                              path=tacs.source, field=field,
                              fix=f"pool columns of the table: {', '.join(tacs.regions)}")
    pooled, notes = pool_named(tacs, pools, _volumes(tacs))
    md = dict(tacs.metadata)
    if "n_voxels" in pooled.metadata and isinstance(md.get("n_voxels"), dict):
        md["n_voxels"] = {**md["n_voxels"], **pooled.metadata["n_voxels"]}
    both = TACTable(tacs.timing, np.vstack([tacs.values, pooled.values]),
                    [*tacs.regions, *pooled.regions], tacs.units, md, source=tacs.source)
    return both, notes


def _volumes(tacs: TACTable) -> dict[str, float]:
    """Region volumes of a table: its metadata, else its BIDS sidecar's ``n_voxels``."""
    vol = tacs.metadata.get("n_voxels")
    if isinstance(vol, dict):
        return vol
    if tacs.source and str(tacs.source).endswith(".tsv"):
        from petbind.io.tables import read_json, sidecar_path

        side = read_json(sidecar_path(tacs.source), required=False)
        if isinstance(side.get("n_voxels"), dict):
            return side["n_voxels"]
    return {}


def scan_atlas(scan: Any, shape: tuple[int, ...], affine: np.ndarray
               ) -> tuple[np.ndarray, dict[int, str]]:
    """Label image and ``{index: region}`` of a scan's atlas, checked against the PET grid."""
    from petbind.io.bids import open_nifti
    from petbind.io.tables import read_tsv

    img = open_nifti(scan.dseg)  # verified (gzip CRC): a damaged atlas is refused
    labels = np.asanyarray(img.dataobj)
    if labels.shape != tuple(shape):
        raise DataError(f"atlas shape {labels.shape} differs from the PET grid {shape}",
                        path=scan.dseg, field="shape",
                        fix="resample the atlas onto the PET image (nearest neighbour)")
    if not np.allclose(img.affine, affine, atol=1e-3):
        raise DataError("atlas affine differs from the PET image's", path=scan.dseg,
                        field="affine", fix="resample the atlas onto the PET grid")
    if not scan.dseg_tsv.exists():
        raise DataError("the atlas has no label table", path=scan.dseg_tsv, field="dseg.tsv",
                        fix="write the BIDS _dseg.tsv (index, name, region) beside the atlas")
    table = read_tsv(scan.dseg_tsv)
    if "index" not in table.columns:
        raise DataError("label table has no 'index' column", path=scan.dseg_tsv,
                        field="index", fix="use BIDS dseg columns: index, name[, region]")
    col = "region" if "region" in table.columns else "name"
    if col not in table.columns:
        raise DataError("label table has neither 'region' nor 'name'", path=scan.dseg_tsv,
                        field="region", fix="add a region (or name) column")
    names = {int(i): str(r) for i, r in zip(table["index"], table[col], strict=True)}
    return np.rint(labels).astype(np.int64), names


def region_curves(scan: Any, img: Any, regions: Mapping[str, Sequence[str]], plan: Any,
                  out_root: Path) -> tuple[np.ndarray, dict[int, str], TACTable, dict[str, Any]]:
    """Region curves of a scan, from its PET-space atlas or its subject's segmentation.

    A PET-space atlas is read by :func:`scan_atlas` (checked against the PET
    grid).

    Without ``[regions]`` a PET-space atlas's labels are pooled by the
    dseg.tsv ``region`` column (as before) and a segmentation's labels are
    regions of their own. With ``[regions]`` the labels' curves are pooled
    volume-weighted into the configured regions
    (:func:`petbind.study.regions.pool_curves`).

    Returns
    -------
    labels : ndarray (X, Y, Z)
        Labels on the PET grid (majority label for a segmentation).
    names : dict
        Label -> analysis region (labels of no region left out), for masks.
    tacs : TACTable
        One curve per analysis region, ``metadata["n_voxels"]`` its volume.
    info : dict
        The atlas, how it reached PET space and the regions, for provenance
        and Methods.
    """
    shape, affine = tuple(img.dataobj.shape[:3]), np.asarray(img.affine)
    seg = scan.segmentation
    if seg is None:
        labels, names = scan_atlas(scan, shape, affine)
        present = set(np.unique(labels).tolist())
        names = {k: v for k, v in names.items() if k in present}
        info: dict[str, Any] = {"source": str(scan.dseg), "space": "PET"}
        if plan is None:
            info["description"] = (
                f"Regions came from each scan's atlas in PET space ({scan.dseg.parent.name}/"
                f"{scan.dseg.name} and the like)"
                + ("; atlas labels were pooled into the configured regions weighted by "
                   "their volumes" if regions else ""))
        if not regions:
            return labels, names, img.region_means(labels, names=names), info
        from petbind.io.tables import read_tsv

        table = read_tsv(scan.dseg_tsv)
        by_name = {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True)
                   if int(i) in present}
        per_label = img.region_means(labels, names=by_name)
    else:
        from petbind.study.segmentation import label_curves, label_names

        transform = None
        if plan is not None:
            from petbind.preprocess.register import load_transform
            from petbind.study.preprocess import preprocess_files

            transform = load_transform(preprocess_files(out_root, scan.rel_dir, scan.stem,
                                                        plan.options.motion)["xfm_pet_t1w"])
        wanted = None
        if regions:
            wanted = sorted({n for v in resolve_regions(regions, label_names(seg)).values()
                             for n in v})
        md = {k: v for k, v in img.metadata.items() if k in ("TracerName", "isotope")
              and isinstance(v, str)}
        per_label, labels, by_name = label_curves(
            np.asarray(img.get_data(), np.float32), affine, seg, wanted, img.timing,
            transform=transform, metadata=md)
        info = {"source": str(seg.path), "table": str(seg.table), "space": "T1w",
                "mapping": "PET-to-T1w registration" if plan is not None else "affines",
                "method": "partial-volume fractions, 3x3x3 sub-samples",
                "description": seg.describe(plan is not None)}
        if not regions:
            return labels, by_name, per_label, info
    groups = resolve_regions(regions, list(dict.fromkeys(by_name.values())))
    tacs, _ = pool_curves(per_label, groups)
    names = {}
    for k, n in by_name.items():
        for region, members in groups.items():
            if n in members:
                names[k] = region
                break
    info["regions"] = groups
    return labels, names, tacs, info
