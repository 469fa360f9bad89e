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
- **PET smoothing** (off by default; ``pet_fwhm_mm``): every frame smoothed by a
  Gaussian of that FWHM in mm, normalised inside the brain mask, before the
  fits (:mod:`petbind.parametric.smoothing`).
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


from petbind.parametric.chunks import (
    MAX_CHUNK_VOXELS,
    MIN_CHUNK_VOXELS,
    MIN_WORK_BUDGET,
    WORK_BYTES,
    _auto_chunk,
    _fit_chunk,
)
from petbind.parametric.core import K2PRIME_MODELS, MAP_MODELS, model_spec, parametric_maps
from petbind.parametric.images import RefCurve, brain_mask
from petbind.parametric.k2prime import K2PRIME_TOP_FRACTION, estimate_k2prime
from petbind.parametric.provenance import PARAM_UNITS, write_maps
from petbind.parametric.result import ParametricResult
from petbind.parametric.smoothing import smooth_in_mask

__all__ = [
    "K2PRIME_MODELS", "K2PRIME_TOP_FRACTION", "MAP_MODELS", "MAX_CHUNK_VOXELS",
    "MIN_CHUNK_VOXELS", "MIN_WORK_BUDGET", "PARAM_UNITS", "WORK_BYTES", "ParametricResult",
    "RefCurve", "_auto_chunk", "_fit_chunk", "brain_mask", "estimate_k2prime", "model_spec",
    "parametric_maps", "smooth_in_mask", "write_maps",
]
