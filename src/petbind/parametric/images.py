"""Reading the inputs of a parametric map: the 4D image frame by frame, masks, the reference.

The image is read frame by frame as float32 (the full 4D array is never held in
float64); masks and atlases must lie on the PET grid (same shape and affine).
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from petbind.errors import DataError, FileFormatError, PetbindError
from petbind.timing import FrameTiming


# ----------------------------------------------------------------------------
# image access (frame by frame, float32)
# ----------------------------------------------------------------------------
def _image_path(image: Any) -> str | None:
    p = getattr(image, "path", None)
    return None if p is None else str(p)


def _as_image(image: Any) -> Any:
    """A DynamicImage from a DynamicImage or a path (via :func:`petbind.io.images.load`)."""
    if isinstance(image, str | os.PathLike):
        from petbind.io.images import load

        # BIDS NIfTI + sidecar, ECAT .v or a DICOM folder. A .nii.gz is not decompressed
        # on opening to check its CRC and length: every reader of this image here reads
        # the whole stream in order and checks it at its end (_frame_reader), so the scan
        # is decompressed once, not twice (issue 18)
        return load(image, verify_gzip=False)
    for attr in ("dataobj", "affine", "timing"):
        if not hasattr(image, attr):
            raise DataError(f"expected a DynamicImage or a path, got {type(image).__name__}",
                            field="image", fix="pass the result of petbind.io.bids.load_pet "
                            "or the path of a 4D PET NIfTI")
    shape = tuple(image.dataobj.shape)
    if len(shape) != 4:
        raise DataError(f"the PET image is {len(shape)}-D (shape {shape}); a parametric map "
                        "needs a 4D dynamic image", path=_image_path(image), field="shape",
                        fix="give the dynamic (4D) PET image, not a single frame or a sum")
    if shape[3] != image.timing.n_frames:
        raise DataError(f"image has {shape[3]} frames but the timing has "
                        f"{image.timing.n_frames}", path=_image_path(image),
                        field="FrameDuration", fix="check the sidecar's frame timing")
    return image


@contextlib.contextmanager
def _frame_reader(image: Any) -> Iterator[Callable[[int], NDArray[np.float32]]]:
    """Yield ``read(t) -> frame t as float32 (X, Y, Z)``, reading a file once, in order.

    Values are those of :meth:`petbind.image.DynamicImage.frame` (the
    reader's per-frame ``frame_scale`` applied). A nibabel proxy of a
    ``.nii.gz`` file re-opens and re-decompresses the stream from its start
    on every slice unless ``indexed_gzip`` is installed; reading the frames in
    order through one open handle decompresses the file once (each frame is
    contiguous on disk and the reads only seek forward).

    When every frame has been read, in order, from a ``.gz`` file, the rest of
    the stream is read and checked (:func:`petbind.io.verify.check_stream_end`:
    each gzip member's CRC-32 and length, and the size the header needs), so an
    image opened without the whole-stream check (:func:`_as_image`) is verified
    by the one decompression that reads it; a damaged file raises a
    :class:`~petbind.errors.FileFormatError` naming it.
    """
    from nibabel.arrayproxy import ArrayProxy

    dataobj = image.dataobj
    n_t = int(dataobj.shape[3])
    scale = np.asarray(getattr(image, "frame_scale", np.ones(n_t)), dtype=np.float64)
    file_like = getattr(dataobj, "file_like", None)
    if isinstance(dataobj, ArrayProxy) and isinstance(file_like, str | os.PathLike):
        spec = (dataobj.shape, dataobj.dtype, dataobj.offset, dataobj.slope, dataobj.inter)
        try:
            from petbind.io.images import open_stream

            opener = open_stream(file_like)  # .gz: ISA-L when installed, ~2x zlib's speed
        except OSError as exc:
            raise FileFormatError(f"cannot open the image: {exc}", path=file_like,
                                  fix="check that the file exists and is readable") from exc
        expected = int(dataobj.offset) + int(np.prod(dataobj.shape)) * dataobj.dtype.itemsize
        order: list[int] = []
        with opener as fobj:
            proxy = ArrayProxy(fobj, spec, order=dataobj.order)

            def read(t: int) -> NDArray[np.float32]:
                order.append(t)
                return _read_frame(proxy, t, scale[t], file_like)

            yield read
            if str(file_like).endswith(".gz") and order == list(range(n_t)):
                from petbind.io.verify import check_stream_end

                check_stream_end(fobj, file_like, expected_size=expected)
    else:
        yield lambda t: _read_frame(dataobj, t, scale[t], _image_path(image))


def _read_frame(dataobj: Any, t: int, scale: float, path: str | None) -> NDArray[np.float32]:
    try:
        raw = np.asarray(dataobj[..., t])
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        from petbind.io.verify import damaged_stream_error

        raise damaged_stream_error(path, exc, f"reading frame {t}: ") from None
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"cannot read frame {t}: {exc}", path=path, field="data",
                              fix="the file may be truncated; re-export it") from exc
    if scale != 1.0:
        raw = raw * scale
    return raw.astype(np.float32, copy=False)


def _as_mask(mask: Any, image: Any, what: str) -> tuple[NDArray[np.bool_], str | None]:
    """A boolean mask on the image grid from an array, a nibabel image or a path.

    Shape must equal the image's spatial shape; for images and paths the
    affine must equal the PET affine (within 1e-3 mm), else a DataError.
    """
    import nibabel as nib

    shape = tuple(image.dataobj.shape[:3])
    path: str | None = None
    affine = None
    if isinstance(mask, str | os.PathLike):
        path = str(mask)
        try:
            from petbind.io.bids import open_nifti

            img = open_nifti(path)  # verified: gzip CRC and length, scalar voxels
        except (OSError, nib.filebasedimages.ImageFileError) as exc:
            raise FileFormatError(f"cannot read the {what}: {exc}", path=path,
                                  fix="give a NIfTI image on the PET grid") from exc
        data = np.asanyarray(img.dataobj)
        affine = img.affine
    elif hasattr(mask, "affine") and hasattr(mask, "dataobj"):
        data = np.asanyarray(mask.dataobj)
        affine = mask.affine
        path = _image_path(mask) or getattr(mask, "get_filename", lambda: None)()
    else:
        data = np.asarray(mask)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != shape:
        raise DataError(f"the {what} has shape {data.shape} but the PET image has "
                        f"{shape}", path=path, field="shape",
                        fix=f"resample the {what} onto the PET grid")
    if affine is not None and not np.allclose(affine, image.affine, atol=1e-3):
        raise DataError(f"the {what}'s affine differs from the PET image's (different "
                        "voxel-to-world mapping)", path=path, field="affine",
                        fix=f"resample the {what} onto the PET grid (same affine)")
    out = np.asarray(data != 0) if data.dtype != bool else np.asarray(data)
    out = out & np.isfinite(data) if np.issubdtype(data.dtype, np.floating) else out
    return out.astype(bool, copy=False), path


def brain_mask(
    image: Any, *, fraction: float = 0.1, percentile: float = 99.0
) -> NDArray[np.bool_]:
    """Derive a brain mask from a dynamic image by a stated rule.

    Rule: the frame-duration-weighted mean image over all frames; a voxel is
    in the mask when it is finite in every frame and its mean exceeds
    ``fraction`` times the ``percentile``-th percentile of the positive
    finite mean values (a robust maximum, insensitive to a few hot voxels).

    Parameters
    ----------
    image : DynamicImage or path
        4D PET image (kBq/mL).
    fraction : float
        Threshold as a fraction of the robust maximum (0 < fraction < 1).
    percentile : float
        Percentile used as the robust maximum.

    Returns
    -------
    ndarray of bool, shape (X, Y, Z)
    """
    img = _as_image(image)
    _check_fraction(fraction)
    d = img.timing.duration
    mean = np.zeros(img.dataobj.shape[:3], dtype=np.float64)
    finite = np.ones(mean.shape, dtype=bool)
    with _frame_reader(img) as read:
        for t in range(img.timing.n_frames):
            _accumulate(read(t), d[t], mean, finite)
    return _mask_rule(mean, finite, d, fraction, percentile, _image_path(img))


def _check_fraction(fraction: float) -> None:
    if not 0 < fraction < 1:
        raise DataError(f"mask fraction must lie in (0, 1), got {fraction}",
                        field="mask_fraction", fix="use e.g. 0.1")


def _accumulate(f: NDArray[np.float32], d_t: float, mean: NDArray[np.float64],
                finite: NDArray[np.bool_]) -> None:
    """Add frame ``f`` (duration ``d_t``) to the running weighted sum and finite mask."""
    ok = np.isfinite(f)
    finite &= ok
    mean += d_t * np.where(ok, f, 0.0)


def _mask_rule(mean: NDArray[np.float64], finite: NDArray[np.bool_],
               d: NDArray[np.float64], fraction: float, percentile: float,
               path: str | None) -> NDArray[np.bool_]:
    """:func:`brain_mask`'s rule from the duration-weighted sum ``mean`` (divided here)."""
    mean /= d.sum()
    pos = mean[finite & (mean > 0)]
    if pos.size == 0:
        raise DataError("the image has no positive finite voxel; no brain mask can be "
                        "derived", path=path, field="data",
                        fix="check the image scaling, or give --mask")
    thr = fraction * float(np.percentile(pos, percentile))
    return finite & (mean > thr)


def _frames_in_order(image: Any) -> Iterator[tuple[int, NDArray[np.float32]]]:
    """``(t, frame t)`` for every frame, frame t + 1 read in a second thread meanwhile.

    The gzip back-ends release the GIL, so on 2 cores reading (decompressing)
    and the caller's work on the previous frame overlap. The file is read once,
    in order, and checked at its end (:func:`_frame_reader`).
    """
    from concurrent.futures import ThreadPoolExecutor

    n_t = image.timing.n_frames
    with _frame_reader(image) as read, ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="petbind-read") as pool:
        nxt = pool.submit(read, 0)
        for t in range(n_t):
            f = nxt.result()
            if t + 1 < n_t:
                nxt = pool.submit(read, t + 1)
            yield t, f


class _WholeScan:
    """Every frame of a scan, read in one pass, for a brain mask derived from it.

    Without a given brain mask the mask is derived from the scan's mean image
    (:func:`brain_mask`) before the mask voxels' curves can be gathered;
    reading the frames twice would decompress a ``.nii.gz`` twice. This keeps
    all voxels' curves, ``(n_frames, X*Y*Z)`` float32 (one float32 copy of the
    scan), while summing the mean image in the same pass; :meth:`gather` then
    packs the mask voxels' curves into the front of the same buffer. Values
    and arithmetic are those of :func:`brain_mask` and :func:`_gather`, so the
    maps equal those of the two-pass path bit for bit.
    """

    def __init__(self, image: Any) -> None:
        shape3 = tuple(image.dataobj.shape[:3])
        n_t = image.timing.n_frames
        d = image.timing.duration
        self.shape3 = shape3
        self.path = _image_path(image)
        self.duration = d
        self.all = np.empty((n_t, int(np.prod(shape3))), dtype=np.float32)
        self.mean = np.zeros(shape3, dtype=np.float64)
        self.finite = np.ones(shape3, dtype=bool)
        for t, f in _frames_in_order(image):
            _accumulate(f, d[t], self.mean, self.finite)
            self.all[t].reshape(shape3)[...] = f  # C order, as boolean indexing of f

    def brain_mask(self, fraction: float = 0.1, percentile: float = 99.0
                   ) -> NDArray[np.bool_]:
        """:func:`brain_mask` of the scan (once: the mean image is divided in place)."""
        _check_fraction(fraction)
        return _mask_rule(self.mean, self.finite, self.duration, fraction, percentile,
                          self.path)

    def gather(self, mask: NDArray[np.bool_], ref_mask: NDArray[np.bool_] | None
               ) -> tuple[NDArray[np.float32], NDArray[np.float64] | None]:
        """:func:`_gather`'s result, packed in place into this buffer (used up after)."""
        n_t = self.all.shape[0]
        m = mask.reshape(-1)
        rm = None if ref_mask is None else ref_mask.reshape(-1)
        v = int(m.sum())
        flat = self.all.reshape(-1)
        ref = None if rm is None else np.empty(n_t, dtype=np.float64)
        for t in range(n_t):
            row = self.all[t]
            if ref is not None:
                r = row[rm]
                r = r[np.isfinite(r)]
                ref[t] = np.mean(r, dtype=np.float64) if r.size else np.nan
            # row t starts at t * X*Y*Z >= t * v: the packed rows before it never reach
            # a row not yet read, and row t is copied out before it is overwritten
            flat[t * v:(t + 1) * v] = row[m]
        curves = flat[:n_t * v].reshape(n_t, v)
        self.all = np.empty((0, 0), dtype=np.float32)
        return curves, ref


#: Mask voxels from which :func:`_gather` copies each frame in two threads.
SPLIT_GATHER_VOXELS = 200_000


def _slabs(mask: NDArray[np.bool_], parts: int) -> list[tuple[int, int, int, int]]:
    """``(x0, x1, a, b)``: ``parts`` slabs of the first axis and their voxels' positions
    ``a:b`` in ``f[mask]`` (C order: the first axis is the slowest)."""
    counts = np.concatenate([[0], np.cumsum(mask.sum(axis=(1, 2)))])
    nx = mask.shape[0]
    cuts = sorted({0, nx, *(int(np.searchsorted(counts, counts[-1] * k / parts))
                            for k in range(1, parts))})
    return [(x0, x1, int(counts[x0]), int(counts[x1]))
            for x0, x1 in itertools.pairwise(cuts) if x1 > x0]


def _ref_mean(f: NDArray[np.float32], ref_mask: NDArray[np.bool_],
              f_index: NDArray[np.intp]) -> float:
    """Mean of the finite ``f[ref_mask]`` (float64), or NaN; ``f_index``: the reference
    voxels' positions in Fortran order, in the C order of ``ref_mask``, so that an
    F-ordered frame (as NIfTI stores it) is read at those few places instead of
    through a boolean mask over the whole frame (same values, same order)."""
    r = f.ravel(order="F")[f_index] if f.flags.f_contiguous else f[ref_mask]
    r = r[np.isfinite(r)]
    return float(np.mean(r, dtype=np.float64)) if r.size else np.nan


def _f_index(mask: NDArray[np.bool_]) -> NDArray[np.intp]:
    """Positions of ``mask``'s voxels (listed in C order) in the Fortran-order flat array."""
    return np.ravel_multi_index(np.nonzero(mask), mask.shape, order="F")


def _copy_slab(out: NDArray[np.float32], f: NDArray[np.float32], mask: NDArray[np.bool_],
               slab: tuple[int, int, int, int]) -> None:
    x0, x1, a, b = slab
    out[a:b] = f[x0:x1][mask[x0:x1]]


def _gather(
    image: Any, mask: NDArray[np.bool_], ref_mask: NDArray[np.bool_] | None
) -> tuple[NDArray[np.float32], NDArray[np.float64] | None]:
    """Curves of the mask voxels as a (n_frames, V) float32 array, and the ref mean curve.

    Row t is ``frame_t[mask]``. For large masks on 2+ CPUs two slabs of the
    first axis are copied at once (boolean indexing releases the GIL): the
    same values in the same places (C order, the first axis slowest).
    """
    from petbind.compute import usable_cpus

    n_t = image.timing.n_frames
    v = int(mask.sum())
    curves = np.empty((n_t, v), dtype=np.float32)
    ref = None if ref_mask is None else np.empty(n_t, dtype=np.float64)
    slabs = _slabs(mask, 2) if v >= SPLIT_GATHER_VOXELS and usable_cpus() > 1 else []
    ref_index = None if ref_mask is None else _f_index(ref_mask)
    with contextlib.ExitStack() as stack:
        pool = None
        if len(slabs) > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = stack.enter_context(ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="petbind-gather"))
        for t, f in _frames_in_order(image):
            if pool is not None:
                other = pool.submit(_copy_slab, curves[t], f, mask, slabs[1])
                _copy_slab(curves[t], f, mask, slabs[0])
            else:
                other = None
                curves[t] = f[mask]
            if ref is not None:
                ref[t] = _ref_mean(f, ref_mask, ref_index)
            if other is not None:
                other.result()
    return curves, ref


