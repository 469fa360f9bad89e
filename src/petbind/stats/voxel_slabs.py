"""Largest supra-threshold cluster of sign flips computed over slabs of planes, merged exactly.

The sign-flip test's tasks (:func:`petbind.stats.voxel_null.flip_null_tasks`)
hold every subject's contrast value at their voxels, ``n x V x 8`` bytes;
over the whole mask that grows with the cohort (64 subjects x 252,240 voxels:
123 MiB, 500 subjects: about 1 GB per task). Cut into **slabs** (contiguous
ranges of planes along the grid's first axis, whose voxels are a contiguous
range of the mask's voxels in C order) a task holds ``n x V_slab`` only.

The maximum |t| of a flip is the maximum over slabs. A cluster (26-connected
component of ``t > thr`` or of ``-t > thr``, as :func:`scipy.ndimage.label`
with a 3 x 3 x 3 structure) can cross a slab's faces, so each slab reports,
for every flip and sign, a compact summary (:func:`slab_clusters`):

- the largest component that touches none of the faces shared with a
  neighbouring slab ("inner": final as it is);
- the sizes of the components that touch a shared face, and the sparse lists
  of the supra-threshold voxels on its first and last plane (position in the
  plane, component), in increasing order of position.

:func:`merge_clusters` joins the components of adjacent slabs: a voxel
``(p, j, k)`` on a slab's last plane ``p`` touches ``(p + 1, j + dj, k + dk)``,
``dj, dk`` in ``{-1, 0, 1}``, on the next slab's first plane (26-connectivity),
and the joined components are the connected components of that graph
(:func:`scipy.sparse.csgraph.connected_components`) with summed sizes. Every
component of the whole volume restricted to a slab is a union of that slab's
components, joined only through such face contacts, so the merged sizes are
the whole volume's, as integers: equal to labelling the whole volume
(``tests/stats/test_voxel_slabs.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Slab:
    """A range of planes of the mask's grid and the voxels in it.

    Attributes
    ----------
    index : int
        Position among the slabs of a plan (0, 1, ...).
    planes : (int, int)
        ``[first, end)`` along the grid's first axis.
    voxels : (int, int)
        ``[first, end)`` of the mask's voxels in C order (columns of ``d``).
    seam_lo, seam_hi : bool
        The plane before ``planes[0]`` (after ``planes[1] - 1``) belongs to the
        previous (next) slab of the plan: the first (last) plane's
        supra-threshold voxels are reported for the merge.
    crop : ((int, int), (int, int))
        ``[first, end)`` along the grid's second and third axes that every
        slab of the plan labels (the bounding box of the whole mask there).
    """

    index: int
    planes: tuple[int, int]
    voxels: tuple[int, int]
    seam_lo: bool
    seam_hi: bool
    crop: tuple[tuple[int, int], tuple[int, int]]

    @property
    def n_voxels(self) -> int:
        """Voxels of the mask in the slab."""
        return self.voxels[1] - self.voxels[0]

    def mask_of(self, mask: NDArray) -> NDArray:
        """The slab's part of ``mask`` (planes x cropped second and third axes), a copy."""
        (y0, y1), (z0, z1) = self.crop
        return np.array(mask[self.planes[0]:self.planes[1], y0:y1, z0:z1], dtype=bool)


