"""ECAT7 (``.v``) dynamic images through :mod:`nibabel.ecat`.

Header conventions (CTI/Siemens ECAT 7.2 file format; as decoded by nibabel):

- frame timing: image subheader ``frame_start_time`` and ``frame_duration``
  in **milliseconds**, relative to the scan start;
- scan start and injection: main header ``scan_start_time`` and
  ``dose_start_time`` (Unix seconds);
- decay: subheader ``decay_corr_fctr`` is the frame-integrated factor that
  corrected the frame to the **scan start** (1 when not corrected);
- scaling: nibabel multiplies stored integers by ``scale_factor`` *and* the
  main header ``ecat_calibration_factor``. When ``calibration_units`` is 1
  (data already calibrated, unit in ``data_units``) the calibration factor
  must not be applied again (PET2BIDS, openneuropet/PET2BIDS pull request
  268), so it is divided back out here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import nibabel.ecat as necat
import numpy as np

from petbind.errors import DecayError, FileFormatError, IsotopeError, TimingError, UnitsError
from petbind.image import DynamicImage
from petbind.io.boundary import file_reader
from petbind.isotopes import get_isotope
from petbind.timing import FrameTiming
from petbind.units import activity_factor

#: Relative tolerance between the header's decay factors and the exact ones.
DECAY_FACTOR_RTOL = 0.01


def _text(v) -> str:
    raw = np.asarray(v).item()
    if isinstance(raw, bytes):
        raw = raw.split(b"\x00")[0].decode("latin-1")
    return str(raw).strip()


@file_reader
def load_ecat(path: str | os.PathLike, *, injection_offset_s: float | None = None,
              units: str | None = None) -> DynamicImage:
    """Load an ECAT7 image in kBq/mL, decay-corrected to injection, times from injection.

    Parameters
    ----------
    path : str or PathLike
        The ``.v`` file.
    injection_offset_s : float, optional
        Seconds from injection to scan start. Default: ``scan_start_time -
        dose_start_time`` from the main header; give it when those are
        missing or wrong.
    units : str, optional
        Activity unit of the stored values when ``data_units`` is empty.

    Returns
    -------
    DynamicImage
        Lazy image; ``metadata`` has ``isotope``, ``TracerName``,
        ``source_units``, ``injection_offset_s`` and the header decay factors.

    Raises
    ------
    FileFormatError
        Not an ECAT7 file.
    TimingError
        Injection after the scan start, or implausible clock times.
    DecayError
        Header decay factors that disagree with the isotope and frame times.
    IsotopeError, UnitsError
        Unknown isotope or unit.
    """
    p = Path(path)
    if not p.exists():
        raise FileFormatError("file does not exist", path=p, fix="check the path")
    try:
        img = necat.load(str(p))
        sub = img.get_subheaders()
        n = int(sub.get_nframes())
        rows = [sub.subheaders[i] for i in range(n)]
    except Exception as exc:  # nibabel raises many types for a non-ECAT file
        raise FileFormatError(f"cannot read as ECAT7: {exc}", path=p,
                              fix="give an ECAT 7 .v image file") from None
    mh = img.header
    try:
        iso = get_isotope(_text(mh["isotope_name"]))
    except IsotopeError as exc:
        raise IsotopeError(exc.message, path=p, field="isotope_name", fix=exc.fix) from None
    start_ms = np.array([float(np.asarray(s["frame_start_time"]).item()) for s in rows])
    dur_ms = np.array([float(np.asarray(s["frame_duration"]).item()) for s in rows])
    dcf = np.array([float(np.asarray(s["decay_corr_fctr"]).item()) for s in rows])
    if injection_offset_s is None:
        scan = float(np.asarray(mh["scan_start_time"]).item())
        dose = float(np.asarray(mh["dose_start_time"]).item())
        off = scan - dose
        if dose <= 0 or off < 0 or off > 86400:
            raise TimingError(
                f"injection time (dose_start_time) lies {off:g} s before the scan start "
                "(scan_start_time); it must be between 0 s and one day",
                path=p, field="dose_start_time",
                fix="pass the injection-to-scan offset explicitly (injection_offset_s)")
        injection_offset_s = off
    timing = FrameTiming.from_seconds(start_ms / 1000.0 + injection_offset_s, dur_ms / 1000.0,
                                      source=str(p), start_field="frame_start_time",
                                      duration_field="frame_duration")
    scan_timing = FrameTiming.from_seconds(start_ms / 1000.0, dur_ms / 1000.0, source=str(p))
    corrected = bool(np.any(np.abs(dcf - 1.0) > 1e-6))
    if corrected:
        expect = scan_timing.decay_factors(iso, 0.0)
        rel = np.abs(dcf / expect - 1.0)
        if np.any(rel > DECAY_FACTOR_RTOL):
            i = int(np.argmax(rel))
            raise DecayError(
                f"frame {i}: header decay factor {dcf[i]:.6g} differs from the {iso.name} "
                f"decay to scan start ({expect[i]:.6g})", path=p, field="decay_corr_fctr",
                fix="check isotope_name and the frame times")
        decay = np.full(n, math.exp(iso.decay_constant_per_min * injection_offset_s / 60.0))
    else:
        decay = timing.decay_factors(iso, 0.0)
    unit = _text(mh["data_units"]) or units
    names = mh.template_dtype.names if hasattr(mh, "template_dtype") else ()
    key = "calibration_units" if "calibration_units" in names else "calibration_unitS"
    cal_units = int(np.asarray(mh[key]).item())  # nibabel spells it 'calibration_unitS'
    cal = float(np.asarray(mh["ecat_calibration_factor"]).item())
    if not unit:
        raise UnitsError("the header gives no data unit (data_units is empty)", path=p,
                         field="data_units", fix="pass units= (e.g. 'Bq/mL')")
    factor = activity_factor(unit, path=p, field="data_units")
    if cal_units == 1 and cal not in (0.0, 1.0):
        factor /= cal
    md = {"isotope": iso.name, "TracerName": _text(mh["radiopharmaceutical"]),
          "source_units": unit, "injection_offset_s": float(injection_offset_s),
          "decay_corr_fctr": dcf.tolist(), "calibration_units": cal_units,
          "ecat_calibration_factor": cal, "ImageDecayCorrected": corrected}
    shape = img.shape
    dataobj = img.dataobj
    if len(shape) == 3:
        dataobj = np.asarray(dataobj)[..., None]
    return DynamicImage(dataobj, img.affine, timing, md, str(p), frame_scale=factor * decay,
                        units="kBq/mL")
