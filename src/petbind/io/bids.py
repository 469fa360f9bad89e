"""BIDS-PET images: read with validated timing, units and decay; write atomically.

Conventions (BIDS 1.11, "Positron Emission Tomography"):

- ``FrameTimesStart`` (s) are relative to ``TimeZero`` (a clock time);
  ``ScanStart`` and ``InjectionStart`` (s) are relative to ``TimeZero`` too.
  :func:`load_pet` subtracts ``InjectionStart`` so that ``t = 0`` is the
  injection, as everywhere inside petbind.
- ``ImageDecayCorrected`` (bool) says whether voxel values are decay
  corrected; ``ImageDecayCorrectionTime`` (s, relative to ``TimeZero``) says
  to when. Images leave :func:`load_pet` decay-corrected to the injection:
  values corrected to ``t_ref`` (min after injection) are multiplied by
  ``exp(lambda t_ref)``; uncorrected frame means by the exact
  frame-integrated factor of :meth:`FrameTiming.decay_factors`.
- ``Units`` of the voxel values are converted to kBq/mL
  (:func:`petbind.units.activity_factor`).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from petbind.errors import (
    DecayError,
    FileFormatError,
    IsotopeError,
    MetadataError,
    PetbindError,
    TimingError,
    UnitsError,
)
from petbind.image import DynamicImage
from petbind.io.atomic import atomic_path, write_json_atomic
from petbind.io.boundary import file_reader
from petbind.io.problems import Problem
from petbind.io.tables import read_json, sidecar_path
from petbind.io.verify import check_dynamic_shape, check_image_type, verify_gzip
from petbind.isotopes import Isotope, get_isotope
from petbind.lazy import import_without
from petbind.timing import MINUTES_FIX, FrameTiming, frames_look_like_minutes
from petbind.units import activity_factor

PathLike = str | os.PathLike

# nibabel without its eager import of pydicom (NIfTI DICOM extensions are not read here)
nib = import_without("nibabel", "pydicom")

#: Fields BIDS 1.11 requires in a PET sidecar.
REQUIRED_FIELDS = (
    "Manufacturer", "ManufacturersModelName", "Units", "TracerName", "TracerRadionuclide",
    "InjectedRadioactivity", "InjectedRadioactivityUnits", "InjectedMass",
    "InjectedMassUnits", "SpecificRadioactivity", "SpecificRadioactivityUnits",
    "ModeOfAdministration", "TimeZero", "ScanStart", "InjectionStart", "FrameTimesStart",
    "FrameDuration", "AcquisitionMode", "ImageDecayCorrected", "ImageDecayCorrectionTime",
    "ReconMethodName", "ReconMethodParameterLabels", "ReconFilterType",
    "AttenuationCorrection",
)
#: Fields BIDS recommends that petbind uses when present.
RECOMMENDED_FIELDS = ("TracerMolecularWeight", "InjectionEnd", "DecayCorrectionFactor",
                      "ScatterFraction", "BodyWeight")
#: Fields without which petbind cannot interpret the numbers.
NEEDED_FIELDS = ("FrameTimesStart", "FrameDuration", "Units", "ImageDecayCorrected",
                 "InjectionStart")

_TIME_ZERO = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?$")

#: Times further than this many half-lives from the injection are refused (2**-30 ~ 1e-9).
MAX_HALF_LIVES = 30

#: Relative tolerance when DecayCorrectionFactor is compared with the exact factor.
DECAY_FACTOR_RTOL = 0.02


def _num(side: Mapping, key: str) -> float | None:
    v = side.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _near_miss(key: str, side: Mapping[str, Any]) -> str | None:
    """A sidecar key that is probably a misspelling of ``key`` (case, plural, typo)."""
    import difflib

    others = [k for k in side if k not in REQUIRED_FIELDS]
    for k in others:
        if k.lower() == key.lower():
            return k
    close = difflib.get_close_matches(key, others, n=1, cutoff=0.85)
    return close[0] if close else None


def check_pet_sidecar(side: Mapping[str, Any], path: PathLike | None = None,
                      n_frames: int | None = None) -> list[Problem]:
    """Every problem of a BIDS-PET sidecar, most serious first.

    Parameters
    ----------
    side : mapping
        The parsed JSON sidecar.
    path : str or PathLike, optional
        The sidecar file, named in each problem.
    n_frames : int, optional
        Frames in the image (4th dimension; 1 for a 3D image), checked
        against the timing.

    Returns
    -------
    list of Problem
        Errors (petbind cannot use the image, or the fields contradict each
        other) and warnings (BIDS-required fields petbind does not need,
        suspicious values).
    """
    p = None if path is None else str(path)
    out: list[Problem] = []

    def err(cls: type[PetbindError], field: str, msg: str, fix: str) -> None:
        out.append(Problem("error", p, field, msg, fix, cls))

    def warn(field: str, msg: str, fix: str) -> None:
        out.append(Problem("warning", p, field, msg, fix, None))

    for key in REQUIRED_FIELDS:
        if key not in side or side[key] is None:
            near = _near_miss(key, side)
            hint = f" (the sidecar has '{near}': BIDS spells it '{key}')" if near else ""
            if key in NEEDED_FIELDS:
                cls = {"FrameTimesStart": TimingError, "FrameDuration": TimingError,
                       "Units": UnitsError, "ImageDecayCorrected": DecayError}.get(
                    key, MetadataError)
                err(cls, key, "required field is missing" + hint,
                    f"add '{key}' to the sidecar (BIDS-PET requires it)")
            elif key not in ("TracerRadionuclide", "ImageDecayCorrectionTime"):
                warn(key, "BIDS-required field is missing" + hint,
                     f"add '{key}' to the sidecar")

    # -- timing -------------------------------------------------------------
    # ``timing`` counts from ``origin`` s after TimeZero (0, or the first frame
    # when frames start before TimeZero), so that FrameTiming sees no negative start.
    timing = None
    origin = 0.0
    fts, fd = side.get("FrameTimesStart"), side.get("FrameDuration")
    if fts is not None and fd is not None:
        if isinstance(fts, int | float) and not isinstance(fts, bool):
            fts = [fts]
        if isinstance(fd, int | float) and not isinstance(fd, bool):
            fd = [fd]
        try:
            if not isinstance(fts, list) or not isinstance(fd, list) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool)
                    for v in [*fts, *fd]):
                raise TimingError("FrameTimesStart and FrameDuration must be lists of numbers "
                                  "(seconds)", path=p, field="FrameTimesStart",
                                  fix="write e.g. [0, 10, 20] and [10, 10, 10]")
            first_start = fts[0] if fts and isinstance(fts[0], int | float) else 0.0
            origin = min(0.0, float(first_start)) if math.isfinite(first_start) else 0.0
            timing = FrameTiming(np.asarray(fts, float) - origin, fd, unit="s", source=p)
        except TimingError as exc:
            err(TimingError, exc.field or "FrameDuration", exc.message, exc.fix or "")
    if timing is not None and n_frames is not None and timing.n_frames != n_frames:
        err(TimingError, "FrameDuration",
            f"the sidecar lists {timing.n_frames} frames but the image has {n_frames} "
            "(4th dimension)", "give one FrameTimesStart/FrameDuration entry per image frame")
    if timing is not None:
        half_life = None
        with contextlib.suppress(PetbindError, TypeError, ValueError, KeyError):
            half_life = get_isotope(str(side["TracerRadionuclide"])).half_life_s
        # the acquisition's own span (from its first frame) is what minutes shrink
        verdict = frames_look_like_minutes(timing.start_s - timing.start_s[0],
                                           timing.duration_s, half_life_s=half_life)
        if verdict is not None and verdict[0] == "error":
            err(TimingError, "FrameDuration", verdict[1], MINUTES_FIX)
        elif verdict is not None:
            warn("FrameDuration", verdict[1], MINUTES_FIX)
        if float(np.median(timing.duration_s)) > 7200.0:
            warn("FrameDuration", "median frame lasts over 2 h; were milliseconds written "
                 "instead of seconds?", "BIDS frame times are in seconds")
        for i, g in timing.gaps():
            if i >= 0:
                warn("FrameTimesStart", f"gap of {g * 60:g} s after frame {i}",
                     "check the frame definition (gaps are allowed but unusual)")

    for key in ("ScanStart", "InjectionStart", "ImageDecayCorrectionTime", "InjectionEnd"):
        if key in side and side[key] is not None and _num(side, key) is None:
            err(TimingError if key != "ImageDecayCorrectionTime" else DecayError, key,
                f"must be a number of seconds, got {side[key]!r}",
                f"write '{key}' in seconds relative to TimeZero")
    inj = _num(side, "InjectionStart")
    scan = _num(side, "ScanStart")
    if timing is not None and inj is not None:
        first = float(timing.start_s[0]) + origin - inj
        if first < -0.006:
            err(TimingError, "InjectionStart",
                f"frame 0 starts {-first:g} s before the injection (FrameTimesStart[0] = "
                f"{timing.start_s[0] + origin:g} s, InjectionStart = {inj:g} s)",
                "check InjectionStart; petbind analyses frames from the injection on")
    if (timing is not None and scan is not None
            and abs(float(timing.start_s[0]) + origin - scan) > 1.0):
        warn("ScanStart", f"the first frame starts at {timing.start_s[0] + origin:g} s but "
             "ScanStart "
             f"is {scan:g} s", "FrameTimesStart and ScanStart are both relative to TimeZero")
    if inj is not None and scan is not None and abs(inj - scan) > 3600.0:
        warn("InjectionStart", f"injection and scan start are {abs(inj - scan):g} s apart",
             "check that both are in seconds relative to TimeZero")
    tz = side.get("TimeZero")
    if tz is not None and (not isinstance(tz, str) or not _TIME_ZERO.match(tz.strip())):
        err(MetadataError, "TimeZero", f"must be a clock time hh:mm:ss, got {tz!r}",
            "write e.g. \"10:15:00\"")

    # -- units --------------------------------------------------------------
    units = side.get("Units")
    if units is not None:
        try:
            if not isinstance(units, str):
                raise UnitsError(f"must be a string, got {units!r}", field="Units",
                                 fix='write e.g. "Bq/mL"')
            activity_factor(units, path=p)
        except UnitsError as exc:
            err(UnitsError, "Units", exc.message, exc.fix or "")

    # -- isotope and decay ----------------------------------------------------
    iso: Isotope | None = None
    rad = side.get("TracerRadionuclide")
    if rad is not None:
        try:
            iso = get_isotope(str(rad))
        except IsotopeError as exc:
            err(IsotopeError, "TracerRadionuclide", exc.message, exc.fix or "")
    corrected = side.get("ImageDecayCorrected")
    ref = _num(side, "ImageDecayCorrectionTime")
    if corrected is not None and not isinstance(corrected, bool):
        err(DecayError, "ImageDecayCorrected", f"must be true or false, got {corrected!r}",
            "write true or false without quotes")
        corrected = None
    if corrected is True and side.get("ImageDecayCorrectionTime") is None:
        err(DecayError, "ImageDecayCorrectionTime",
            "ImageDecayCorrected is true but the correction time is missing",
            "add ImageDecayCorrectionTime (s, relative to TimeZero)")
    elif side.get("ImageDecayCorrectionTime") is None:
        warn("ImageDecayCorrectionTime", "BIDS-required field is missing",
             "add ImageDecayCorrectionTime (s, relative to TimeZero)")
    needs_iso = corrected is False or (corrected is True and ref is not None and inj is not None
                                       and abs(ref - inj) > 1e-6)
    if rad is None:
        if needs_iso:
            err(IsotopeError, "TracerRadionuclide",
                "required to convert the decay correction to injection time, but missing",
                "add TracerRadionuclide, e.g. \"C11\"")
        else:
            warn("TracerRadionuclide", "BIDS-required field is missing",
                 "add TracerRadionuclide, e.g. \"C11\"")
    dcf = side.get("DecayCorrectionFactor")
    if dcf is not None and timing is not None:
        arr = np.asarray(dcf if isinstance(dcf, list) else [dcf], dtype=object)
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError):
            arr = None
            err(DecayError, "DecayCorrectionFactor", "must be a list of numbers",
                "one factor per frame")
        if arr is not None:
            if arr.size != timing.n_frames:
                err(DecayError, "DecayCorrectionFactor",
                    f"{arr.size} factors for {timing.n_frames} frames", "one factor per frame")
            elif corrected is False and np.any(np.abs(arr - 1.0) > 1e-6):
                err(DecayError, "ImageDecayCorrected",
                    "ImageDecayCorrected is false but DecayCorrectionFactor is not 1: the "
                    "decay flags contradict each other",
                    "set ImageDecayCorrected to true, or the factors to 1 if the image is "
                    "not decay corrected")
            elif corrected is True and timing.n_frames > 1 and np.all(arr == 1.0):
                err(DecayError, "ImageDecayCorrected",
                    "ImageDecayCorrected is true but every DecayCorrectionFactor is 1: the "
                    "decay flags contradict each other",
                    "set ImageDecayCorrected to false if the image is not decay corrected")
            elif corrected is True and iso is not None and ref is not None:
                expect = timing.decay_factors(iso, (ref - origin) / 60.0)
                rel = np.abs(arr / expect - 1.0)
                if np.any(rel > DECAY_FACTOR_RTOL):
                    i = int(np.argmax(rel))
                    warn("DecayCorrectionFactor",
                         f"frame {i}: factor {arr[i]:g} differs by {100 * rel[i]:.1f}% from "
                         f"the {iso.name} decay to ImageDecayCorrectionTime ({expect[i]:g})",
                         "check TracerRadionuclide and ImageDecayCorrectionTime")
    if (corrected is True and ref is not None and inj is not None and scan is not None
            and abs(ref - inj) > 1.0 and abs(ref - scan) > 1.0):
        warn("ImageDecayCorrectionTime",
             f"decay corrected to {ref:g} s, neither the injection ({inj:g} s) nor the scan "
             f"start ({scan:g} s)", "check ImageDecayCorrectionTime")
    if iso is not None and inj is not None:
        # More than MAX_HALF_LIVES half-lives from the injection leaves less than 1e-9 of
        # the activity: such times are unit mistakes (ms for s), not scans.
        limit = MAX_HALF_LIVES * iso.half_life_s
        if corrected is True and ref is not None and abs(ref - inj) > limit:
            err(DecayError, "ImageDecayCorrectionTime",
                f"decay corrected to {(ref - inj) / 3600:.4g} h from the injection, over "
                f"{MAX_HALF_LIVES} half-lives of {iso.name}", "check the value and its unit "
                "(seconds relative to TimeZero)")
        if timing is not None and float(timing.end[-1]) * 60 + origin - inj > limit:
            err(TimingError, "FrameTimesStart",
                f"the scan ends {(timing.end[-1] * 60 + origin - inj) / 3600:.4g} h after the "
                f"injection, over {MAX_HALF_LIVES} half-lives of {iso.name}",
                "check the frame times and their unit (seconds)")
    order = {"error": 0, "warning": 1}
    return sorted(out, key=lambda q: order[q.severity])


def raise_first_error(problems: list[Problem]) -> None:
    """Raise the first error of ``problems`` as its PetbindError subclass."""
    for q in problems:
        if q.severity == "error":
            raise q.to_error()


def nifti_stream_size(img: nib.spatialimages.SpatialImage) -> int:
    """Bytes a NIfTI/Analyze image's (uncompressed) file must hold: the data's offset plus
    its size from the header."""
    hdr = img.header
    nbytes = int(np.prod(hdr.get_data_shape(), dtype=np.int64)) * hdr.get_data_dtype().itemsize
    offset = getattr(img.dataobj, "offset", None)
    return int(hdr.get_data_offset() if offset is None else offset) + nbytes


def _check_nifti_size(path: Path, img: nib.spatialimages.SpatialImage,
                      verify_gzip_now: bool = True) -> None:
    """Refuse a truncated or damaged NIfTI.

    For ``.nii`` the file must hold ``vox_offset + nbytes``; a ``.nii.gz`` is
    decompressed once to check every gzip member's CRC-32 and length (RFC 1952
    section 2.3.1) and that it decompresses to exactly that size
    (:func:`petbind.io.verify.verify_gzip`), unless ``verify_gzip_now`` is False
    (the caller reads the whole stream and checks its end:
    :func:`petbind.io.verify.check_stream_end`).
    """
    expected = nifti_stream_size(img)
    name = path.name.lower()
    if name.endswith(".gz"):
        if not verify_gzip_now:
            return
        # the whole stream, every CRC-32 and length (a lazy read never checks them)
        verify_gzip(path, expected_size=expected)
    elif name.endswith(".nii") and path.stat().st_size < expected:
        raise FileFormatError(f"the file holds {path.stat().st_size} bytes but the header "
                              f"needs {expected}: it is truncated", path=path,
                              fix="copy or re-export the file")


@file_reader
def open_nifti(path: PathLike, *, verify_gzip: bool = True) -> nib.spatialimages.SpatialImage:
    """Open a NIfTI/Analyze image lazily, refusing unreadable or truncated files.

    ``verify_gzip=False`` skips the whole-stream decompression of a ``.nii.gz``
    (:func:`petbind.io.verify.verify_gzip`): only for a caller that reads every
    byte of the stream anyway, through :func:`petbind.io.images.open_stream`,
    and then calls :func:`petbind.io.verify.check_stream_end` (the one
    decompression checks every gzip member's CRC-32 and length and the size the
    header needs). The header, voxel type and dimensions are checked either way.
    """
    p = Path(path)
    if not p.exists():
        if p.is_symlink():
            raise FileFormatError("the image is a symbolic link whose target is missing (an "
                                  "annexed file whose content is not here)", path=p,
                                  fix=f"fetch it (`datalad get {p}` or `git annex get`)")
        raise FileFormatError("file does not exist", path=p, fix="check the path")
    try:
        img = nib.load(str(p), keep_file_open=True)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error,
            gzip.BadGzipFile, ValueError) as exc:
        raise FileFormatError(f"not a readable NIfTI/Analyze image (corrupt, truncated or "
                              f"another format): {exc}", path=p,
                              fix="check that the file is a complete NIfTI image") from None
    if isinstance(img, nib.Nifti1Image | nib.Nifti2Image | nib.AnalyzeImage):
        check_image_type(img, p)
        if any(int(s) < 1 for s in img.shape):
            check_dynamic_shape(tuple(img.shape), p)
        _check_nifti_size(p, img, verify_gzip)
    return img


def pet_sidecar(nii_path: PathLike) -> Path:
    """The JSON sidecar of a PET image."""
    return sidecar_path(nii_path)


def _entities(name: str) -> tuple[set[str], str]:
    """``({"sub-01", "trc-DASB"}, "pet")`` for ``sub-01_trc-DASB_pet.json``."""
    stem = name.split(".")[0]
    parts = stem.split("_")
    return {x for x in parts[:-1] if "-" in x}, parts[-1]


def inherited_sidecars(nii_path: PathLike) -> list[Path]:
    """The JSON files whose fields apply to an image, most general first.

    BIDS inheritance principle (BIDS 1.11, "The Inheritance Principle"): a
    JSON file with the same suffix in the image's folder or any folder above
    it, up to the dataset root (the folder with ``dataset_description.json``),
    applies when its entities are a subset of the image's; deeper files
    override shallower ones. Without a dataset root only the sidecar beside
    the image is used.

    A symbolic link (DataLad / git-annex datasets) is resolved at its own
    path, never at its target: the sidecars and the dataset root are those
    of the folder the link lies in, so a JSON file beside the annexed target
    (another dataset's, or none) is never used.
    """
    p = Path(os.path.abspath(nii_path))
    ents, suffix = _entities(p.name)
    folders = []
    d = p.parent
    while True:
        folders.append(d)
        if (d / "dataset_description.json").exists() or d.parent == d:
            break
        d = d.parent
    if not (folders[-1] / "dataset_description.json").exists():
        folders = [p.parent]
    own = sidecar_path(p)
    out: list[Path] = []
    for folder in reversed(folders):
        cands = []
        for j in folder.glob(f"*{suffix}.json"):
            e, suf = _entities(j.name)
            if suf == suffix and e <= ents and j != own:
                cands.append((len(e), j.name, j))
        out += [j for _, _, j in sorted(cands)]
    if own.exists():
        out.append(own)
    return out


@file_reader
def read_pet_sidecar(nii_path: PathLike) -> tuple[dict, Path]:
    """Merged sidecar fields of a PET image (inheritance applied) and the file to name.

    Raises
    ------
    MetadataError
        No sidecar applies to the image.
    FileFormatError
        A sidecar is not valid JSON.
    """
    files = inherited_sidecars(nii_path)
    own = pet_sidecar(nii_path)
    if not files:
        raise MetadataError("JSON sidecar is missing", path=own,
                            fix="write the sidecar beside the image")
    side: dict = {}
    for f in files:
        side.update(read_json(f))
    return side, (own if own.exists() else files[-1])


@file_reader
def load_pet(nii_path: PathLike, sidecar: Mapping[str, Any] | None = None, *,
             verify_gzip: bool = True) -> DynamicImage:
    """Load a BIDS-PET image with its sidecar, validated, lazily.

    Parameters
    ----------
    nii_path : str or PathLike
        ``*_pet.nii[.gz]``; the sidecar is the ``.json`` of the same name,
        merged over any inherited ``*_pet.json`` above it
        (:func:`inherited_sidecars`).
    sidecar : mapping, optional
        Use these fields instead of reading the sidecar file.
    verify_gzip : bool
        False: do not decompress a ``.nii.gz`` here to check its CRC-32 and
        length; the caller reads the whole stream and checks its end
        (:func:`open_nifti`).

    Returns
    -------
    DynamicImage
        Values in kBq/mL, decay-corrected to the injection; timing in minutes
        after the injection. ``metadata`` holds the sidecar fields plus
        ``"isotope"`` (canonical name or None), ``"source_units"``,
        ``"decay_scale_note"``.

    Raises
    ------
    FileFormatError
        Unreadable, truncated or non-image file; JSON syntax error.
    TimingError, DecayError, UnitsError, IsotopeError, MetadataError
        The first error that :func:`check_pet_sidecar` finds.
    """
    p = Path(nii_path)
    if sidecar is not None:
        side, side_p = dict(sidecar), pet_sidecar(p)
    else:
        side, side_p = read_pet_sidecar(p)
    img = open_nifti(p, verify_gzip=verify_gzip)
    shape = img.shape
    n_frames = check_dynamic_shape(tuple(shape), p)
    problems = check_pet_sidecar(side, side_p, n_frames)
    raise_first_error(problems)
    timing = FrameTiming.from_seconds(
        np.atleast_1d(np.asarray(side["FrameTimesStart"], float)) - float(side["InjectionStart"]),
        np.atleast_1d(np.asarray(side["FrameDuration"], float)), source=str(side_p))
    factor = activity_factor(side["Units"], path=side_p)
    iso = get_isotope(str(side["TracerRadionuclide"])) if side.get("TracerRadionuclide") else None
    if side["ImageDecayCorrected"]:
        ref_s = float(side["ImageDecayCorrectionTime"]) - float(side["InjectionStart"])
        ref_min = ref_s / 60.0
        if abs(ref_s) > 1e-6:  # the same threshold as check_pet_sidecar's needs_iso
            assert iso is not None  # guaranteed by check_pet_sidecar
            scale = np.full(timing.n_frames, factor * math.exp(iso.decay_constant_per_min
                                                               * ref_min))
            note = f"decay correction moved from {ref_min:g} min to injection"
        else:
            scale = np.full(timing.n_frames, factor)
            note = "already decay corrected to injection"
    else:
        assert iso is not None
        scale = factor * timing.decay_factors(iso, 0.0)
        note = "decay corrected to injection (frame-integrated factors)"
    dataobj = img.dataobj if len(shape) == 4 else img.dataobj.reshape(shape + (1,))
    md = dict(side)
    md.update({"isotope": None if iso is None else iso.name, "source_units": side["Units"],
               "decay_scale_note": note,
               "warnings": [f"{q.field}: {q.message}" for q in problems
                             if q.severity == "warning"]})
    return DynamicImage(dataobj, img.affine, timing, md, str(p), frame_scale=scale,
                        units="kBq/mL")


def save_image(path: PathLike, data: ArrayLike, affine: ArrayLike,
               sidecar: Mapping[str, Any] | None = None, *, dtype: Any = None) -> Path:
    """Write a NIfTI image and its JSON sidecar atomically.

    Parameters
    ----------
    path : str or PathLike
        ``*.nii.gz`` or ``*.nii``; the sidecar goes to the ``.json`` of the same name.
    data : array_like
        3D or 4D array. Float64 is stored as float32 unless ``dtype`` says otherwise.
    affine : array_like, shape (4, 4)
        Voxel-to-world (mm).
    sidecar : mapping, optional
        JSON fields (numpy values allowed). ``None`` writes no sidecar.
    dtype : numpy dtype, optional
        On-disk data type.

    Returns
    -------
    Path
        The image path. Both files appear only when both are complete.
    """
    p = Path(path)
    if not (p.name.endswith(".nii.gz") or p.name.endswith(".nii")):
        raise FileFormatError("image outputs must be .nii or .nii.gz", path=p,
                              fix="name the output *.nii.gz")
    arr = np.asarray(data)
    if dtype is None:
        dtype = np.float32 if arr.dtype == np.float64 else arr.dtype
    if arr.dtype == bool:
        dtype = np.uint8
    img = nib.Nifti1Image(arr.astype(dtype, copy=False), np.asarray(affine, float))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(dtype)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    if sidecar is None:
        with atomic_path(p) as tmp:
            _write_nifti(img, tmp)
        return p
    with atomic_path(sidecar_path(p)) as tj, atomic_path(p) as tn:
        write_json_atomic(tj, dict(sidecar))
        _write_nifti(img, tn)
    return p


#: gzip level of written images (nibabel's default; level 6 is ~3x slower, ~10 % smaller);
#: written through ISA-L when installed (petbind.gz: about 6x faster than zlib).
GZIP_LEVEL = 1


def _write_nifti(img: nib.Nifti1Image, path: Path) -> None:
    """Stream a NIfTI to ``path``; ``.gz`` without time stamp or name, so equal inputs
    give equal bytes (RFC 1952 MTIME = 0)."""
    with open(path, "wb") as raw:
        if path.name.endswith(".gz"):
            from petbind.gz import open_write

            with open_write(raw, GZIP_LEVEL) as gz:
                img.to_stream(gz)
        else:
            img.to_stream(raw)
