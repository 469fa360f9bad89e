"""How the report shows voxel maps: colour limits, % change masking, and where the effect is.

A % change map ``100 (BP_drug - BP_base) / BP_base`` is dominated by voxels
whose baseline BP_ND is near zero (brain edge, white matter, CSF): a small
difference over a tiny denominator gives hundreds of percent, and a colour
scale fitted to them leaves the real effect (and the truth map beside it)
pale. So the report

1. shows % change only where the mean baseline BP_ND reaches
   :data:`MIN_BASELINE_BP` (other voxels are left blank and counted in the
   note); the statistics themselves (t maps, clusters) are not changed;
2. scales the colours symmetrically to ``max(|p1|, |p99|)``, the larger
   magnitude of the 1st and 99th percentiles of the shown voxels, so a
   handful of extreme voxels saturate instead of setting the scale.

It also says *where* an effect is, from the study's atlas on the statistics
grid (:func:`stat_atlas`): which regions every cluster covers (and, for
simulated data, the true % change in the cluster's voxels), a table of the
tracer's target regions (share of voxels above the cluster-forming threshold,
peak t, mean estimated and true % change), and the outlines of the target
regions for the viewer (:func:`region_outlines`). A t map's largest cluster can
lie anywhere; the target-region table answers the study's question region by
region, at voxel level, without a second statistical test.

Long module: this is the report's voxel section's data (colour limits, the
atlas on the statistics grid, cluster and target-region tables, the truth
comparison, region outlines), one section of the report as
``report/sections/*`` are the others; its HTML is in
:mod:`petbind.report.sections.voxelwise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Voxels with a mean baseline BP_ND below this are not shown in % change maps.
MIN_BASELINE_BP = 0.2
#: Percentiles whose larger magnitude sets the symmetric colour limit.
PERCENTILES = (1.0, 99.0)


@dataclass
class EffectDisplay:
    """A % change map ready to draw.

    Attributes
    ----------
    shown : ndarray
        The map, 0 outside the shown voxels.
    keep : ndarray of bool
        Voxels shown.
    vmin, vmax : float
        Colour limits (``-lim``, ``+lim``).
    p1, p99 : float
        The percentiles of the shown values the limit comes from.
    n_masked : int
        Voxels of the analysis mask hidden for low baseline BP_ND.
    """

    shown: NDArray
    keep: NDArray
    vmin: float
    vmax: float
    p1: float
    p99: float
    n_masked: int

    def note(self) -> str:
        """One sentence for the report."""
        hidden = (f" {self.n_masked} voxels of the mask with mean baseline BP_ND below "
                  f"{MIN_BASELINE_BP:g} are blank (a % change of a near-zero baseline is "
                  "noise)." if self.n_masked else "")
        return (f"Colour scale +-{self.vmax:.3g} %: the larger magnitude of the 1st and "
                f"99th percentiles ({self.p1:.3g}, {self.p99:.3g}) of the shown voxels."
                + hidden)


def effect_display(effect: NDArray, mask: NDArray, baseline_bp: NDArray | None
                   ) -> EffectDisplay:
    """Mask low-baseline voxels and choose robust symmetric colour limits.

    Parameters
    ----------
    effect : ndarray, shape (X, Y, Z)
        Mean per-subject % change.
    mask : ndarray of bool
        Analysis mask.
    baseline_bp : ndarray or None
        Mean baseline BP_ND on the same grid (None: no masking).
    """
    keep = np.asarray(mask, bool) & np.isfinite(effect)
    n_masked = 0
    if baseline_bp is not None and baseline_bp.shape == effect.shape:
        low = keep & ~(np.nan_to_num(baseline_bp) >= MIN_BASELINE_BP)
        if (keep & ~low).sum() >= 10:  # never hide (almost) everything
            n_masked = int(low.sum())
            keep = keep & ~low
    vals = effect[keep]
    if vals.size:
        p1, p99 = (float(x) for x in np.percentile(vals, PERCENTILES))
    else:
        p1, p99 = -1.0, 1.0
    lim = max(abs(p1), abs(p99))
    if not np.isfinite(lim) or lim <= 0:
        lim = 1.0
    return EffectDisplay(shown=np.where(keep, effect, 0.0), keep=keep, vmin=-lim, vmax=lim,
                         p1=p1, p99=p99, n_masked=n_masked)


def largest_cluster_peak(clusters: Any, shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """Voxel indices of the peak of the largest cluster (the slices the figures show).

    None (slices through the mask's centre) when there is no cluster table or
    cluster, or the peak lies outside ``shape``.
    """
    if clusters is None or len(clusters) == 0 or not {"peak_i", "peak_j", "peak_k",
                                                      "size_voxels"} <= set(clusters.columns):
        return None
    row = clusters.loc[clusters["size_voxels"].astype(float).idxmax()]
    ijk = tuple(int(row[c]) for c in ("peak_i", "peak_j", "peak_k"))
    if any(not 0 <= v < n for v, n in zip(ijk, shape[:3], strict=True)):
        return None
    return ijk  # type: ignore[return-value]


def voxel_methods_text(map_fwhm_mm: Any, pet_fwhm_mm: Any) -> str:
    """The Methods sentence on the voxel statistics, naming both smoothings (or their absence).

    Parameters
    ----------
    map_fwhm_mm : float or None
        ``statistics.voxel.smoothing_fwhm_mm``: Gaussian FWHM (mm) of the contrast maps.
    pet_fwhm_mm : float or None
        ``parametric.pet_fwhm_mm``: Gaussian FWHM (mm) of every PET frame inside the
        brain mask before the voxel fits.
    """
    def mm(v: Any) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return 0.0

    pet, maps = mm(pet_fwhm_mm), mm(map_fwhm_mm)
    fits = (f"Before the voxel fits every PET frame was smoothed with a {pet_fwhm_mm} mm FWHM "
            "Gaussian, normalised inside the brain mask (white matter and CSF, when excluded "
            "from the mask, neither gave nor received activity). " if pet > 0 else
            "The 4-D PET images were not smoothed before the voxel fits. ")
    return (fits + "Voxelwise, per-subject contrast maps of BP_ND"
            + (f" (smoothed with a {map_fwhm_mm} mm FWHM Gaussian inside the analysis mask)"
               if maps > 0 else " (not smoothed)")
            + " were tested with paired t maps; family-wise error was controlled by sign-flip "
            "permutation of the subjects' contrast maps (maximum |t| and maximum cluster "
            "size).")


# ----------------------------------------------------------------------------
# where: atlas on the statistics grid, cluster regions, target regions, outlines
# ----------------------------------------------------------------------------
#: Regions listed per cluster (the ones with most voxels in it).
MAX_CLUSTER_REGIONS = 3
#: Colours (RGB 0-255) of the region outlines in the viewer, in target order: first
#: those no colour map of the viewer has (the t and % change maps are red-yellow and
#: green-blue; the crosshair is green).
OUTLINE_COLOURS = ((255, 0, 255), (0, 255, 255), (255, 255, 255), (160, 120, 255),
                   (255, 150, 200), (0, 255, 0), (255, 255, 0), (255, 128, 0))


@dataclass
class StatAtlas:
    """Labels on a statistics grid and their region names.

    Attributes
    ----------
    labels : ndarray of int, shape (X, Y, Z)
    names : dict of int -> str
        Label index -> region (the ``region`` column of the dseg table, else ``name``).
    source : str
        The dseg file.
    """

    labels: NDArray
    names: dict[int, str]
    source: str

    def region_mask(self, region: str) -> NDArray:
        """Voxels of ``region`` (every label whose region is that name)."""
        idx = [k for k, v in self.names.items() if v == region]
        return np.isin(self.labels, idx)

    def regions_in(self, voxels: NDArray) -> list[tuple[str, int]]:
        """(region, voxel count) of the voxels, most first; unlabelled voxels as 'outside atlas'."""
        lab = self.labels[voxels]
        out: dict[str, int] = {}
        for k, n in zip(*np.unique(lab, return_counts=True), strict=True):
            name = self.names.get(int(k), "outside atlas")
            out[name] = out.get(name, 0) + int(n)
        return sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))


def _atlas_candidates(study: Any, tracer: str, template: bool) -> list[Path]:
    """dseg files that may hold the atlas of a statistics grid, most likely first.

    Template space: ``preprocess.atlas``, else the ``*_dseg.nii*`` beside
    ``preprocess.template`` (relative paths from the BIDS root). PET space:
    each scan's atlas as its provenance records it (``atlas.source``, the
    ``dseg`` input).
    """
    root = getattr(study, "dataset", None)

    def resolve(p: Any) -> Path | None:
        if not p:
            return None
        path = Path(str(p)).expanduser()
        if not path.is_absolute():
            if root is None:
                return None
            path = Path(root) / path
        return path

    out: list[Path] = []
    if template:
        pre = (getattr(study, "config", None) or {}).get("preprocess") or {}
        atlas = resolve(pre.get("atlas"))
        if atlas is not None:
            out.append(atlas)
        tpl = resolve(pre.get("template"))
        if tpl is not None and tpl.parent.is_dir():
            out += sorted(tpl.parent.glob("*_dseg.nii*"))
        return out
    for scan in getattr(study, "scans", []):
        if getattr(scan, "tracer", None) != tracer:
            continue
        prov = scan.provenance or {}
        src = (prov.get("atlas") or {}).get("source") if isinstance(prov.get("atlas"), dict) \
            else None
        dseg = ((prov.get("inputs") or {}).get("dseg") or {}).get("path")
        for p in (src, dseg):
            path = resolve(p)
            if path is not None and path not in out:
                out.append(path)
        if out:
            break
    return out


def stat_atlas(study: Any, tracer: str, shape: tuple[int, ...], affine: NDArray,
               template: bool = False) -> StatAtlas | None:
    """The study's atlas on a statistics grid, or None when none lies on that grid.

    Parameters
    ----------
    study : StudyOutputs
        The finished study (:mod:`petbind.report.build`): its scans' provenance,
        the BIDS root and the config.
    tracer : str
    shape, affine
        The statistics grid; an atlas is used only when its shape equals
        ``shape`` and its affine ``affine`` (within 1e-3 mm): it is never resampled.
    template : bool
        The statistics are in template space (preprocessing's template atlas).
    """
    from petbind.errors import PetbindError
    from petbind.io.bids import open_nifti
    from petbind.io.tables import read_tsv

    for path in _atlas_candidates(study, tracer, template):
        table = path.with_name(path.name.removesuffix(".gz").removesuffix(".nii") + ".tsv")
        if not path.is_file() or not table.is_file():
            continue
        try:
            img = open_nifti(path)
            data = np.asanyarray(img.dataobj)
            tab = read_tsv(table)
        except (PetbindError, OSError, ValueError):
            continue  # an unreadable atlas costs only the outlines and region columns
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if tuple(data.shape) != tuple(shape[:3]) or not np.allclose(img.affine, affine,
                                                                    atol=1e-3):
            continue
        col = "region" if "region" in tab.columns else "name"
        if "index" not in tab.columns or col not in tab.columns:
            continue
        try:
            names = {int(i): str(r) for i, r in zip(tab["index"], tab[col], strict=True)}
        except ValueError:
            continue
        return StatAtlas(np.rint(data).astype(np.int64), names, str(path))
    return None


def _components(t_map: NDArray, mask: NDArray, threshold: float) -> dict[int, NDArray]:
    """Supra-threshold components (26-connected), positive and negative, keyed by sign."""
    from scipy.ndimage import label

    out = {}
    for sign in (1, -1):
        out[sign], _ = label(np.asarray(mask, bool) & (sign * t_map > threshold),
                             structure=np.ones((3, 3, 3), dtype=bool))
    return out


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.0f} %" if total else "n/a"


def _finite_text(values: np.ndarray, stat: str, fmt: str) -> str:
    """``format(stat of the finite values, fmt)``, or ``"n/a"`` when none is finite."""
    vals = values[np.isfinite(values)]
    if not vals.size:
        return "n/a"
    return format(float(np.mean(vals) if stat == "mean" else np.median(vals)), fmt)


def cluster_regions(clusters: Any, t_map: NDArray, mask: NDArray, threshold: float | None,
                    atlas: StatAtlas | None, truth: NDArray | None = None,
                    truth_t: NDArray | None = None) -> list[dict[str, str]] | None:
    """Per cluster row: the atlas regions it covers and, with a truth map, the true % change.

    Clusters are found again as in :func:`petbind.stats.voxel.sign_flip_test`
    (``sign x t > threshold`` in the mask, 26-connected) and matched to the
    table's rows by their peak voxel.

    Returns
    -------
    list of dict or None
        One dict per row of ``clusters`` with ``regions`` ("NAcc 9 (100 %)", the
        :data:`MAX_CLUSTER_REGIONS` largest) and, with ``truth``,
        ``true_pct_change`` (mean true % change over the cluster's voxels), with
        ``truth_t`` (:func:`true_paired_t`) ``true_t`` (its median there),
        and ``_top`` (the region with most voxels, not for display); None
        without an atlas, a threshold or peak columns.
    """
    need = {"peak_i", "peak_j", "peak_k", "sign"}
    if (atlas is None or threshold is None or clusters is None or len(clusters) == 0
            or not need <= set(clusters.columns)):
        return None
    comps = _components(t_map, mask, float(threshold))
    rows = []
    for _, row in clusters.iterrows():
        try:
            ijk = tuple(int(float(row[c])) for c in ("peak_i", "peak_j", "peak_k"))
            sign = 1 if float(row["sign"]) > 0 else -1
            lab = int(comps[sign][ijk])
        except (ValueError, IndexError):
            lab = 0
        if lab == 0:
            rows.append({"regions": "n/a", "_top": "",
                         **({"true_pct_change": "n/a"} if truth is not None else {}),
                         **({"true_t": "n/a"} if truth_t is not None else {})})
            continue
        vox = comps[sign] == lab
        n = int(vox.sum())
        parts = [f"{r} {c} ({_pct(c, n)})"
                 for r, c in atlas.regions_in(vox)[:MAX_CLUSTER_REGIONS]]
        out = {"regions": ", ".join(parts), "_top": atlas.regions_in(vox)[0][0]}
        if truth is not None:
            out["true_pct_change"] = _finite_text(truth[vox], "mean", "+.1f")
        if truth_t is not None:
            out["true_t"] = _finite_text(truth_t[vox], "median", ".2f")
        rows.append(out)
    return rows


def target_table(t_map: NDArray, effect: NDArray | None, mask: NDArray,
                 threshold: float | None, atlas: StatAtlas | None, targets: Sequence[str],
                 truth: NDArray | None = None, shown: NDArray | None = None,
                 truth_t: NDArray | None = None) -> list[dict[str, str]] | None:
    """Target regions at voxel level: extent above threshold, peak t, mean % change, truth.

    Parameters
    ----------
    t_map, effect : ndarray, shape (X, Y, Z)
        t map and mean % change map of a contrast.
    mask : ndarray of bool
        Analysis mask.
    threshold : float or None
        Cluster-forming |t|.
    atlas : StatAtlas or None
    targets : sequence of str
        Regions to list (the tracer's ``target_regions``; [] = every region in the mask).
    truth : ndarray, optional
        Mean true % change (simulated data).
    shown : ndarray of bool, optional
        Voxels whose % change is shown (baseline BP_ND high enough); the mean
        % change is taken over them (all mask voxels of the region without it).
    truth_t : ndarray, optional
        Paired t of the true changes (:func:`true_paired_t`); its median over
        the region is the ``true t`` column.

    Returns
    -------
    list of dict or None
        Rows ``region, voxels, above +t (%), below -t (%), peak t, mean % change,
        true % change, true t``; None without an atlas or a threshold.
    """
    if atlas is None or threshold is None:
        return None
    mask = np.asarray(mask, bool)
    names = list(targets) or sorted({atlas.names[k] for k in np.unique(atlas.labels[mask])
                                     if int(k) in atlas.names})
    rows = []
    for region in names:
        vox = atlas.region_mask(region) & mask
        n = int(vox.sum())
        if n == 0:
            continue
        t = t_map[vox]
        peak = float(t[np.argmax(np.abs(t))])
        row = {"region": region, "voxels": str(n),
               "above +t": _pct(int((t > threshold).sum()), n),
               "below -t": _pct(int((t < -threshold).sum()), n),
               "peak t": f"{peak:.2f}"}
        if effect is not None:
            sel = vox & shown if shown is not None and (vox & shown).any() else vox
            row["mean % change"] = _finite_text(effect[sel], "mean", "+.1f")
        if truth is not None:
            row["true % change"] = _finite_text(truth[vox], "mean", "+.1f")
        if truth_t is not None:
            row["true t"] = _finite_text(truth_t[vox], "median", ".2f")
        rows.append(row)
    return rows or None


def region_labels(atlas: StatAtlas, regions: Sequence[str]
                  ) -> tuple[NDArray[np.uint8], list[str]]:
    """The named regions as one label image: ``k + 1`` on the k-th region found, 0 elsewhere.

    (Filled regions, e.g. for a legend or a mask; the viewer draws :func:`region_outlines`.)
    """
    out = np.zeros(atlas.labels.shape, dtype=np.uint8)
    found: list[str] = []
    for region in regions:
        vox = atlas.region_mask(region) & (out == 0)
        if not vox.any() or len(found) >= 255:
            continue
        found.append(region)
        out[vox] = len(found)
    return out, found


def region_outlines(atlas: StatAtlas, regions: Sequence[str]
                    ) -> tuple[NDArray[np.uint8], list[str]]:
    """Outline voxels of each region, for drawing over maps.

    A voxel is on a region's outline when it belongs to the region and one of
    its six face neighbours does not (the region minus its 6-connected
    erosion); a region thinner than three voxels is all outline. (NiiVue
    resamples every layer onto the first one's grid, so outlines finer than
    the statistics grid would be lost; the viewer draws them half transparent
    so that the map stays visible under small regions.)

    Returns
    -------
    outlines : ndarray of uint8, shape (X, Y, Z)
        ``k + 1`` on the outline of the k-th region found, 0 elsewhere.
    found : list of str
        The regions drawn, in that order (regions absent from the atlas are left out).
    """
    from scipy.ndimage import binary_erosion, generate_binary_structure

    cross = generate_binary_structure(3, 1)
    out = np.zeros(atlas.labels.shape, dtype=np.uint8)
    found: list[str] = []
    for region in regions:
        vox = atlas.region_mask(region)
        if not vox.any() or len(found) >= 255:
            continue
        edge = vox & ~binary_erosion(vox, structure=cross, border_value=0)
        found.append(region)
        out[edge & (out == 0)] = len(found)
    return out, found


def outline_colours(n: int) -> list[list[int]]:
    """RGB colours of ``n`` outlines (:data:`OUTLINE_COLOURS`, repeated)."""
    return [list(OUTLINE_COLOURS[i % len(OUTLINE_COLOURS)]) for i in range(n)]


def cut_through_targets(clusters: Any, region_rows: list[dict[str, str]] | None,
                        targets: Sequence[str], shape: tuple[int, ...]
                        ) -> tuple[int, int, int] | None:
    """Peak of the largest cluster whose largest region is a target region, if any.

    The figures cut through it (else through the largest cluster,
    :func:`largest_cluster_peak`): the study's question is about its target
    regions, named in the config before the data were seen.
    """
    if not region_rows or clusters is None or len(clusters) != len(region_rows):
        return None
    best = None
    for (_, row), reg in zip(clusters.iterrows(), region_rows, strict=True):
        if reg.get("_top") not in targets:
            continue
        size = float(row["size_voxels"])
        if best is None or size > best[0]:
            best = (size, tuple(int(float(row[c])) for c in ("peak_i", "peak_j", "peak_k")))
    if best is None or any(not 0 <= v < n for v, n in zip(best[1], shape[:3], strict=True)):
        return None
    return best[1]  # type: ignore[return-value]


def _contrast_terms(contrast: str) -> list[tuple[str, str]] | None:
    """``"A - B"`` -> [(A, B)]; ``"(A - B) - (C - D)"`` -> [(A, B), (C, D)]; else None."""
    import re

    m = re.match(r"^\s*\(?\s*([\w.]+)\s*-\s*([\w.]+)\s*\)?"
                 r"(?:\s*-\s*\(\s*([\w.]+)\s*-\s*([\w.]+)\s*\))?\s*$", contrast)
    if m is None:
        return None
    a, b, c, d = m.groups()
    return [(a, b)] + ([(c, d)] if c else [])


def true_paired_t(dataset: Path, tracer: str, contrast: str, subjects: Sequence[str],
                  shape: tuple[int, ...], affine: NDArray) -> NDArray | None:
    """Paired t of the simulator's true BP_ND changes at every voxel (what a noise-free,
    partial-volume-free voxel analysis of these subjects would give).

    The per-subject true contrast ``BP_A - BP_B`` (or ``(A - B) - (C - D)``)
    from the simulator's true maps (:func:`petbind.simulate.writer.true_map_path`),
    tested against 0 over subjects like the estimated maps. A region whose
    true |t| is below the cluster-forming threshold cannot be found at voxel
    level with these subjects even from perfect images.

    Returns
    -------
    ndarray or None
        NaN where the true changes have no spread; None when a true map is
        missing, on another grid, or there are fewer than 2 subjects.
    """
    from scipy.stats import ttest_1samp

    from petbind.errors import PetbindError
    from petbind.io.bids import open_nifti
    from petbind.simulate.writer import true_map_path

    terms = _contrast_terms(contrast)
    if terms is None or len(subjects) < 2:
        return None

    def true_map(sub: str, cond: str) -> NDArray | None:
        path = true_map_path(dataset, sub, cond, tracer, "bpnd")
        if not path.is_file():
            return None
        try:
            img = open_nifti(path)
        except (PetbindError, OSError):
            return None
        data = np.asarray(img.dataobj, dtype=np.float64)
        if data.shape != tuple(shape[:3]) or not np.allclose(img.affine, affine, atol=1e-3):
            return None
        return data

    diffs = []
    for sub in subjects:
        total = None
        for k, (a, b) in enumerate(terms):
            va, vb = true_map(sub, a), true_map(sub, b)
            if va is None or vb is None:
                return None
            d = va - vb
            total = d if k == 0 else total - d
        diffs.append(total)
    with np.errstate(all="ignore"):
        t = ttest_1samp(np.stack(diffs), 0.0, axis=0).statistic
    return np.asarray(t, dtype=np.float64)


def truth_sentence(rows: list[dict[str, str]] | None, threshold: float | None,
                   n_subjects: int | None) -> str | None:
    """One sentence comparing the target regions found at voxel level with the truth's.

    A region is *detectable* when the paired t of its true changes exceeds the
    cluster-forming threshold (``true t`` column), and *found* when at least
    one of its voxels lies beyond the threshold with the truth's sign.
    """
    if not rows or threshold is None or "true t" not in rows[0]:
        return None

    def num(v: str) -> float:
        try:
            return float(v)
        except ValueError:
            return float("nan")

    detectable, found, extra = [], [], []
    for r in rows:
        tt = num(r["true t"])
        above = num(r["above +t"].rstrip(" %"))
        below = num(r["below -t"].rstrip(" %"))
        if np.isfinite(tt) and abs(tt) > threshold:
            detectable.append(r["region"])
            if (above if tt > 0 else below) > 0:
                found.append(f"{r['region']} ({r['above +t'] if tt > 0 else r['below -t']} "
                             "of its voxels)")
        elif (above > 0 or below > 0):
            extra.append(r["region"])
    n = f" with {n_subjects} subjects" if n_subjects else ""
    text = (f"Truth: the target regions whose true changes reach |t| > {threshold:.2f}{n} "
            f"(detectable even from perfect images) are "
            + (", ".join(detectable) if detectable else "none") + "; found at voxel level: "
            + (", ".join(found) if found else "none") + ".")
    if extra:
        text += (" Voxels beyond the threshold also lie in " + ", ".join(extra)
                 + " (true t below the threshold there: a smaller true change, or noise).")
    return text


@dataclass
class VoxelWhere:
    """Where a contrast's voxel effect lies: what the report adds to a voxel section.

    Attributes
    ----------
    cluster_rows : list of dict or None
        Per cluster row: ``regions`` (and ``true_pct_change``), see :func:`cluster_regions`.
    targets : list of dict or None
        :func:`target_table` rows.
    truth_note : str or None
        :func:`truth_sentence`.
    cut : tuple of 3 int or None
        Where the figures cut (:func:`cut_through_targets`).
    atlas : StatAtlas or None
    """

    cluster_rows: list[dict[str, str]] | None
    targets: list[dict[str, str]] | None
    truth_note: str | None
    cut: tuple[int, int, int] | None
    atlas: StatAtlas | None


def voxel_where(clusters: Any, t_map: NDArray, mask: NDArray, effect: NDArray | None,
                threshold: float | None, atlas: StatAtlas | None, targets: Sequence[str],
                truth_pct: NDArray | None = None, truth_t: NDArray | None = None,
                shown: NDArray | None = None, n_subjects: int | None = None) -> VoxelWhere:
    """Cluster regions, the target-region table, the truth sentence and the figure cut."""
    rows = cluster_regions(clusters, t_map, mask, threshold, atlas, truth_pct, truth_t)
    table = target_table(t_map, effect, mask, threshold, atlas, targets, truth_pct, shown,
                         truth_t)
    return VoxelWhere(cluster_rows=rows, targets=table,
                      truth_note=truth_sentence(table, threshold, n_subjects),
                      cut=cut_through_targets(clusters, rows, targets, t_map.shape),
                      atlas=atlas)


def labels_b64(labels: NDArray, affine: NDArray) -> str:
    """A uint8 label volume as gzip-compressed NIfTI-1 in base64 (no scaling: exact labels;
    intent ``label``, which NiiVue draws without interpolating between labels)."""
    import base64
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), np.asarray(affine, float))
    img.header.set_xyzt_units("mm")
    img.header.set_intent("label")  # NIFTI_INTENT_LABEL (1002): drawn voxel by voxel
    return base64.b64encode(gzip.compress(img.to_bytes(), mtime=0)).decode("ascii")


def _tracer_cfg(study: Any, tracer: str) -> dict[str, Any]:
    tr = ((getattr(study, "config", None) or {}).get("tracers") or {}).get(tracer) or {}
    return tr if isinstance(tr, dict) else {}


def section_where(study: Any, tm: dict[str, Any], side: dict[str, Any], contrast: str,
                  t_map: NDArray, affine: NDArray, threshold: float | None, clusters: Any,
                  in_template: bool, atlases: dict[Any, Any], *, load: Any, mean_map: Any,
                  true_effect: Any, native: Any) -> VoxelWhere:
    """:func:`voxel_where` for one t map of a finished study (called by report.build).

    Parameters
    ----------
    study : StudyOutputs
    tm : dict
        The t map's entry (``tracer``, ``model``, ``folder``, ``prefix``).
    side : dict
        The t map's sidecar (``Subjects``).
    contrast : str
        The contrast expression.
    t_map, affine, threshold, clusters
        The t map, its grid, the cluster-forming |t| and the cluster table.
    in_template : bool
        Statistics in template space.
    atlases : dict
        Cache of :func:`stat_atlas` results, shared by a report's sections.
    load, mean_map, true_effect, native
        report.build's image reader, mean-map, true-effect-map and native-truth
        functions (passed in: this module sits below report.build).
    """
    key = (tm["tracer"], in_template, t_map.shape)
    if key not in atlases:
        atlases[key] = stat_atlas(study, tm["tracer"], t_map.shape, affine, in_template)
    atlas = atlases[key]
    mask_path = tm["folder"] / f"{tm['prefix']}_mask.nii.gz"
    mask = load(mask_path)[0] > 0 if mask_path.is_file() else t_map != 0
    effect_path = tm["folder"] / f"{tm['prefix']}_stat-effect.nii.gz"
    effect = load(effect_path)[0] if effect_path.is_file() else None
    if mask.shape != t_map.shape:
        mask = t_map != 0
    if effect is not None and effect.shape != t_map.shape:
        effect = None
    subjects = [str(s) for s in side.get("Subjects") or study.subjects]
    truth_pct = truth_t = None
    if (atlas is not None and study.simulated and study.dataset is not None
            and not (in_template and native(study.dataset, subjects))):
        truth_pct = true_effect(study.dataset, tm["tracer"], contrast, subjects, affine)
        if truth_pct is not None and truth_pct.shape != t_map.shape:
            truth_pct = None
        truth_t = true_paired_t(study.dataset, tm["tracer"], contrast, subjects,
                                t_map.shape, affine)
    shown = None
    if effect is not None:
        cfg = getattr(study, "config", None) or {}
        baseline = (cfg.get("statistics") or {}).get("baseline_condition", "baseline")
        base = mean_map(study, tm["tracer"], tm["model"], effect.shape, baseline,
                        space="template" if in_template else None)
        shown = effect_display(effect, mask, base).keep
    targets = [str(r) for r in _tracer_cfg(study, tm["tracer"]).get("target_regions") or []]
    return voxel_where(clusters, t_map, mask, effect, threshold, atlas, targets, truth_pct,
                       truth_t, shown, len(subjects))


def outline_volume(study: Any, tracer: str, atlas: StatAtlas,
                   affine: NDArray) -> dict[str, Any] | None:
    """The viewer volume of the outlines of a tracer's target regions.

    The tracer's ``target_regions`` (every atlas region except the reference
    and ``exclude_regions`` when it names none); None when none is in the atlas.
    """
    tr = _tracer_cfg(study, tracer)
    targets = [str(r) for r in tr.get("target_regions") or []]
    if not targets:
        skip = {str(tr.get("reference_region", ""))} | {str(r) for r in
                                                        tr.get("exclude_regions") or []}
        targets = sorted({v for v in atlas.names.values() if v not in skip})
    labels, found = region_outlines(atlas, targets)
    if not found:
        return None
    return {"name": f"{tracer}: region outlines", "kind": "outline", "tracer": tracer,
            "b64": labels_b64(labels, affine), "regions": found,
            "colours": outline_colours(len(found))}