def plan_slabs(mask: NDArray, n_subjects: int, *, slab_bytes: int, min_slabs: int = 1,
               cuts: Sequence[int] | None = None) -> list[Slab]:
    """Slabs of whole planes holding at most ``slab_bytes`` of contrast values each.

    Planes are packed in order while a slab's ``n_subjects x V_slab x 8`` bytes
    stay within ``slab_bytes`` and its voxels within ``ceil(V / min_slabs)`` (so
    that there are at least ``min_slabs`` slabs where the planes allow); a plane
    that alone exceeds the budget is a slab of its own (the budget is then
    ``n_subjects x`` that plane's voxels ``x 8`` bytes). Planes without a mask
    voxel before the first or after the last voxel belong to no slab; slabs
    without a voxel are dropped.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
    n_subjects : int
    slab_bytes : int
        Budget of one slab's ``(n, V_slab)`` float64 values.
    min_slabs : int
        Cut into at least this many slabs where the planes allow.
    cuts : sequence of int, optional
        Explicit first planes of the slabs (increasing, the first 0); overrides
        the packing.

    Returns
    -------
    list of Slab
        In plane order, covering every voxel of ``mask`` once.
    """
    mask = np.asarray(mask, dtype=bool)
    per_plane = mask.reshape(mask.shape[0], -1).sum(axis=1)
    total = int(per_plane.sum())
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    crop = ((int(ys[0]), int(ys[-1]) + 1), (int(zs[0]), int(zs[-1]) + 1)) if total else \
        ((0, mask.shape[1]), (0, mask.shape[2]))
    if cuts is None:
        cap = min(max(1, int(slab_bytes) // (8 * max(1, n_subjects))),
                  max(1, -(-total // max(1, int(min_slabs)))))
        cuts, cur = [0], 0
        for p, c in enumerate(per_plane.tolist()):
            if cur and c and cur + c > cap:
                cuts.append(p)
                cur = 0
            cur += c
    edges = [*(int(c) for c in cuts), mask.shape[0]]
    if edges[0] != 0:
        raise ValueError(f"the first slab must start at plane 0: {list(cuts)}")
    ranges = []
    first = 0
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            raise ValueError(f"slab cuts must increase within [0, {mask.shape[0]}): {cuts}")
        v = int(per_plane[lo:hi].sum())
        if v:
            nz = np.flatnonzero(per_plane[lo:hi])
            ranges.append((lo + int(nz[0]), lo + int(nz[-1]) + 1, first, first + v))
        first += v
    slabs = []
    for i, (lo, hi, v0, v1) in enumerate(ranges):
        seam_lo = i > 0 and ranges[i - 1][1] == lo
        seam_hi = i + 1 < len(ranges) and ranges[i + 1][0] == hi
        slabs.append(Slab(i, (lo, hi), (v0, v1), seam_lo, seam_hi, crop))
    return slabs


@dataclass
class SlabClusters:
    """A slab's clusters of a range of flips, both signs (see :func:`slab_clusters`).

    Rows are ``2 f`` (``t > thr``) and ``2 f + 1`` (``-t > thr``) of the range's flip ``f``.

    Every array holds non-negative integers in the smallest of uint16, uint32
    and int64 that holds its values (what the workers send back: about 8 bytes
    per supra-threshold voxel on a shared face and per component touching one).

    Attributes
    ----------
    inner : ndarray, shape (R,)
        Largest component touching no shared face (0: none).
    sizes : ndarray
        Sizes of the components touching a shared face, row after row.
    size_off : ndarray, shape (R + 1,)
        Row ``r``'s components are ``sizes[size_off[r]:size_off[r + 1]]``.
    lo_pos, hi_pos : ndarray
        Flat positions (C order, within the crop) of the supra-threshold voxels
        of the first / last plane, increasing within a row; empty without a seam.
    lo_comp, hi_comp : ndarray
        Their component: index into the row's part of ``sizes``.
    lo_off, hi_off : ndarray, shape (R + 1,)
        Row offsets of the position lists.
    """

    inner: NDArray
    sizes: NDArray
    size_off: NDArray
    lo_pos: NDArray
    lo_comp: NDArray
    lo_off: NDArray
    hi_pos: NDArray
    hi_comp: NDArray
    hi_off: NDArray

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (what a task sends back besides its maxima)."""
        return int(sum(getattr(self, f).nbytes for f in self.__dataclass_fields__))


class _Rows:
    """Accumulates :class:`SlabClusters` rows."""

    def __init__(self) -> None:
        self.inner: list[int] = []
        self.sizes: list[NDArray] = []
        self.n_sizes = [0]
        self.face: dict[str, tuple[list[NDArray], list[NDArray], list[int]]] = {
            "lo": ([], [], [0]), "hi": ([], [], [0])}

    def add(self, inner: int, sizes: NDArray | None = None,
            faces: dict[str, tuple[NDArray, NDArray]] | None = None) -> None:
        self.inner.append(inner)
        if sizes is not None:
            self.sizes.append(sizes)
        self.n_sizes.append(self.n_sizes[-1] + (0 if sizes is None else sizes.size))
        for side, (pos, comp, off) in self.face.items():
            got = None if faces is None else faces.get(side)
            if got is not None:
                pos.append(got[0])
                comp.append(got[1])
            off.append(off[-1] + (0 if got is None else got[0].size))

    def done(self) -> SlabClusters:
        lo, hi = self.face["lo"], self.face["hi"]
        return SlabClusters(
            inner=_small(np.asarray(self.inner)), sizes=_small_cat(self.sizes),
            size_off=_small(np.asarray(self.n_sizes)),
            lo_pos=_small_cat(lo[0]), lo_comp=_small_cat(lo[1]), lo_off=_small(np.asarray(lo[2])),
            hi_pos=_small_cat(hi[0]), hi_comp=_small_cat(hi[1]), hi_off=_small(np.asarray(hi[2])))


def _small(a: NDArray) -> NDArray:
    """Non-negative integers as uint16, uint32 or int64, the smallest that holds them."""
    top = int(a.max()) if a.size else 0
    for dtype in (np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return a.astype(dtype, copy=False)
    return a.astype(np.int64, copy=False)


def _small_cat(parts: list[NDArray]) -> NDArray:
    return _small(np.concatenate(parts)) if parts else np.zeros(0, np.uint16)


def slab_clusters(tmaps: NDArray, mask_s: NDArray, threshold: float, seam_lo: bool,
                  seam_hi: bool, rows: _Rows | None = None) -> _Rows:
    """Add the cluster summaries of a block of flips of one slab to ``rows``.

    Parameters
    ----------
    tmaps : ndarray, shape (B, V_slab)
        t of B flips at the slab's voxels (NaN counts as below threshold).
    mask_s : ndarray of bool
        The slab's mask (:meth:`Slab.mask_of`).
    threshold : float
        Cluster-forming |t|.
    seam_lo, seam_hi : bool
        Report the first / last plane (:class:`Slab`).
    rows : optional
        Summaries of earlier blocks to append to (a new accumulator when None).

    Returns
    -------
    _Rows
        Call ``.done()`` for the :class:`SlabClusters`.
    """
    from scipy.ndimage import label

    rows = _Rows() if rows is None else rows
    vol = np.zeros(mask_s.shape, dtype=bool)
    lab = np.zeros(mask_s.shape, dtype=np.int32)
    for t in tmaps:
        for sign in (1.0, -1.0):
            above = sign * t > threshold
            if not above.any():
                rows.add(0)
                continue
            vol[:] = False
            vol[mask_s] = above
            k = label(vol, structure=_STRUCTURE_26, output=lab)
            sizes = np.bincount(lab.ravel(), minlength=k + 1)
            planes = {}
            if seam_lo:
                planes["lo"] = lab[0].ravel()
            if seam_hi:
                planes["hi"] = lab[-1].ravel()
            if not planes:
                rows.add(int(sizes[1:].max()))
                continue
            touch = np.zeros(k + 1, dtype=bool)
            for plane in planes.values():
                touch[plane] = True
            touch[0] = False
            inner = int(sizes[1:][~touch[1:]].max(initial=0))
            ids = np.flatnonzero(touch)
            local = np.zeros(k + 1, dtype=np.int32)
            local[ids] = np.arange(ids.size, dtype=np.int32)
            faces = {}
            for side, plane in planes.items():
                pos = np.flatnonzero(plane)
                faces[side] = (pos, local[plane[pos]])
            rows.add(inner, sizes[ids], faces)
    return rows


def _row_of(off: NDArray) -> NDArray:
    """Row of every entry of a CSR offset array (int64)."""
    return np.repeat(np.arange(off.size - 1, dtype=np.int64), np.diff(off.astype(np.int64)))


def merge_clusters(parts: Sequence[SlabClusters], slabs: Sequence[Slab]) -> NDArray:
    """Largest cluster of every flip from the summaries of every slab (one flip range).

    Parameters
    ----------
    parts : sequence of SlabClusters
        One per slab of ``slabs``, in order, for the same flips.
    slabs : sequence of Slab
        The plan (:func:`plan_slabs`).

    Returns
    -------
    ndarray of float64, shape (F,)
        Voxels in the largest cluster of either sign of every flip; 0 when no
        voxel passes.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_rows = parts[0].inner.size
    best = np.zeros(n_rows, dtype=np.int64)
    # (the summaries' arrays are uint16 / uint32 / int64: sums below are made in int64)
    for p in parts:
        np.maximum(best, p.inner, out=best)
    counts = [p.sizes.size for p in parts]
    bases = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n_nodes = int(bases[-1])
    if n_nodes:
        (y0, y1), (z0, z1) = slabs[0].crop
        ny, nz = y1 - y0, z1 - z0
        plane = ny * nz
        ea: list[NDArray] = []
        eb: list[NDArray] = []
        for s in range(len(slabs) - 1):
            if not slabs[s].seam_hi:
                continue
            a, b = parts[s], parts[s + 1]
            rb = _row_of(b.lo_off)
            if not rb.size:
                continue
            key_b = rb * plane + b.lo_pos.astype(np.int64)  # increasing: rows, then positions
            node_b = bases[s + 1] + b.size_off[rb].astype(np.int64) + b.lo_comp
            ra = _row_of(a.hi_off)
            node_a = bases[s] + a.size_off[ra].astype(np.int64) + a.hi_comp
            ja, ka = np.divmod(a.hi_pos.astype(np.int64), nz)
            for dj in (-1, 0, 1):
                for dk in (-1, 0, 1):
                    j2, k2 = ja + dj, ka + dk
                    key = ra * plane + j2 * nz + k2
                    i = np.minimum(np.searchsorted(key_b, key), key_b.size - 1)
                    hit = (j2 >= 0) & (j2 < ny) & (k2 >= 0) & (k2 < nz) & (key_b[i] == key)
                    ea.append(node_a[hit])
                    eb.append(node_b[i[hit]])
        src = np.concatenate(ea) if ea else np.zeros(0, np.int64)
        dst = np.concatenate(eb) if eb else np.zeros(0, np.int64)
        graph = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)),
                           shape=(n_nodes, n_nodes))
        n_comp, comp = connected_components(graph, directed=False)
        node_size = np.concatenate([p.sizes for p in parts])
        total = np.bincount(comp, weights=node_size, minlength=n_comp).astype(np.int64)
        node_row = np.concatenate([_row_of(p.size_off) for p in parts])
        comp_row = np.empty(n_comp, dtype=np.int64)
        comp_row[comp] = node_row
        np.maximum.at(best, comp_row, total)
    return best.reshape(-1, 2).max(axis=1).astype(np.float64)