# ----------------------------------------------------------------------------
# reference curve
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RefCurve:
    """Where the reference curve comes from (resolved by :func:`parametric_maps`).

    Exactly one of ``mask`` (array, nibabel image or path on the PET grid),
    ``label`` (``(atlas, name)``: atlas image on the PET grid whose BIDS
    ``_dseg.tsv`` beside it maps ``index`` to ``name`` / ``region``) or
    ``tac`` (``(table path, column)`` or a 1-D array in kBq/mL, one value per
    frame) is given.
    """

    mask: Any = None
    label: tuple[Any, str] | None = None
    tac: Any = None

    @classmethod
    def from_spec(cls, kind: str, spec: str) -> RefCurve:
        """From the CLI: ``--ref-mask FILE``, ``--ref-label ATLAS:NAME``, ``--ref-tac TSV:COL``."""
        if kind == "mask":
            return cls(mask=spec)
        if ":" not in spec:
            raise PetbindError(f"expected FILE:NAME, got {spec!r}", field=f"--ref-{kind}",
                               fix=f"e.g. --ref-{kind} atlas.nii.gz:cerebellum")
        path, name = spec.rsplit(":", 1)
        return cls(label=(path, name)) if kind == "label" else cls(tac=(path, name))

    def describe(self) -> dict[str, Any]:
        """JSON-able description for sidecars."""
        if self.mask is not None:
            return {"kind": "mask", "source": _describe_src(self.mask)}
        if self.label is not None:
            return {"kind": "label", "atlas": _describe_src(self.label[0]),
                    "name": self.label[1]}
        src = self.tac
        if isinstance(src, tuple):
            return {"kind": "tac", "table": str(src[0]), "column": src[1]}
        return {"kind": "tac", "source": "array"}


