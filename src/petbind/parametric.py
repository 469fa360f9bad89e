"""Parametric (voxelwise) maps: mask, chunk, fit, write.

A parametric map is the model engine applied to a batch of voxel curves: the
same ``model.fit(batch)`` that fits a table of regions fits every voxel of a
brain mask, in memory-bounded chunks, optionally on dask. Nothing here
re-implements a model (docs/architecture.md, principle 1).

Memory. Voxel curves are gathered frame by frame from the (lazy) 4D image,
as float32, for the voxels of the brain mask only; the full 4D array is never
held in float64. Each chunk is converted to float64 for the fit and released,
so peak memory is about the masked curves in float32 (at most the 4D input in
float32) plus ``chunk_voxels`` curves in float64 per worker plus the maps.

Rules that this module states and the sidecars record:

- **Brain mask** (when none is given): the duration-weighted mean image over
  all frames; voxels above ``mask_fraction`` (default 0.1) times its robust
  maximum (the 99th percentile of its positive finite values) and finite in
  every frame (:func:`brain_mask`).
- **Voxels that are not fitted** (counted in :attr:`ParametricResult.counts`):
  a non-finite value in any frame (``n_nonfinite``), or no signal: a
  duration-weighted mean activity <= 0 (``n_no_signal``). Voxels the model
  reports as invalid, or with a non-finite parameter, are ``n_fit_failed``.
  None of them gets a number in any map; warnings from numerical edge cases
  are silenced and counted instead.
- **k2' for MRTM2 / SRTM2 / Logan** (the policy vocabulary of
  :mod:`petbind.models.k2prime`; :func:`estimate_k2prime`): a user value,
  ``None`` / ``"none"`` (Logan without its k2' term), or
  ``"auto"``: MRTM (SRTM for ``srtm2``) fitted to the mean curve of a
  high-binding region: a region the user gives (mask, or atlas label), else
  the :data:`K2PRIME_TOP_FRACTION` (2 %) of fitted voxels with the highest
  late tissue-to-reference ratio (frames whose mid-time lies in the second
  half of the scan); or ``"pooled"``: the median of voxelwise MRTM (SRTM)
  k2' over that same high-binding set (Ichise et al. 2003). The fraction is
  small on purpose: a late ratio also rises where washout is slow (white
  matter), and on the simulated macaque a 10 % cut took in white matter and
  lowered k2' by 15 %, while 2 % kept to the striatum, thalamus and midbrain.

References
----------
Ichise M, et al. Linearized reference tissue parametric imaging methods:
application to [11C]DASB positron emission tomography studies of the
serotonin transporter in human brain. J Cereb Blood Flow Metab
2003;23:1096-1112.
Gunn RN, et al. Parametric imaging of ligand-receptor binding in PET using a
simplified reference region model. NeuroImage 1997;6:279-287.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind import __version__
from petbind.compute import open_engine, parse_scheduler, usable_cpus
from petbind.errors import DataError, FileFormatError, ModelError, PetbindError
from petbind.models.catalogue import CATALOGUE, model_names, parameter_units
from petbind.timing import FrameTiming

#: Models a parametric map can use (the catalogue's models with ``work_bytes``).
MAP_MODELS = model_names("reference", mappable=True)
#: Models given the map's k2' (fixed or estimated) unless it is None / "none".
K2PRIME_MODELS = tuple(s.name for s in CATALOGUE if s.mappable and s.k2prime_by_default)
#: Fraction of voxels (highest late tissue/reference ratio) forming the default
#: high-binding region for k2' "auto" / "pooled".
K2PRIME_TOP_FRACTION = 0.02
#: Largest number of voxels per chunk chosen automatically.
MAX_CHUNK_VOXELS = 100_000
#: Smallest number of voxels per chunk chosen automatically (per-call overhead).
MIN_CHUNK_VOXELS = 2_000
#: Working memory of one model fit, bytes per voxel and frame, beyond the float32
#: curves (``ModelSpec.work_bytes`` of the catalogue, which says how it was measured).
WORK_BYTES = {s.name: int(s.work_bytes) for s in CATALOGUE if s.work_bytes is not None}
#: Floor of the working-memory budget (bytes) for small images.
MIN_WORK_BUDGET = 64 * 2**20


# ----------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------
@dataclass
class ParametricResult:
    """Voxelwise maps from one dynamic image.

    Attributes
    ----------
    model : str
        Model name (``"mrtm2"``, ...).
    maps : dict of str -> ndarray, shape (X, Y, Z), float32
        One map per model parameter (``bp_nd``, ``r1``, ...), NaN where no
        valid fit exists.
    se : dict of str -> ndarray, shape (X, Y, Z), float32
        Standard errors where the model gives them (NaN elsewhere).
    valid : ndarray of bool, shape (X, Y, Z)
        Voxels with a valid fit (every map is finite there).
    mask : ndarray of bool, shape (X, Y, Z)
        The brain mask that was fitted.
    affine : ndarray, shape (4, 4)
        Voxel-to-world transform of the input image.
    timing : FrameTiming
        Frames of the input image.
    ref_tac : ndarray, shape (n_frames,)
        Reference-region curve used (kBq/mL).
    k2prime : float or None
        k2' used (1/min) for models that need it.
    counts : dict of str -> int
        ``n_mask``, ``n_fitted``, ``n_valid``, ``n_nonfinite``,
        ``n_no_signal``, ``n_fit_failed``.
    settings : dict
        Every setting used (model settings, chunking, scheduler, mask rule,
        reference and k2' provenance), for the sidecars.
    inputs : dict of str -> str
        Input files and their SHA-256.
    elapsed_s : float
        Wall time of the fits.
    cpu_s : float
        CPU time of this process during the fits (all threads; on a machine
        shared with other work, ``n_fitted / cpu_s`` is the throughput per
        core that the load does not hide).
    """

    model: str
    maps: dict[str, NDArray[np.float32]]
    se: dict[str, NDArray[np.float32]]
    valid: NDArray[np.bool_]
    mask: NDArray[np.bool_]
    affine: NDArray[np.float64]
    timing: FrameTiming
    ref_tac: NDArray[np.float64]
    k2prime: float | None
    counts: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def bp_nd(self) -> NDArray[np.float32]:
        """The BP_ND map (DVR - 1 for Logan, SUVR - 1 for SUVR)."""
        return self.maps["bp_nd"]

    def summary(self) -> str:
        """One line: model, voxels fitted / valid / masked out, k2', time."""
        c = self.counts
        k2 = "" if self.k2prime is None else f", k2'={self.k2prime:.4g}/min"
        rate = c["n_fitted"] / self.elapsed_s if self.elapsed_s > 0 else float("nan")
        return (f"{self.model}: {c['n_valid']}/{c['n_mask']} voxels valid "
                f"(non-finite {c['n_nonfinite']}, no signal {c['n_no_signal']}, "
                f"fit failed {c['n_fit_failed']}){k2}, {self.elapsed_s:.2f} s "
                f"({rate:,.0f} voxels/s)")


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

        return load(image)  # BIDS NIfTI + sidecar, ECAT .v or a DICOM folder
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
        with opener as fobj:
            proxy = ArrayProxy(fobj, spec, order=dataobj.order)
            yield lambda t: _read_frame(proxy, t, scale[t], file_like)
    else:
        yield lambda t: _read_frame(dataobj, t, scale[t], _image_path(image))


def _read_frame(dataobj: Any, t: int, scale: float, path: str | None) -> NDArray[np.float32]:
    try:
        raw = np.asarray(dataobj[..., t])
    except (OSError, EOFError, ValueError, zlib.error) as exc:
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
    if not 0 < fraction < 1:
        raise DataError(f"mask fraction must lie in (0, 1), got {fraction}",
                        field="mask_fraction", fix="use e.g. 0.1")
    d = img.timing.duration
    mean = np.zeros(img.dataobj.shape[:3], dtype=np.float64)
    finite = np.ones(mean.shape, dtype=bool)
    with _frame_reader(img) as read:
        for t in range(img.timing.n_frames):
            f = read(t)
            ok = np.isfinite(f)
            finite &= ok
            mean += d[t] * np.where(ok, f, 0.0)
    mean /= d.sum()
    pos = mean[finite & (mean > 0)]
    if pos.size == 0:
        raise DataError("the image has no positive finite voxel; no brain mask can be "
                        "derived", path=_image_path(img), field="data",
                        fix="check the image scaling, or give --mask")
    thr = fraction * float(np.percentile(pos, percentile))
    return finite & (mean > thr)


def _gather(
    image: Any, mask: NDArray[np.bool_], ref_mask: NDArray[np.bool_] | None
) -> tuple[NDArray[np.float32], NDArray[np.float64] | None]:
    """Curves of the mask voxels as a (n_frames, V) float32 array, and the ref mean curve."""
    n_t = image.timing.n_frames
    v = int(mask.sum())
    curves = np.empty((n_t, v), dtype=np.float32)
    ref = None if ref_mask is None else np.empty(n_t, dtype=np.float64)
    from concurrent.futures import ThreadPoolExecutor

    # frame t + 1 is read (decompressed) in a second thread while frame t is gathered:
    # the gzip back-ends release the GIL, so on 2 cores reading and gathering overlap
    with _frame_reader(image) as read, ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="petbind-read") as pool:
        nxt = pool.submit(read, 0)
        for t in range(n_t):
            f = nxt.result()
            if t + 1 < n_t:
                nxt = pool.submit(read, t + 1)
            curves[t] = f[mask]
            if ref is not None:
                r = f[ref_mask]
                r = r[np.isfinite(r)]
                ref[t] = np.mean(r, dtype=np.float64) if r.size else np.nan
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


