"""The scanner's point-spread function (PSF) for partial-volume correction.

Every method in :mod:`petbind.pvc` models the image as the true activity
blurred by a Gaussian PSF, given by its full width at half maximum (FWHM, mm)
along the image's three axes. :func:`resolve_psf` finds it, in this order:

1. the configuration (``[pvc] fwhm_mm`` or ``--fwhm-mm``): one number
   (isotropic) or three (x, y, z);
2. the PET sidecar: the scanner's resolution (``ScannerResolutionFWHM``, mm,
   not a BIDS field: petbind's name for it) combined in quadrature with the
   reconstruction's Gaussian post-filter (``ReconFilterSize``, mm, when
   ``ReconFilterType`` names a Gaussian), or either alone;
3. otherwise a :class:`~petbind.errors.ConfigError` naming the field to set.

A reconstruction filter alone understates the PSF of a real scanner (the
scanner's own resolution adds to it); the result says which fields it used so
that outputs record the assumption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from petbind.errors import ConfigError

#: FWHM / sigma of a Gaussian (2 sqrt(2 ln 2), about 2.355).
FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))
#: Sidecar field of the scanner's own resolution (FWHM, mm; petbind's name, not BIDS).
SCANNER_FIELD = "ScannerResolutionFWHM"


@dataclass(frozen=True)
class PSF:
    """A Gaussian point-spread function.

    Attributes
    ----------
    fwhm_mm : tuple of 3 floats
        FWHM along the image's x, y, z axes (mm).
    source : str
        Where it came from (``"config"``, ``"sidecar ReconFilterSize"`` ...).
    """

    fwhm_mm: tuple[float, float, float]
    source: str = "config"

    def sigma_voxels(self, affine: NDArray) -> NDArray[np.float64]:
        """Gaussian sigma in voxels of a grid with voxel-to-world ``affine``.

        Voxel sizes are the lengths of the affine's columns; the PSF is taken
        along the voxel axes (exact for axis-aligned grids, an approximation
        for oblique ones).
        """
        vox = np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
        return np.asarray(self.fwhm_mm, dtype=float) / FWHM_PER_SIGMA / vox

    def scaled(self, factor: float) -> PSF:
        """The same PSF with every FWHM multiplied by ``factor``."""
        return PSF(tuple(float(f * factor) for f in self.fwhm_mm),  # type: ignore[arg-type]
                   f"{self.source} x {factor:g}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form for sidecars."""
        return {"FWHMmm": list(self.fwhm_mm), "Shape": "Gaussian", "Source": self.source}


def as_fwhm(value: Any, *, field: str, path: str | Path | None = None
            ) -> tuple[float, float, float]:
    """One number or three (mm) -> a 3-tuple of FWHMs, each in [0, 30] mm.

    Raises
    ------
    ConfigError
        Naming ``field`` when the value is not one or three numbers in range.
    """
    vals: Sequence[Any] = value if isinstance(value, list | tuple) else [value]
    ok = (len(vals) in (1, 3)
          and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)
          and all(0.0 <= float(v) <= 30.0 for v in vals))
    if not ok:
        raise ConfigError(f"must be one FWHM in mm or three (x, y, z), each in [0, 30], "
                          f"got {value!r}", path=path, field=field,
                          fix="e.g. fwhm_mm = 2.8 or fwhm_mm = [2.8, 2.8, 3.2]")
    f = [float(v) for v in vals]
    return (f[0], f[0], f[0]) if len(f) == 1 else (f[0], f[1], f[2])


def resolve_psf(fwhm_mm: Any = None, sidecar: Mapping[str, Any] | None = None, *,
                sidecar_path: str | Path | None = None,
                config_field: str = "pvc.fwhm_mm") -> PSF:
    """The PSF from the configuration, else from the PET sidecar, else an error.

    Parameters
    ----------
    fwhm_mm : float or sequence of 3 floats, optional
        Configured FWHM (mm). Wins when given.
    sidecar : mapping, optional
        The PET JSON sidecar.
    sidecar_path : path, optional
        For error messages.
    config_field : str
        Name of the configuration field the error tells the user to set.

    Returns
    -------
    PSF

    Raises
    ------
    ConfigError
        When neither gives a PSF.
    """
    if fwhm_mm is not None:
        return PSF(as_fwhm(fwhm_mm, field=config_field), "config")
    side = dict(sidecar or {})
    parts: list[tuple[str, tuple[float, float, float]]] = []
    if side.get(SCANNER_FIELD) is not None:
        parts.append((SCANNER_FIELD, as_fwhm(side[SCANNER_FIELD], field=SCANNER_FIELD,
                                             path=sidecar_path)))
    kind = str(side.get("ReconFilterType", "")).lower()
    size = side.get("ReconFilterSize")
    if size is not None and "gauss" in kind:
        parts.append(("ReconFilterSize", as_fwhm(size, field="ReconFilterSize",
                                                 path=sidecar_path)))
    if not parts:
        raise ConfigError("the scanner's point-spread function is unknown: partial-volume "
                          "correction needs its FWHM", path=sidecar_path, field=config_field,
                          fix=f"set {config_field} (mm; one number or [x, y, z]), or "
                          f"'{SCANNER_FIELD}' / a Gaussian 'ReconFilterSize' in the PET "
                          "sidecar")
    total = np.sqrt(sum(np.square(p[1]) for p in parts))
    return PSF(tuple(float(v) for v in total),  # type: ignore[arg-type]
               "sidecar " + " + ".join(p[0] for p in parts))