def _describe_src(obj: Any) -> str:
    if isinstance(obj, str | os.PathLike):
        return str(obj)
    return _image_path(obj) or "array"


def _label_mask(image: Any, atlas: Any, name: str) -> tuple[NDArray[np.bool_], str | None]:
    """Voxels of atlas label ``name`` (a dseg ``name`` or ``region``, or an integer index)."""
    import nibabel as nib
    import pandas as pd

    path = str(atlas) if isinstance(atlas, str | os.PathLike) else _image_path(atlas)
    if isinstance(atlas, str | os.PathLike):
        try:
            from petbind.io.bids import open_nifti

            aimg = open_nifti(atlas)  # verified: gzip CRC and length, scalar voxels
        except (OSError, nib.filebasedimages.ImageFileError) as exc:
            raise FileFormatError(f"cannot read the atlas: {exc}", path=path,
                                  fix="give a label (dseg) NIfTI on the PET grid") from exc
    else:
        aimg = atlas
    labels = np.rint(np.asanyarray(aimg.dataobj)).astype(np.int64)
    _as_mask(aimg, image, "atlas")  # shape and affine checks
    if name.strip().lstrip("-").isdigit():
        return labels == int(name), path
    if path is None:
        raise DataError(f"label {name!r} needs the atlas's _dseg.tsv to be found",
                        field="--ref-label", fix="give the atlas as a file path")
    tsv = Path(path.removesuffix(".gz").removesuffix(".nii") + ".tsv")
    if not tsv.exists():
        raise FileFormatError("no label table beside the atlas", path=str(tsv),
                              field="--ref-label",
                              fix="add the BIDS _dseg.tsv (index, name) or give an index")
    from petbind.io.atlas import read_label_table

    table = read_label_table(tsv)  # index, name, region
    hit = np.zeros(len(table), dtype=bool)
    for col in ("name", "region"):
        if col in table.columns:
            hit |= table[col].astype(str).str.lower().to_numpy() == name.lower()
    if not hit.any():
        names = sorted(set(table.get("region", table.get("name", pd.Series())).astype(str)))
        raise DataError(f"label {name!r} is not in the atlas table", path=str(tsv),
                        field="--ref-label", fix=f"use one of: {', '.join(names)}")
    return np.isin(labels, table["index"].to_numpy()[hit]), path


