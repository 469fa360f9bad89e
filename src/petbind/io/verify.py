"""Verify image files as they are read: gzip integrity, NIfTI data type and dimensions.

nibabel opens a ``.nii.gz`` lazily and decompresses only what is asked for,
so a gzip CRC error (RFC 1952 section 2.3.1: CRC-32 and ISIZE of the
uncompressed data in the member trailer) surfaces only when the end of the
stream is read, and a flipped bit inside a stored (uncompressed) deflate
block is never noticed at all: the image then yields wrong numbers without
an error. :func:`verify_gzip` decompresses the whole stream once, checking
every member's CRC-32 and length (no memory of earlier checks: a file
rewritten within one time-stamp tick keeps its size and mtime).
A reader that decompresses the whole stream anyway (``petbind parametric``
reads every frame in order) opens the image without that pass and calls
:func:`check_stream_end` after its last byte: the same checks, from the one
decompression (issue 18).

:func:`check_image_type` refuses voxel types that are not one number per
voxel (RGB, complex, structured); :func:`check_dynamic_shape` refuses
images that are not 3D or 3D + time, or that have an empty dimension.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from petbind.errors import FileFormatError
from petbind.gz import ERRORS as _GZ_ERRORS
from petbind.gz import (
    check_stream_end,
    damaged_stream_error,
    decompressobj,
    open_read,
    parallel_index,
)

__all__ = ["check_activity_range", "check_dynamic_shape", "check_image_type",
           "check_stream_end", "damaged_stream_error", "read_gzip_verified", "verify_gzip"]

PathLike = str | os.PathLike

#: Bytes decompressed per read while verifying.
_CHUNK = 1 << 22


def verify_gzip(path: PathLike, *, expected_size: int | None = None) -> int:
    """Decompress a gzip file completely, checking every member's CRC-32 and length.

    Parameters
    ----------
    path : str or PathLike
        A ``.gz`` file.
    expected_size : int, optional
        Uncompressed size the file must have (bytes); for a NIfTI image the
        header's ``vox_offset`` plus the data bytes.

    Returns
    -------
    int
        Uncompressed size in bytes.

    Raises
    ------
    FileFormatError
        CRC or length mismatch, truncated stream, data that is not deflate,
        or an uncompressed size other than ``expected_size`` (field ``data``).
    """
    return _verified(Path(path), expected_size, None)


def read_gzip_verified(path: PathLike, *, expected_size: int | None = None) -> bytes:
    """The whole uncompressed content of a gzip file, with :func:`verify_gzip`'s checks.

    One decompression for a reader that needs every byte in memory (a 3-D map:
    :func:`petbind.io.images.read_volume`) instead of a checking pass and a
    second one to read; the same errors, messages and fields as :func:`verify_gzip`.
    """
    parts: list[bytes] = []
    _verified(Path(path), expected_size, parts)
    return b"".join(parts)


def _verified(p: Path, expected_size: int | None, keep: list[bytes] | None) -> int:
    """:func:`_inflate_all` of ``p`` (into ``keep``) with the size check; bytes out."""
    try:
        total = _inflate_all(p, keep)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError, *_GZ_ERRORS) as exc:
        raise damaged_stream_error(p, exc) from None
    if expected_size is not None and total != expected_size:
        raise FileFormatError(
            f"the file decompresses to {total} bytes but its header needs {expected_size}",
            path=p, field="data", fix="copy or re-export the file")
    return total


def _inflate_all(p: Path, keep: list[bytes] | None = None) -> int:
    """Inflate every gzip member of ``p`` (the inflater checks each CRC-32 and ISIZE; ISA-L
    when installed, :func:`petbind.gz.decompressobj`); bytes out (appended to ``keep``
    when given)."""
    total = 0
    if parallel_index(p) is not None:  # written by petbind: members inflated in parallel
        with open_read(p) as g:
            while out := g.read1():
                total += len(out)
                if keep is not None:
                    keep.append(out)
        return total
    members = 0
    d = decompressobj()
    with open(p, "rb") as f:
        while True:
            buf = f.read(_CHUNK)
            if not buf:
                break
            while buf:
                if d.eof:  # the next member (RFC 1952 allows several)
                    if not buf.strip(b"\x00"):
                        buf = b""  # zero padding after the last member
                        break
                    d = decompressobj()
                out = d.decompress(buf, _CHUNK)
                total += len(out)
                if keep is not None:
                    keep.append(out)
                buf = d.unconsumed_tail or d.unused_data
                if d.eof:
                    members += 1
            while not d.eof and (out := d.decompress(b"", _CHUNK)):
                total += len(out)
                if keep is not None:
                    keep.append(out)
    if not d.eof:
        raise EOFError("the compressed stream ends before its end-of-stream marker "
                       "(truncated)")
    if members == 0:
        raise gzip.BadGzipFile("no complete gzip member")
    return total


def check_image_type(img: Any, path: PathLike) -> None:
    """Refuse a NIfTI/Analyze image whose voxels are not single real numbers.

    RGB (NIfTI datatype 128 / 2304), complex (32, 1792, 2048) and other
    structured types cannot be activity concentrations.
    """
    dtype = np.dtype(img.header.get_data_dtype())
    if dtype.fields is not None or dtype.kind not in "uif" or dtype.kind == "b":
        code = None
        try:
            code = int(img.header["datatype"])
        except (KeyError, TypeError, ValueError):
            pass
        kind = "RGB colour" if dtype.fields is not None else f"{dtype} ({dtype.kind})"
        raise FileFormatError(
            f"voxels of type {kind}" + (f" (NIfTI datatype {code})" if code is not None else "")
            + " are not one number each", path=path, field="datatype",
            fix="save the image with a scalar type (float32, int16 ...), one value per voxel")


def check_dynamic_shape(shape: tuple[int, ...], path: PathLike) -> int:
    """Refuse anything but a 3D or 3D + time image with every dimension at least 1.

    Returns
    -------
    int
        The number of frames (1 for a 3D image).
    """
    if len(shape) not in (3, 4):
        raise FileFormatError(f"expected a 3D or 4D (3D + time) image, got shape {shape}",
                              path=path, field="dim", fix="give a dynamic (4D) PET image")
    if any(int(s) < 1 for s in shape):
        axis = ["x", "y", "z (slices)", "time (frames)"][[int(s) < 1 for s in shape].index(True)]
        raise FileFormatError(f"the image has shape {shape}: no voxels along {axis}",
                              path=path, field="dim",
                              fix="re-export the image; it needs at least one slice and frame")
    return int(shape[3]) if len(shape) == 4 else 1


#: Largest activity concentration (kBq/mL) accepted as a measurement: 1e9 kBq/mL is
#: 1e12 Bq/mL (27 Ci/mL), orders of magnitude above any PET tracer. Larger values
#: are unit or export errors, and near 1e308 they overflow the models' integrals.
MAX_ACTIVITY_KBQ_ML = 1e9


def check_activity_range(values: Any, path: PathLike | None, field: str) -> None:
    """Refuse activity concentrations (kBq/mL) above :data:`MAX_ACTIVITY_KBQ_ML` or infinite.

    NaN (``n/a``) is left to the caller.
    """
    v = np.asarray(values, dtype=float)
    bad = np.flatnonzero(np.isinf(v) | (np.abs(np.nan_to_num(v)) > MAX_ACTIVITY_KBQ_ML))
    if bad.size:
        i = int(bad[0])
        raise FileFormatError(
            f"value {v.flat[i]:g} kBq/mL (row {i + 1}) is not a plausible activity "
            f"concentration (limit {MAX_ACTIVITY_KBQ_ML:g} kBq/mL)", path=path, field=field,
            fix="check the unit and the export; activity concentrations are at most a few "
                "thousand kBq/mL")
