"""The result of a parametric fit (:class:`ParametricResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from petbind.timing import FrameTiming


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

