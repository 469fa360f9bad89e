"""Dynamic PET DICOM series through :mod:`pydicom`.

Attributes used (DICOM PS3.3, PET Series / PET Isotope / PET Image modules,
C.8.9.1, C.8.9.2, C.8.9.4):

- Series Date/Time (0008,0021/0031): reference time of the series; with
  Decay Correction (0054,1102) ``START`` the images are decay corrected to it;
  ``ADMIN`` means to the administration time; ``NONE`` not corrected.
- Acquisition Date/Time (0008,0022/0032) of each image: start of its frame;
  Actual Frame Duration (0018,1242, ms).
- Image Index (0054,1330) = (frame - 1) * Number of Slices + slice; Number of
  Time Slices (0054,0101), Number of Slices (0054,0081).
- Units (0054,1001): ``BQML`` is Bq/mL; other units are refused.
- Rescale Slope/Intercept (0028,1053/1052) per image.
- Radiopharmaceutical Information Sequence (0054,0016): Radiopharmaceutical
  Start (Date)Time (0018,1078 / 0018,1072), Radionuclide Half Life (0018,1075, s).

The image is read eagerly into float32 (DICOM stores one slice per file).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from petbind.errors import DecayError, FileFormatError, IsotopeError, MetadataError, TimingError
from petbind.image import DynamicImage
from petbind.io.boundary import file_reader
from petbind.isotopes import HALF_LIVES_S, Isotope, get_isotope
from petbind.timing import FrameTiming
from petbind.units import activity_factor

#: Relative tolerance between a header half-life and the tabulated one.
HALF_LIFE_RTOL = 0.01


def _datetime(date: str | None, time: str | None, *, path: Path, field: str) -> dt.datetime:
    if not date or not time:
        raise MetadataError("date or time is missing", path=path, field=field,
                            fix="the series needs its date and time attributes")
    t = str(time).strip()
    frac = 0.0
    if "." in t:
        t, f = t.split(".", 1)
        frac = float("0." + f) if f else 0.0
    try:
        base = dt.datetime.strptime(str(date).strip() + t.ljust(6, "0")[:6], "%Y%m%d%H%M%S")
    except ValueError:
        raise MetadataError(f"cannot read date/time {date!r} {time!r}", path=path, field=field,
                            fix="DICOM dates are YYYYMMDD and times HHMMSS.FFFFFF") from None
    return base + dt.timedelta(seconds=frac)


def _isotope(ds, path: Path) -> Isotope:
    seq = getattr(ds, "RadiopharmaceuticalInformationSequence", None)
    if not seq:
        raise IsotopeError("Radiopharmaceutical Information Sequence is missing", path=path,
                           field="RadiopharmaceuticalInformationSequence",
                           fix="export the series with its isotope information")
    item = seq[0]
    hl = getattr(item, "RadionuclideHalfLife", None)
    if hl is not None:
        hl = float(hl)
        for name, ref in HALF_LIVES_S.items():
            if abs(hl / ref - 1.0) < HALF_LIFE_RTOL:
                return Isotope(name, ref)
    code = getattr(item, "RadionuclideCodeSequence", None)
    if code:
        meaning = str(getattr(code[0], "CodeMeaning", "")).replace("^", "")
        try:
            return get_isotope(meaning)
        except IsotopeError:
            pass
    raise IsotopeError(f"unknown radionuclide (half-life {hl} s)", path=path,
                       field="RadionuclideHalfLife",
                       fix="check the radiopharmaceutical information of the series")


def _injection(ds, series_date: str, path: Path) -> dt.datetime:
    item = ds.RadiopharmaceuticalInformationSequence[0]
    full = getattr(item, "RadiopharmaceuticalStartDateTime", None)
    if full:
        s = str(full)
        return _datetime(s[:8], s[8:].split("+")[0].split("-")[0], path=path,
                         field="RadiopharmaceuticalStartDateTime")
    t = getattr(item, "RadiopharmaceuticalStartTime", None)
    if not t:
        raise TimingError("the injection time is missing", path=path,
                          field="RadiopharmaceuticalStartTime",
                          fix="export the series with its radiopharmaceutical start time")
    return _datetime(series_date, str(t), path=path, field="RadiopharmaceuticalStartTime")


@file_reader
def load_dicom(folder: str | os.PathLike) -> DynamicImage:
    """Load one dynamic PET DICOM series in kBq/mL, decay-corrected to injection.

    Parameters
    ----------
    folder : str or PathLike
        Folder with the files of exactly one PET series (other files are
        ignored if they are not DICOM).

    Returns
    -------
    DynamicImage
        In-memory float32 image, RAS affine (mm), timing in minutes after
        injection. ``metadata`` has ``isotope``, ``TracerName``,
        ``DecayCorrection``, ``SeriesInstanceUID``.

    Raises
    ------
    FileFormatError
        No PET DICOM, several series, missing or duplicated slices.
    TimingError, DecayError, UnitsError, IsotopeError, MetadataError
        Inconsistent or missing timing, decay, unit or isotope attributes.
    """
    root = Path(folder)
    try:
        return _load_dicom(root)
    except AttributeError as exc:  # pydicom: "... has no attribute 'PixelSpacing'"
        m = re.search(r"attribute '(\w+)'", str(exc))
        name = m.group(1) if m else None
        raise MetadataError(f"DICOM attribute {name or '?'} is missing", path=root, field=name,
                            fix="export the series with its full PET image attributes") \
            from None


def _load_dicom(root: Path) -> DynamicImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not root.is_dir():
        raise FileFormatError("not a folder", path=root, fix="give the folder of one series")
    dsets = []
    for f in sorted(root.iterdir()):
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(f)
        except (InvalidDicomError, OSError, EOFError):
            continue
        if getattr(ds, "Modality", None) == "PT":
            dsets.append((f, ds))
    if not dsets:
        raise FileFormatError("no PET DICOM files found", path=root,
                              fix="give the folder of a PET (Modality PT) series")
    series = {str(ds.SeriesInstanceUID) for _, ds in dsets}
    if len(series) > 1:
        raise FileFormatError(f"{len(series)} series in one folder", path=root,
                              field="SeriesInstanceUID", fix="put each series in its own folder")
    first = dsets[0][1]
    n_slices = int(getattr(first, "NumberOfSlices", 0) or 0)
    n_frames = int(getattr(first, "NumberOfTimeSlices", 1) or 1)
    if n_slices <= 0:
        n_slices = len(dsets) // n_frames
    if n_slices * n_frames != len(dsets):
        raise FileFormatError(f"{len(dsets)} images but NumberOfSlices x NumberOfTimeSlices = "
                              f"{n_slices} x {n_frames}", path=root, field="ImageIndex",
                              fix="the series is incomplete; export all images")
    units = str(getattr(first, "Units", "")).strip()
    factor = activity_factor(units, path=root, field="Units")
    iso = _isotope(first, root)
    series_dt = _datetime(getattr(first, "SeriesDate", None), getattr(first, "SeriesTime", None),
                          path=root, field="SeriesTime")
    inj_dt = _injection(first, str(first.SeriesDate), root)
    offset_s = (series_dt - inj_dt).total_seconds()
    if offset_s < 0:
        raise TimingError(f"the injection is {-offset_s:g} s after the series start", path=root,
                          field="RadiopharmaceuticalStartTime",
                          fix="check the injection time and the series time")
    rows, cols = int(first.Rows), int(first.Columns)
    grid: dict[int, list] = defaultdict(list)
    for f, ds in dsets:
        idx = getattr(ds, "ImageIndex", None)
        if idx is None:
            raise FileFormatError("ImageIndex is missing", path=f, field="ImageIndex",
                                  fix="export the series as a dynamic PET series")
        grid[(int(idx) - 1) // n_slices].append((int(idx), f, ds))
    data = np.empty((cols, rows, n_slices, n_frames), dtype=np.float32)
    start_s = np.empty(n_frames)
    dur_s = np.empty(n_frames)
    decay_factors = np.empty(n_frames)
    positions = None
    for t in range(n_frames):
        items = sorted(grid.get(t, []), key=lambda x: x[0])
        if len(items) != n_slices:
            raise FileFormatError(f"frame {t} has {len(items)} slices, expected {n_slices}",
                                  path=root, field="ImageIndex",
                                  fix="the series is incomplete or has duplicates")
        ds0 = items[0][2]
        dur = getattr(ds0, "ActualFrameDuration", None)
        if dur is None:
            raise TimingError(f"frame {t}: ActualFrameDuration is missing", path=items[0][1],
                              field="ActualFrameDuration", fix="export the frame durations")
        dur_s[t] = float(dur) / 1000.0
        acq = _datetime(getattr(ds0, "AcquisitionDate", None) or first.SeriesDate,
                        getattr(ds0, "AcquisitionTime", None), path=items[0][1],
                        field="AcquisitionTime")
        start_s[t] = (acq - inj_dt).total_seconds()
        decay_factors[t] = float(getattr(ds0, "DecayFactor", 1.0) or 1.0)
        pos_t = []
        for _, f, ds in items:
            if int(ds.Rows) != rows or int(ds.Columns) != cols:
                raise FileFormatError("images differ in size", path=f, field="Rows",
                                      fix="the series must have one image size")
            slope = float(getattr(ds, "RescaleSlope", 1.0))
            icpt = float(getattr(ds, "RescaleIntercept", 0.0))
            zi = len(pos_t)
            try:
                pixels = ds.pixel_array
            except (ValueError, RuntimeError, NotImplementedError) as exc:
                raise FileFormatError(f"cannot decode the pixel data: {exc}", path=f,
                                      field="PixelData", fix="export uncompressed or install "
                                      "the pydicom pixel-data handler for this transfer "
                                      "syntax") from None
            data[:, :, zi, t] = (pixels.astype(np.float32) * slope + icpt).T
            pos_t.append([float(v) for v in ds.ImagePositionPatient])
        if positions is None:
            positions = np.array(pos_t)
    timing = FrameTiming.from_seconds(start_s, dur_s, source=str(root),
                                      start_field="AcquisitionTime",
                                      duration_field="ActualFrameDuration")
    mode = str(getattr(first, "DecayCorrection", "NONE")).strip().upper()
    if mode == "NONE":
        if np.any(np.abs(decay_factors - 1.0) > 1e-6):
            raise DecayError("DecayCorrection is NONE but DecayFactor is not 1: the decay "
                             "attributes contradict each other", path=root, field="DecayFactor",
                             fix="check how the series was reconstructed")
        decay = timing.decay_factors(iso, 0.0)
    elif mode == "START":
        decay = np.full(n_frames, math.exp(iso.decay_constant_per_min * offset_s / 60.0))
    elif mode == "ADMIN":
        decay = np.ones(n_frames)
    else:
        raise DecayError(f"unknown DecayCorrection {mode!r}", path=root, field="DecayCorrection",
                         fix="expected NONE, START or ADMIN")
    affine = _affine(first, positions, root)
    seq = first.RadiopharmaceuticalInformationSequence[0]
    md = {"isotope": iso.name, "TracerName": str(getattr(seq, "Radiopharmaceutical", "")),
          "DecayCorrection": mode, "source_units": units,
          "SeriesInstanceUID": str(first.SeriesInstanceUID),
          "injection_offset_s": offset_s, "DecayFactor": decay_factors.tolist()}
    return DynamicImage(data, affine, timing, md, str(root), frame_scale=factor * decay)


def _affine(ds, positions: np.ndarray, path: Path) -> np.ndarray:
    """RAS voxel-to-world affine for data indexed (column, row, slice)."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)  # row spacing, column spacing
    row_cos, col_cos = iop[:3], iop[3:]
    if positions.shape[0] > 1:
        step = (positions[-1] - positions[0]) / (positions.shape[0] - 1)
    else:
        step = np.cross(row_cos, col_cos) * float(getattr(ds, "SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * dc
    lps[:3, 1] = col_cos * dr
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