# ----------------------------------------------------------------------------
# models (the engine's registry; nothing re-implemented here)
# ----------------------------------------------------------------------------
def _make_model(name: str, timing: FrameTiming, ref_tac: NDArray[np.float64],
                k2prime: float | None, settings: Mapping[str, Any]) -> Any:
    """Configure a model of the engine's registry for ``ref_tac`` on ``timing``."""
    from petbind.models import make_model

    kw = dict(settings)
    if k2prime is not None:
        kw["k2prime"] = k2prime
    return make_model(name, timing, ref_tac, **kw)


def _fit_params(model: Any, curves: NDArray) -> Any:
    """``model.fit`` on the curves with numerical warnings silenced.

    The float32 view is passed as it is: models that screen their input
    (``screens``) cast it to float64 block by block inside their kernel (the
    frames-by-voxels layout of the gathered curves is the one they read
    fastest); the others cast the chunk to float64 themselves.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(curves)


def _late_ratio(curves_t: NDArray[np.float32], ref: NDArray[np.float64],
                timing: FrameTiming) -> NDArray[np.float64]:
    """Duration-weighted late (mid >= half the scan) tissue / reference ratio per voxel."""
    late = timing.mid >= 0.5 * timing.end[-1]
    w = timing.duration * late
    num = np.einsum("t,tv->v", w, curves_t, dtype=np.float64)
    return num / float(np.dot(w, ref))


def estimate_k2prime(
    curves: ArrayLike,
    ref_tac: ArrayLike,
    timing: FrameTiming,
    *,
    model: str = "mrtm2",
    method: str = "auto",
    top_fraction: float = K2PRIME_TOP_FRACTION,
    region: ArrayLike | None = None,
    usable: ArrayLike | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[float, dict[str, Any]]:
    """Estimate k2' (1/min) for MRTM2 / SRTM2 / Logan from voxel curves.

    The voxel-specific part only: which voxels form the high-binding region
    (a user region, else the top ``top_fraction`` by late tissue/reference
    ratio, never an unusable row) and whether they are averaged (``auto``)
    or fitted one by one (``pooled``). The fit and the pooling are the
    engine's :func:`petbind.models.k2prime.estimate_k2prime`, the same
    function the region-level pipeline calls.

    Parameters
    ----------
    curves : array_like, shape (V, n_frames)
        Voxel (or region) curves in kBq/mL, all finite.
    ref_tac : array_like, shape (n_frames,)
        Reference curve (kBq/mL).
    timing : FrameTiming
        Frames.
    model : str
        The model k2' is for: ``srtm2`` uses SRTM for the estimate (Wu &
        Carson 2002); every other model uses MRTM (Ichise et al. 2003).
    method : {"auto", "pooled"}
        ``"auto"``: fit the mean curve of the high-binding voxels; ``"pooled"``:
        the median of voxelwise MRTM k2' over the valid high-binding voxels.
    top_fraction : float
        Fraction of voxels (highest late tissue-to-reference ratio) forming
        the high-binding region, when ``region`` is not given.
    region : array_like of bool, shape (V,), optional
        Voxels of a user-chosen high-binding region instead.
    usable : array_like of bool, shape (V,), optional
        Rows that may be used (default all); the others (non-finite, no
        signal) are never selected. Lets a caller pass a view of all its
        curves instead of a filtered copy.
    settings : mapping, optional
        Settings passed to the model used for the estimate (window, weights).

    Returns
    -------
    k2prime : float
        Estimated k2' in 1/min.
    info : dict
        How it was obtained (method, model used, number of voxels), for sidecars.
    """
    ref = np.asarray(ref_tac, dtype=np.float64)
    c = np.asarray(curves)
    if c.ndim != 2 or c.shape[1] != timing.n_frames:
        raise DataError(f"curves must be (V, {timing.n_frames}), got {c.shape}",
                        field="curves", fix="give voxel curves on the image's frames")
    ok = (np.ones(c.shape[0], dtype=bool) if usable is None
          else np.asarray(usable, dtype=bool))
    if region is not None:
        sel = np.flatnonzero(np.asarray(region, dtype=bool) & ok)
        rule = "user region"
    else:
        if not 0 < top_fraction <= 1:
            raise DataError(f"top_fraction must lie in (0, 1], got {top_fraction}",
                            field="top_fraction", fix="use e.g. 0.02")
        with np.errstate(invalid="ignore"):
            ratio = np.where(ok, _late_ratio(c.T, ref, timing), -np.inf)
        n_top = min(max(1, round(top_fraction * int(ok.sum()))), int(ok.sum()))
        sel = np.argpartition(-ratio, n_top - 1)[:n_top] if n_top else np.zeros(0, int)
        rule = (f"top {top_fraction:g} of voxels by late (mid >= half the scan) "
                "tissue/reference ratio")
    if sel.size == 0:
        raise DataError("the high-binding region for k2' has no voxels", field="k2prime",
                        fix="give k2' as a number or a larger region")
    from petbind.models.k2prime import K2PrimePolicy
    from petbind.models.k2prime import estimate_k2prime as engine_estimate

    # the catalogue's estimator for ``model``; "mrtm" / "srtm" name it directly
    est_model = K2PrimePolicy("auto").estimator(model) if model not in ("mrtm", "srtm") \
        else model
    kw = dict(settings or {})
    kw.pop("k2prime", None)
    info: dict[str, Any] = {"method": method, "model": est_model, "region_rule": rule,
                            "n_voxels": int(sel.size)}
    if method == "auto":
        region_tac = np.mean(c[sel], axis=0, dtype=np.float64)[None, :]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k2, _ = engine_estimate(timing, ref, region_tac, method=est_model, **kw)
    elif method == "pooled":
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k2, eng = engine_estimate(timing, ref, np.asarray(c[sel], dtype=np.float64),
                                      method=est_model, high_binding=np.arange(sel.size),
                                      **kw)
        info["n_valid"] = len(eng["selected"])
        info["pool"] = "median"
    else:
        raise ModelError(f"unknown k2' method {method!r}", field="k2prime",
                         fix="use a number, 'auto' or 'pooled'")
    info["k2prime"] = k2
    return k2, info


# ----------------------------------------------------------------------------
# chunked fitting, in-process or on dask
# ----------------------------------------------------------------------------
ChunkOut = tuple[dict[str, NDArray[np.float32]], dict[str, NDArray[np.float32]],
                 NDArray[np.bool_]]


def _fit_chunk(model: Any, block: NDArray, drop: tuple[str, ...]) -> ChunkOut:
    """Fit one (n, n_frames) block; float32 parameters, SEs and validity."""
    fit = _fit_params(model, block)
    valid = np.asarray(fit.valid, dtype=bool).reshape(-1).copy()
    n = valid.size
    params: dict[str, NDArray[np.float32]] = {}
    for k, v in fit.params.items():
        if k in drop:
            continue
        a = np.broadcast_to(v, (n,)).astype(np.float32)
        valid &= np.isfinite(a)
        params[k] = a
    se = {k: np.broadcast_to(v, (n,)).astype(np.float32)
          for k, v in fit.se.items() if k in params}
    bad = ~valid
    if bad.any():
        for d in (params, se):
            for a in d.values():
                a[bad] = np.nan
    return params, se, valid


class _Sink:
    """Flat float32 outputs, one per parameter and SE, filled as chunks finish."""

    def __init__(self, n: int, first: ChunkOut) -> None:
        self.params = {k: np.full(n, np.nan, dtype=np.float32) for k in first[0]}
        self.se = {k: np.full(n, np.nan, dtype=np.float32) for k in first[1]}
        self.valid = np.zeros(n, dtype=bool)

    def put(self, a: int, b: int, out: ChunkOut) -> None:
        for dst, src in ((self.params, out[0]), (self.se, out[1])):
            for k, v in src.items():
                if k in dst:
                    dst[k][a:b] = v
        self.valid[a:b] = out[2]


def _run_chunks(
    model: Any,
    block: Callable[[int, int], NDArray],
    ranges: list[tuple[int, int]],
    sink: _Sink,
    drop: tuple[str, ...],
    engine: Any,
    tick: Callable[[int], None],
) -> str:
    """Fit every ``(a, b)`` range of curves on ``engine`` and store the results in ``sink``.

    In-process and on threads (:attr:`petbind.compute.Engine.shares_memory`)
    each task reads its block (a view or a small copy of the gathered curves)
    and writes its own rows of the outputs; on a cluster the blocks travel to
    the workers and the results are stored as they come back. Chunks are
    independent, so the outputs do not depend on the scheduler or the chunk
    size.
    """
    from petbind.compute import Task

    if engine.shares_memory:
        def task(a: int, b: int) -> int:
            sink.put(a, b, _fit_chunk(model, block(a, b), drop))
            return b - a

        tasks = [Task(f"petbind-parametric-chunk-{i}", task, (a, b))
                 for i, (a, b) in enumerate(ranges)]
        engine.run(tasks, lambda _t, n: tick(n))
        return engine.describe()
    m = engine.scatter(model)
    where = {}
    tasks = []
    for i, (a, b) in enumerate(ranges):
        key = f"petbind-parametric-chunk-{i}"
        where[key] = (a, b)
        tasks.append(Task(key, _fit_chunk, (m, block(a, b), drop)))

    def store(t: Any, out: ChunkOut) -> None:
        a, b = where[t.key]
        sink.put(a, b, out)
        tick(b - a)

    engine.run(tasks, store)
    return engine.describe()


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread while chunks run (measured faster, and no oversubscription).

    The products inside the fits are small (n_frames x n_frames or x basis
    size); OpenBLAS's own threads cost more than they give there, and with
    one dask thread per CPU they would oversubscribe the machine.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _auto_chunk(model: str, n_good: int, n_frames: int, n_workers: int,
                input_bytes: int) -> int:
    """Voxels per chunk: working memory of all workers within half the float32 input.

    ``n_workers * chunk * n_frames * WORK_BYTES[model] <= max(input / 2, 64 MiB)``,
    clipped to [:data:`MIN_CHUNK_VOXELS`, :data:`MAX_CHUNK_VOXELS`] and to an
    equal share per worker, so that every worker has a chunk.
    """
    per_voxel = n_frames * WORK_BYTES.get(model, 200)
    budget = max(input_bytes // 2, MIN_WORK_BUDGET)
    chunk = budget // (per_voxel * max(n_workers, 1))
    chunk = int(np.clip(chunk, MIN_CHUNK_VOXELS, MAX_CHUNK_VOXELS))
    share = -(-n_good // max(n_workers, 1))
    return max(1, min(chunk, share))


# ----------------------------------------------------------------------------
# the public entry point
# ----------------------------------------------------------------------------
def _sha256(path: str | os.PathLike) -> str:
    from petbind.io.files import sha256_file

    return sha256_file(path)


def _hash_inputs(paths: list[str | None], known: Mapping[str, str] | None = None
                 ) -> dict[str, str]:
    out: dict[str, str] = dict(known or {})
    for p in paths:
        if p is None or p in out or not Path(p).is_file():
            continue
        out[p] = _sha256(p)
        for side in (Path(p.removesuffix(".gz").removesuffix(".nii") + ".json"),):
            if side.is_file() and str(side) != p:
                out[str(side)] = _sha256(side)
    return out


def _background(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` started in a thread; ``.result()`` waits for it (hashlib and the gzip
    back-ends release the GIL, so this overlaps with work in the calling thread)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="petbind-io")
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


def parametric_maps(
    image: Any,
    *,
    model: str = "mrtm2",
    ref_curve: RefCurve | ArrayLike | str | os.PathLike,
    mask: Any = None,
    k2prime: float | str | None = "auto",
    k2prime_region: Any = None,
    chunk_voxels: int | None = None,
    scheduler: Any = None,
    mask_fraction: float = 0.1,
    model_settings: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ParametricResult:
    """Fit a reference-tissue model to every voxel of a brain mask.

    Parameters
    ----------
    image : DynamicImage or path
        4D PET image in kBq/mL, decay-corrected to injection (as
        :func:`petbind.io.bids.load_pet` returns it); a path is loaded with it.
    model : str
        One of :data:`MAP_MODELS` (``mrtm2``, ``srtm2``, ``bfsrtm``, ``srtm``,
        ``mrtm``, ``logan``, ``suvr``).
    ref_curve : RefCurve, array_like or path
        Reference region: a :class:`RefCurve`, a 1-D TAC (kBq/mL per frame),
        a 3-D boolean mask on the PET grid, or the path of a mask image.
    mask : array_like, nibabel image or path, optional
        Brain mask on the PET grid (same shape and affine). Default: derived
        by :func:`brain_mask` with ``mask_fraction``.
    k2prime : float, "auto", "pooled", "median", "mrtm@...", "none" or None
        The k2' policy (:mod:`petbind.models.k2prime`) for ``mrtm2``/``srtm2``/
        ``logan`` (ignored by the other models): k2' in 1/min; ``"auto"`` /
        ``"pooled"`` (= ``"median"``) estimate it (:func:`estimate_k2prime`);
        ``"mrtm"`` / ``"srtm"`` fit that model to the mean curve of
        ``k2prime_region``. ``None`` or ``"none"`` runs ``logan`` without the
        k2' term (and is refused for ``mrtm2``/``srtm2``). The policy is
        recorded in the sidecars (``K2PrimeSource``).
    k2prime_region : array_like, image, path or (atlas, name), optional
        A high-binding region for ``"auto"`` / ``"pooled"``: a mask on the PET
        grid or an atlas label as for :class:`RefCurve`; default: the top 2 %
        of voxels by late tissue/reference ratio (see module docs).
    chunk_voxels : int, optional
        Voxels per fitted chunk. Default: chosen so that the working memory of
        all workers stays within half the 4D input in float32 (at least
        64 MiB), between 2,000 and 100,000 voxels, and every worker has a
        chunk (:func:`_auto_chunk`).
    scheduler : None, a ``--scheduler`` word or distributed.Client
        Where chunks run (:func:`petbind.compute.parse_scheduler`). ``None``:
        dask's threaded scheduler with one worker per CPU this process may use
        (in-process when there is one CPU or one chunk); ``"sync"``:
        in-process, one chunk after another; ``"threads:N"``, ``"local[:N]"``,
        a dask scheduler address (``"tcp://host:8786"``) or a
        ``distributed.Client``: there. Results do not depend on it.
    mask_fraction : float
        Fraction of the robust maximum for the derived brain mask.
    model_settings : mapping, optional
        Further model settings (window, weights, t*, basis grid ...), passed
        to the model engine unchanged.
    progress : callable, optional
        ``progress(done_voxels, total_voxels)``, called as chunks finish.

    Returns
    -------
    ParametricResult

    Raises
    ------
    DataError
        Image not 4D; mask or reference mask of another shape or affine;
        empty brain or reference mask; reference curve without signal.
    ModelError
        Unknown model; k2' that cannot be estimated.
    """
    if model not in MAP_MODELS:
        raise ModelError(f"unknown model {model!r} for parametric maps", field="model",
                         fix=f"use one of: {', '.join(MAP_MODELS)}")
    sched = parse_scheduler(scheduler, default="threads" if usable_cpus() > 1 else "sync",
                            where="scheduler")
    if chunk_voxels is not None and int(chunk_voxels) < 1:
        raise DataError(f"chunk_voxels must be >= 1, got {chunk_voxels}",
                        field="chunk_voxels", fix="use e.g. 100000")
    img = _as_image(image)
    timing: FrameTiming = img.timing
    settings_m = dict(model_settings or {})
    paths: list[str | None] = [_image_path(img)]
    # the image's SHA-256 (a second pass over the file) runs beside the reading and fitting
    image_hashes = _background(_hash_inputs, paths[:1])

    # -- brain mask
    if mask is None:
        bmask = brain_mask(img, fraction=mask_fraction)
        mask_desc: dict[str, Any] = {
            "rule": f"duration-weighted mean image > {mask_fraction:g} x its 99th "
                    "percentile (positive finite voxels), finite in every frame"}
    else:
        bmask, mpath = _as_mask(mask, img, "brain mask")
        paths.append(mpath)
        mask_desc = {"source": mpath or "array"}
    if not bmask.any():
        raise DataError("the brain mask has no voxels", path=mask_desc.get("source"),
                        field="mask", fix="check the mask (or lower mask_fraction)")

    # -- reference
    ref_spec = ref_curve if isinstance(ref_curve, RefCurve) else _ref_from_any(ref_curve)
    ref_mask = None
    ref_where: str | None = None
    if ref_spec.mask is not None:
        ref_mask, ref_where = _as_mask(ref_spec.mask, img, "reference mask")
    elif ref_spec.label is not None:
        ref_mask, ref_where = _label_mask(img, *ref_spec.label)
    if ref_mask is not None and not ref_mask.any():
        raise DataError("the reference region has no voxels", path=ref_where,
                        field="reference", fix="check the reference mask / label name")
    paths.append(ref_where)

    curves_t, ref = _gather(img, bmask, ref_mask)
    if ref is None:
        ref, ref_where = _tac_curve(ref_spec.tac, timing)
        paths.append(ref_where)
    _check_ref(ref, ref_where, timing)

    # -- voxels that cannot be fitted
    n_mask = curves_t.shape[1]
    finite = np.all(np.isfinite(curves_t), axis=0)
    with np.errstate(invalid="ignore"):
        signal = np.einsum("t,tv->v", timing.duration, curves_t, dtype=np.float64) > 0
    good = finite & signal
    counts = {"n_mask": int(n_mask), "n_nonfinite": int((~finite).sum()),
              "n_no_signal": int((finite & ~signal).sum())}

    # -- k2'
    k2_used: float | None = None
    k2_info: dict[str, Any] = {}
    policy = _map_policy(k2prime)
    if model in K2PRIME_MODELS and policy.kind != "none":
        if policy.estimates:
            if policy.kind == "region" and k2prime_region is None:
                raise ModelError(f"k2' policy {policy.text!r} needs a region", field="k2prime",
                                 fix="give k2prime_region (--k2prime-region): a mask or an "
                                 "atlas label")
            region = None
            if k2prime_region is not None:
                if isinstance(k2prime_region, tuple):
                    rmask, rpath = _label_mask(img, *k2prime_region)
                else:
                    rmask, rpath = _as_mask(k2prime_region, img, "k2' region")
                paths.append(rpath)
                region = rmask[bmask]
            # a view of all mask voxels (no filtered copy), unusable rows excluded
            method = "pooled" if policy.kind == "median" else "auto"
            k2_used, k2_info = estimate_k2prime(
                curves_t.T, ref, timing, model=policy.model or model, method=method,
                region=region, usable=good, settings=settings_m)
            k2_info = policy.describe(**k2_info)
        else:
            k2_used = policy.value
            k2_info = policy.describe(method="user")
    elif model_spec(model).k2prime == "required":
        raise ModelError(f"{model} needs k2'", field="k2prime",
                         fix="give --k2prime VALUE, 'auto' or 'pooled'")
    elif model in K2PRIME_MODELS:
        k2_info = policy.describe()

    fmodel = _make_model(model, timing, ref, k2_used, settings_m)
    drop = ("k2prime",) if k2_used is not None else ()

    # -- chunks of the good voxels: views of the gathered curves where contiguous
    good_idx = np.flatnonzero(good)
    n_total = int(good_idx.size)
    # a cluster at an address or a client says how many workers it has; the others are
    # opened once the chunks are known (a local cluster: at most one worker per chunk)
    stack = contextlib.ExitStack()
    engine = (stack.enter_context(open_engine(sched))
              if sched.kind in ("address", "client") else None)
    n_workers = (engine.n_workers if engine is not None else 1 if sched.kind == "sync"
                 else sched.workers or usable_cpus())
    input_bytes = int(np.prod(img.dataobj.shape)) * 4
    if chunk_voxels is None:
        step = _auto_chunk(model, n_total, timing.n_frames, n_workers, input_bytes)
    else:
        step = max(1, int(chunk_voxels))
    ranges = [(a, min(a + step, n_total)) for a in range(0, n_total, step)]
    if len(ranges) <= 1 and sched.kind == "threads":
        sched = parse_scheduler("sync")

    def block(a: int, b: int) -> NDArray:
        idx = good_idx[a:b]
        if idx[-1] - idx[0] == b - a - 1:
            return curves_t[:, idx[0]:idx[-1] + 1].T
        return curves_t[:, idx].T

    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], n_total)

    if sched.kind == "threads":
        import dask.threaded  # noqa: F401 - import cost is not fitting time

    with stack:
        if engine is None:
            engine = stack.enter_context(open_engine(sched, n_tasks=len(ranges)))
        t0 = time.perf_counter()
        c0 = time.process_time()
        sink: _Sink | None = None
        sched_desc = "none"
        if n_total:
            probe = min(n_total, 4)
            with _single_threaded_blas():
                sink = _Sink(n_total, _fit_chunk(fmodel, block(0, probe), drop))
                sched_desc = _run_chunks(fmodel, block, ranges, sink, drop, engine, tick)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
    curves_t = np.empty((0, 0), dtype=np.float32)  # release the curves before the maps

    # -- assemble maps
    shape3 = tuple(bmask.shape)
    flat_good = np.flatnonzero(bmask)[good_idx]
    maps: dict[str, NDArray[np.float32]] = {}
    ses: dict[str, NDArray[np.float32]] = {}
    valid = np.zeros(shape3, dtype=bool)
    if sink is not None:
        for dst, src in ((maps, sink.params), (ses, sink.se)):
            for k in list(src):
                vol = np.full(shape3, np.nan, dtype=np.float32)
                vol.reshape(-1)[flat_good] = src.pop(k)
                dst[k] = vol
        valid.reshape(-1)[flat_good] = sink.valid
    n_valid = int(valid.sum())
    counts.update(n_fitted=n_total, n_valid=n_valid, n_fit_failed=n_total - n_valid)

    settings = {
        "model": model, "model_settings": settings_m,
        "chunk_voxels": step, "n_chunks": len(ranges), "scheduler": sched_desc,
        "brain_mask": mask_desc, "reference": ref_spec.describe(),
        "k2prime": k2_used, "k2prime_estimate": k2_info,
        "voxels_not_fitted_rule": "non-finite in any frame, or duration-weighted mean "
                                  "activity <= 0",
    }
    return ParametricResult(
        model=model, maps=maps, se=ses, valid=valid, mask=bmask,
        affine=np.asarray(img.affine, dtype=np.float64), timing=timing, ref_tac=ref,
        k2prime=k2_used, counts=counts, settings=settings,
        inputs=_hash_inputs(paths, image_hashes.result()), elapsed_s=elapsed, cpu_s=cpu)


def _map_policy(k2prime: Any) -> Any:
    """The map's k2' policy (:func:`petbind.models.k2prime.parse_k2prime`)."""
    from petbind.models.k2prime import parse_k2prime

    return parse_k2prime(k2prime, field="k2prime")


def model_spec(name: str) -> Any:
    """The catalogue entry of a map model (:func:`petbind.models.model_spec`)."""
    from petbind.models.registry import model_spec as spec

    return spec(name)


def _ref_from_any(ref: Any) -> RefCurve:
    if isinstance(ref, str | os.PathLike):
        return RefCurve(mask=ref)
    if hasattr(ref, "dataobj"):
        return RefCurve(mask=ref)
    arr = np.asarray(ref)
    return RefCurve(tac=arr) if arr.ndim == 1 else RefCurve(mask=arr)


# ----------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------
#: Units of the parameters a map can hold (written in the sidecars; from the catalogue).
PARAM_UNITS = parameter_units()


def write_maps(
    result: ParametricResult,
    out_dir: str | os.PathLike,
    stem: str,
    sidecar_extra: Mapping[str, Any] | None = None,
    *,
    entity: str = "desc",
) -> list[Path]:
    """Write a :class:`ParametricResult` as BIDS-derivative NIfTI maps with sidecars.

    Files, in ``out_dir`` (created; written atomically, float32):

    - ``<stem>_<entity>-<model>_<param>.nii.gz`` for every parameter, the name
      without underscores (``bp_nd`` -> ``bpnd``, ``r1``, ``k2`` ...);
    - ``<stem>_<entity>-<model>_<param>se.nii.gz`` for each standard error;
    - ``<stem>_<entity>-<model>_mask.nii.gz`` (uint8, 1 = fitted and valid);

    each with a JSON sidecar holding the model, parameter, units, every
    setting, k2' and how it was obtained, the reference curve, voxel counts,
    the software version and the SHA-256 of the inputs.

    Parameters
    ----------
    result : ParametricResult
    out_dir : path
        Output folder (never the input folder).
    stem : str
        BIDS stem, e.g. ``sub-01_ses-baseline_trc-AZ10419369``.
    sidecar_extra : mapping, optional
        Extra keys for every sidecar (e.g. the pipeline's provenance).
    entity : str
        ``"desc"`` (default, ``petbind parametric``) or ``"model"`` (the
        pipeline's layout in docs/outputs.md).

    Returns
    -------
    list of Path
        The NIfTI files written.
    """
    from petbind.io.bids import save_image

    out = Path(out_dir)
    for p in result.inputs:
        if out.resolve() == Path(p).resolve().parent:
            raise PetbindError("refusing to write maps into the input folder", path=out,
                               field="--out", fix="choose another output folder")
    base = {
        "Description": f"Voxelwise {result.model.upper()} fit (petbind.parametric)",
        "Model": result.model,
        "SoftwareName": "petbind", "SoftwareVersion": __version__,
        "K2Prime": result.k2prime, "K2PrimeUnits": "1/min",
        "K2PrimeSource": result.settings.get("k2prime_estimate", {}),
        "Settings": result.settings,
        "ReferenceTAC": [float(x) for x in result.ref_tac], "ReferenceTACUnits": "kBq/mL",
        **result.timing.to_bids(),
        "VoxelCounts": result.counts,
        "InputHashes": {k: f"sha256:{v}" for k, v in result.inputs.items()},
        "Sources": list(result.inputs),
        **dict(sidecar_extra or {}),
    }
    jobs: list[tuple[Path, Any, dict[str, Any]]] = []
    pre = f"{stem}_{entity}-{result.model}"
    for name, vol in result.maps.items():
        tag = name.replace("_", "")
        side = {**base, "Parameter": name, "Units": PARAM_UNITS.get(name, "see model docs")}
        jobs.append((out / f"{pre}_{tag}.nii.gz", vol, side))
    for name, vol in result.se.items():
        tag = name.replace("_", "")
        side = {**base, "Parameter": f"{name}_se", "Statistic": "standard error",
                "Units": PARAM_UNITS.get(name, "see model docs")}
        jobs.append((out / f"{pre}_{tag}se.nii.gz", vol, side))
    side = {**base, "Parameter": "valid", "Units": "1 = fitted and valid, 0 = not"}
    jobs.append((out / f"{pre}_mask.nii.gz", result.valid.astype(np.uint8), side))
    # one file per thread: compression releases the GIL, so the maps are written in
    # parallel (each atomically; the files and their bytes do not depend on the order)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), usable_cpus())),
                            thread_name_prefix="petbind-write") as pool:
        written = list(pool.map(lambda j: save_image(j[0], j[1], result.affine, j[2]), jobs))
    return [Path(p) for p in written]
