"""Records of a simulated study: a scan's truth, the PET geometry, a subject's anatomy.

Their own module, below :mod:`petbind.simulate.study` (which makes them) and
:mod:`petbind.simulate.writer` (which writes them), so neither imports the other
for the types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from petbind.simulate.config import SimConfig, TracerConfig
from petbind.simulate.phantom import Phantom

__all__ = ["Geometry", "ScanTruth", "SubjectAnatomy"]


@dataclass(frozen=True)
class ScanTruth:
    """The true kinetics of one scan.

    Attributes
    ----------
    subject, condition : str
        BIDS labels (no ``sub-`` / ``ses-`` prefix).
    tracer : TracerConfig
    index : tuple of int
        ``(subject, tracer, condition)`` positions in the design.
    bp_nd, r1 : dict of str to float
        Per region (every name in :data:`REGIONS`).
    k1prime, k2prime : float
        Reference-region delivery (mL/cm3/min) and efflux (1/min).
    tacs : ndarray, shape (n_regions, n_frames)
        Noise-free region curves (kBq/mL, decay-corrected to injection), rows
        in the order of :data:`REGIONS`.
    """

    subject: str
    condition: str
    tracer: TracerConfig
    index: tuple[int, int, int]
    bp_nd: dict[str, float]
    r1: dict[str, float]
    k1prime: float
    k2prime: float
    tacs: NDArray[np.float64]

    @property
    def stem(self) -> str:
        """BIDS file stem ``sub-<s>_ses-<c>_trc-<t>``."""
        return f"sub-{self.subject}_ses-{self.condition}_trc-{self.tracer.name}"

    def rng(self, cfg: SimConfig, purpose: int) -> np.random.Generator:
        """The scan's random stream for ``purpose``."""
        return np.random.default_rng([cfg.seed, purpose, *self.index])


@dataclass(frozen=True)
class Geometry:
    """The phantom and its PET-space views, shared by the scans of a study (or a subject).

    In template position one geometry serves the whole study; in native
    position each subject has its own (:func:`subject_anatomy`).

    Attributes
    ----------
    phantom : Phantom
    shape : tuple of int
        PET grid shape (x, y, z).
    affine : ndarray, shape (4, 4)
        PET voxel to RAS mm.
    weights : ndarray of float32, shape (x*y*z, n_labels)
        Partial-volume weights (PSF + voxel averaging) of each label.
    dseg : ndarray of int16, shape (x, y, z)
        Atlas in PET space (majority label per voxel).
    label_region : ndarray of int, shape (n_labels,)
        Row of :data:`REGIONS` for each label 1..n.
    pose : ndarray, shape (4, 4), or None
        World transform template -> this geometry's object (native position);
        None for template position.
    blurred : list or None
        :func:`~petbind.simulate.scanner.blurred_indicators` of the phantom in
        template pose, kept when head motion is simulated (each moved frame
        is rendered from them, :func:`petbind.simulate.study.scan_image`).
    """

    phantom: Phantom
    shape: tuple[int, int, int]
    affine: NDArray
    weights: NDArray[np.float32]
    dseg: NDArray[np.int16]
    label_region: NDArray[np.intp]
    pose: NDArray | None = None
    blurred: list | None = None


@dataclass(frozen=True)
class SubjectAnatomy:
    """One subject in its native position: a known rigid offset from the template.

    Attributes
    ----------
    subject : str
        BIDS label.
    index : int
        Position of the subject in the design.
    params : ndarray, shape (6,)
        Translations (mm) and rotations (degrees), convention of
        :func:`~petbind.simulate.scanner.rigid_matrix`.
    centre : ndarray, shape (3,)
        Centre of rotation (world mm): the centre of the field of view.
    matrix : ndarray, shape (4, 4)
        Template world point -> native world point.
    t1w : ndarray of float32, shape (X, Y, Z)
        The phantom T1w moved by ``matrix`` (cubic), on the grid ``affine``.
    affine : ndarray, shape (4, 4)
        Voxel to world of ``t1w`` (the padded 1 mm phantom grid).
    geometry : Geometry
        PET grid, partial-volume weights and true atlas of the moved brain.
    """

    subject: str
    index: int
    params: NDArray
    centre: NDArray
    matrix: NDArray
    t1w: NDArray[np.float32]
    affine: NDArray
    geometry: Geometry
