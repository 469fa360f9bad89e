"""NIfTI / Analyze dynamic images without a BIDS sidecar, with a separate timing table.

Everything a BIDS sidecar would say must be given explicitly (units, decay
state, isotope): nothing is assumed, so a unit or decay mistake cannot pass
silently.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from petbind.errors import DecayError
from petbind.image import DynamicImage
from petbind.io.bids import open_nifti
from petbind.io.boundary import file_reader
from petbind.io.tables import timing_from_frame_table
from petbind.io.verify import check_dynamic_shape
from petbind.isotopes import Isotope, get_isotope
from petbind.timing import FrameTiming
from petbind.units import activity_factor


@file_reader
def load_nifti(
    path: str | os.PathLike,
    timing: FrameTiming | str | os.PathLike,
    *,
    units: str,
    decay_corrected: bool,
    isotope: Isotope | str | None = None,
    decay_reference_min: float = 0.0,
    verify_gzip: bool = True,
) -> DynamicImage:
    """Load a 4D NIfTI or Analyze image with timing from elsewhere.

    Parameters
    ----------
    path : str or PathLike
        ``.nii``, ``.nii.gz`` or Analyze ``.img``/``.hdr``.
    timing : FrameTiming or path
        Frame timing in minutes after injection, or a TSV with
        ``frame_start`` and ``frame_end`` (or ``frame_duration``) in seconds
        after injection (see :func:`petbind.io.tables.timing_from_frame_table`).
    units : str
        Activity unit of the stored values (after the NIfTI scale slope).
    decay_corrected : bool
        Whether values are decay corrected (to ``decay_reference_min``).
    isotope : Isotope or str, optional
        Needed unless the values are decay corrected to the injection.
    decay_reference_min : float
        Time (min after injection) the values are decay corrected to.
    verify_gzip : bool
        False: no whole-stream CRC/length check of a ``.nii.gz`` on opening
        (:func:`petbind.io.bids.open_nifti`; the caller reads and checks it).

    Returns
    -------
    DynamicImage
        Lazy, kBq/mL, decay corrected to injection.

    Raises
    ------
    FileFormatError, TimingError, UnitsError, DecayError, IsotopeError
    """
    p = Path(path)
    if not isinstance(timing, FrameTiming):
        timing = timing_from_frame_table(timing)
    img = open_nifti(p, verify_gzip=verify_gzip)
    shape = img.shape
    check_dynamic_shape(tuple(shape), p)
    factor = activity_factor(units, path=p, field="units")
    iso = get_isotope(isotope) if isinstance(isotope, str) else isotope
    needs_iso = not decay_corrected or abs(decay_reference_min) > 0
    if needs_iso and iso is None:
        raise DecayError("the isotope is needed to decay-correct the image to injection",
                         path=p, field="isotope", fix="pass isotope= (e.g. 'C11')")
    if not decay_corrected:
        scale = factor * timing.decay_factors(iso, 0.0)
    elif iso is not None and decay_reference_min:
        scale = np.full(timing.n_frames,
                        factor * math.exp(iso.decay_constant_per_min * decay_reference_min))
    else:
        scale = np.full(timing.n_frames, factor)
    dataobj = img.dataobj if len(shape) == 4 else img.dataobj.reshape(shape + (1,))
    md = {"isotope": None if iso is None else iso.name, "source_units": units,
          "ImageDecayCorrected": bool(decay_corrected)}
    return DynamicImage(dataobj, img.affine, timing, md, str(p), frame_scale=scale)
