"""One reader for images: dynamic PET of any format, and 3-D volumes (maps, masks, T1w).

* :func:`load` opens a dynamic PET image whatever its format: a folder of
  DICOM files (:func:`petbind.io.dicom.load_dicom`), an ECAT7 ``.v``
  (:func:`petbind.io.ecat.load_ecat`), a NIfTI/Analyze image with its BIDS
  sidecar (:func:`petbind.io.bids.load_pet`) or, when ``timing`` is given,
  a NIfTI/Analyze image with its timing elsewhere
  (:func:`petbind.io.nifti.load_nifti`).
* :func:`open_image` opens a NIfTI/Analyze/MGH image lazily, verified
  (:func:`petbind.io.bids.open_nifti`: truncated or damaged files are
  refused with a :class:`~petbind.errors.FileFormatError` naming the file).
* :func:`read_volume` reads a 3-D image into memory with its affine and
  voxel size: what the pipeline wrote (parametric maps, masks, voxel
  statistics) and anatomical images.

The same damaged file gives the same error class and message whichever
part of petbind reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from petbind.errors import FileFormatError
from petbind.image import DynamicImage
from petbind.io.bids import open_nifti
from petbind.io.boundary import file_reader

PathLike = str | os.PathLike

#: File name endings of the NIfTI / Analyze / MGH images :func:`open_image` reads.
IMAGE_ENDINGS = (".nii.gz", ".nii", ".img", ".hdr", ".mgz", ".mgh")


@dataclass(frozen=True)
class Volume:
    """A 3-D image in memory.

    Attributes
    ----------
    data : ndarray (X, Y, Z)
        Voxel values after the file's scale slope and intercept.
    affine : ndarray (4, 4)
        Voxel indices -> scanner/world millimetres.
    zooms : tuple of float
        Voxel size (mm) along the three axes.
    """

    data: NDArray[Any]
    affine: NDArray[np.float64]
    zooms: tuple[float, float, float]


def open_image(path: PathLike) -> Any:
    """A NIfTI/Analyze/MGH image opened lazily and verified (a nibabel image).

    Raises
    ------
    FileFormatError
        Missing, truncated, damaged or not an image (names the file).
    """
    return open_nifti(path)


@file_reader
def read_volume(path: PathLike, *, dtype: DTypeLike = np.float32) -> Volume:
    """Read a 3-D image (a 4-D one with a single volume is squeezed) into memory.

    Parameters
    ----------
    path : path
        ``.nii``, ``.nii.gz``, Analyze or ``.mgz``.
    dtype : dtype
        Type of the returned voxel values (``None``: as stored).

    Raises
    ------
    FileFormatError
        Missing, truncated or damaged file, or not one volume (names the file).
    """
    img = _open_in_memory(Path(path))
    data = np.asarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise FileFormatError(f"expected a 3-D image, got shape {data.shape}", path=path,
                              fix="give a single 3-D volume (a map, mask or anatomy)")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return Volume(data, np.asarray(img.affine, dtype=np.float64), zooms)  # type: ignore[arg-type]


def _open_in_memory(path: Path) -> Any:
    """:func:`open_nifti` of ``path``; a NIfTI ``.nii.gz`` decompressed once, into memory.

    A verified ``.nii.gz`` opened lazily is decompressed twice when it is read whole:
    :func:`~petbind.io.bids.open_nifti`'s check of every gzip member (ISA-L), then
    nibabel's read through Python's ``gzip`` module (zlib, in small reads; at 128 scans
    the report and the voxel statistics read about 650 maps). Here the checking pass
    keeps the bytes (:func:`~petbind.io.verify.read_gzip_verified`: the same errors)
    and nibabel reads the image from them: the same header, the same values.
    """
    import nibabel as nib

    from petbind.io.bids import nifti_stream_size
    from petbind.io.verify import read_gzip_verified

    if not path.name.lower().endswith(".nii.gz"):
        return open_nifti(path)
    img = open_nifti(path, verify_gzip=False)  # header, type, dimensions checked
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        return open_nifti(path)
    raw = read_gzip_verified(path, expected_size=nifti_stream_size(img))
    return type(img).from_bytes(raw)


def load(path: PathLike, *, timing: Any = None, verify_gzip: bool = True,
         **options: Any) -> DynamicImage:
    """Open a dynamic PET image of any supported format.

    Parameters
    ----------
    path : path
        A folder (one DICOM series), an ECAT7 ``.v`` file, or a
        NIfTI/Analyze image.
    timing : FrameTiming or path, optional
        For a NIfTI/Analyze image without a BIDS sidecar: its frame timing
        (then ``units=`` and ``decay_corrected=`` are required, see
        :func:`petbind.io.nifti.load_nifti`).
    verify_gzip : bool
        For a ``.nii.gz``: False skips the whole-stream CRC/length check on
        opening, for a caller that reads the whole stream through
        :func:`open_stream` and then calls
        :func:`petbind.io.verify.check_stream_end` (one decompression instead
        of two; :func:`petbind.io.bids.open_nifti`).
    **options
        Passed to the format's reader (``injection_offset_s``/``units`` for
        ECAT; ``sidecar`` for BIDS; ``units``, ``decay_corrected``,
        ``isotope``, ``decay_reference_min`` with ``timing``).

    Returns
    -------
    DynamicImage
        kBq/mL, decay corrected to injection, times in minutes after injection.

    Raises
    ------
    FileFormatError
        Unknown format, or a file the format's reader refuses.
    TimingError, DecayError, UnitsError, IsotopeError, MetadataError
        From the format's reader.
    """
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        from petbind.io.dicom import load_dicom

        return load_dicom(p, **options)
    if name.endswith(".v"):
        from petbind.io.ecat import load_ecat

        return load_ecat(p, **options)
    if name.endswith(IMAGE_ENDINGS):
        if timing is not None:
            from petbind.io.nifti import load_nifti

            return load_nifti(p, timing, verify_gzip=verify_gzip, **options)
        from petbind.io.bids import load_pet

        return load_pet(p, verify_gzip=verify_gzip, **options)
    raise FileFormatError("unknown image format", path=p,
                          fix="give a NIfTI (.nii/.nii.gz) with its BIDS sidecar, an ECAT7 "
                          ".v file or a folder holding one DICOM series")


def open_stream(path: PathLike) -> Any:
    """A binary stream of an image file, decompressed when it ends in ``.gz``.

    For reading the frames of a large image in order through one handle
    (``.gz`` through :func:`petbind.gz.open_read`: ISA-L when installed,
    about twice zlib's speed). A context manager. When the file is being read
    ahead (:func:`petbind.io.prefetch.start`), that stream is returned: the
    same bytes and errors, read in a background thread since the process
    started.

    Raises
    ------
    OSError
        The file cannot be opened.
    """
    from petbind.io.prefetch import take

    ahead = take(path)  # read ahead since the command line named it (io.prefetch)
    if ahead is not None:
        return ahead
    if str(path).endswith(".gz"):
        from petbind.gz import open_read

        return open_read(path)
    from nibabel.openers import ImageOpener

    return ImageOpener(path)