def _tac_curve(tac: Any, timing: FrameTiming) -> tuple[NDArray[np.float64], str | None]:
    if isinstance(tac, tuple):
        from petbind.io.tables import read_tacs

        path, column = str(tac[0]), tac[1]
        table = read_tacs(path)
        if column not in list(table.regions):
            raise DataError(f"column {column!r} not in the TAC table", path=path,
                            field=column, fix=f"use one of: {', '.join(table.regions)}")
        if table.timing != timing:
            raise DataError("the TAC table's frames differ from the PET image's", path=path,
                            field="frame_start", fix="give a TAC with the image's frames")
        return np.asarray(table.curve(column), dtype=np.float64), path
    arr = np.asarray(tac, dtype=np.float64)
    if arr.shape != (timing.n_frames,):
        raise DataError(f"reference TAC has shape {arr.shape}, expected "
                        f"({timing.n_frames},): one value per frame", field="ref_tac",
                        fix="give the reference curve on the image's frames")
    return arr, None


def _check_ref(ref: NDArray[np.float64], where: str | None, timing: FrameTiming) -> None:
    if not np.all(np.isfinite(ref)):
        bad = int(np.flatnonzero(~np.isfinite(ref))[0])
        raise DataError(f"reference curve is not finite at frame {bad}", path=where,
                        field="reference", fix="check the reference region and the image")
    if np.sum(ref * timing.duration) <= 0:
        raise DataError("reference curve has no signal (mean activity <= 0)", path=where,
                        field="reference", fix="check the reference region lies in the brain")


def _ref_from_any(ref: Any) -> RefCurve:
    if isinstance(ref, str | os.PathLike):
        return RefCurve(mask=ref)
    if hasattr(ref, "dataobj"):
        return RefCurve(mask=ref)
    arr = np.asarray(ref)
    return RefCurve(tac=arr) if arr.ndim == 1 else RefCurve(mask=arr)
