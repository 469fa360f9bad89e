"""gzip streams for images: ISA-L (``isal``) when installed, else the standard library.

Reading and writing ``.nii.gz`` is most of a parametric map's run time once the
fit is fast: measured on a 1 M-voxel, 29-frame float32 image (117 MB raw,
101 MB gzipped; 2 cores, other jobs running), decompressing took 4.8-7.2 s with
``zlib`` and 2.1-4.9 s with ISA-L, and compressing one 4 MB float32 map at
level 1 took 1.26 s with ``zlib`` and 0.20 s with ISA-L (smaller output: 3.24
vs 3.32 MB). ``benchmarks/bench_parametric_cli.py`` measures the whole command.

Both back-ends write standard RFC 1952 gzip that any reader accepts, with
MTIME = 0 and no file name, so equal inputs give equal bytes (with the same
back-end and level). Decompression errors of either back-end surface as
``zlib.error`` / ``EOFError`` / ``OSError``, the exceptions the readers
already turn into :class:`~petbind.errors.FileFormatError`.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import IO, Any

from petbind.errors import FileFormatError

try:  # pragma: no branch - which one is installed decides
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency; the fallback stays correct
    _igzip = None
    _isal_zlib = None

#: Which gzip implementation this process uses ("isal" or "zlib").
BACKEND = "isal" if _igzip is not None else "zlib"
#: gzip level of written images: 1 (the fastest level of both back-ends that still
#: compresses; ISA-L level 1 was smaller than zlib level 1 on float32 maps).
LEVEL = 1


def open_write(fileobj: IO[bytes], level: int = LEVEL) -> Any:
    """A gzip writer around ``fileobj`` (MTIME 0, no name: reproducible bytes)."""
    if _igzip is not None:
        return _igzip.IGzipFile(filename="", mode="wb", fileobj=fileobj, mtime=0,
                                compresslevel=min(level, _isal_zlib.ISAL_BEST_COMPRESSION))
    return gzip.GzipFile(filename="", mode="wb", fileobj=fileobj, mtime=0,
                         compresslevel=level)


if _igzip is not None:
    class _IsalReader(_igzip.IGzipFile):
        """ISA-L reader whose errors are the standard library's (``zlib.error``)."""

        def read(self, size: int = -1) -> bytes:
            try:
                return super().read(size)
            except _isal_zlib.error as exc:
                raise zlib.error(str(exc)) from None

        def readinto(self, b: Any) -> int:
            try:
                return super().readinto(b)
            except _isal_zlib.error as exc:
                raise zlib.error(str(exc)) from None

        def seek(self, offset: int, whence: int = 0) -> int:
            try:
                return super().seek(offset, whence)
            except _isal_zlib.error as exc:
                raise zlib.error(str(exc)) from None


#: Exceptions of either back-end's inflater for a damaged stream.
ERRORS: tuple[type[BaseException], ...] = (
    (zlib.error,) if _isal_zlib is None else (zlib.error, _isal_zlib.error))


def decompressobj() -> Any:
    """An inflater of one gzip member (``zlib.decompressobj(16 + MAX_WBITS)`` API: it checks
    the member's CRC-32 and ISIZE), ISA-L's when installed: inflating a 101 MB float32
    scan took 1.3 s of CPU against 2.2 s with zlib (issue 18)."""
    if _isal_zlib is not None:
        return _isal_zlib.decompressobj(16 + zlib.MAX_WBITS)
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def open_read(path: str | os.PathLike, *, buffer_size: int | None = None) -> Any:
    """A gzip reader of ``path`` (seekable forward, as :func:`gzip.open`).

    ``buffer_size`` (ISA-L only): compressed bytes taken from the file at a
    time. ISA-L's reader inflates without the GIL and takes it back to refill
    its buffer (512 KiB by default); a reader in a background thread beside a
    busy main thread (:mod:`petbind.io.prefetch`) waits up to the interpreter's
    switch interval (5 ms) at every refill, so it reads in large buffers. The
    reader then has ``read`` (full reads up to the end) and ``close`` only.
    """
    if _igzip is not None:
        if buffer_size is not None:
            return _IsalBufferedReader(os.fspath(path), buffer_size)
        return _IsalReader(os.fspath(path), "rb")
    return gzip.open(path, "rb")


class _IsalBufferedReader:
    """ISA-L's gzip reader on ``path`` with a ``buffer_size`` input buffer; errors as
    :class:`_IsalReader`'s (``zlib.error``). ``read(n)`` returns ``n`` bytes unless the
    stream ends first."""

    def __init__(self, path: str, buffer_size: int) -> None:
        self._file = open(path, "rb")  # closed by close()
        try:
            self._reader = _igzip._IGzipReader(self._file, buffer_size)
        except BaseException:
            self._file.close()
            raise

    def read(self, size: int = -1) -> bytes:
        try:
            if size < 0:
                return self._reader.readall()
            parts = []
            while size > 0:
                b = self._reader.read(size)
                if not b:
                    break
                parts.append(b)
                size -= len(b)
        except _isal_zlib.error as exc:
            raise zlib.error(str(exc)) from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        self._reader.close()
        self._file.close()

    def __enter__(self) -> _IsalBufferedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def damaged_stream_error(p: Any, exc: BaseException, where: str = "") -> FileFormatError:
    """The error for a gzip stream whose inflater failed (``exc``): CRC or length mismatch,
    truncation, data that is not deflate. ``where`` prefixes the message
    (``"reading frame 3: "``)."""
    return FileFormatError(
        f"{where}the compressed file is damaged ({exc}); its data cannot be trusted",
        path=p, field="data",
        fix="copy or re-export the file (a gzip CRC or length error means the bytes "
            "changed after it was written)")


def check_stream_end(fobj: Any, path: str | os.PathLike, *, expected_size: int) -> None:
    """Check a gzip stream read up to ``expected_size`` bytes: it ends there, intact.

    ``fobj`` is a gzip reader (:func:`open_read`, :func:`petbind.io.images.open_stream`) whose
    first ``expected_size`` decompressed bytes (a NIfTI's ``vox_offset`` plus
    its data) have been read. Reading on to the end of the file makes the
    reader check the CRC-32 and ISIZE trailer of every member (RFC 1952
    section 2.3.1; zero padding after the last member is allowed), so
    together with the reads before it this is
    :func:`petbind.io.verify.verify_gzip` from one
    decompression.

    Raises
    ------
    FileFormatError
        CRC or length mismatch, a truncated stream, or data beyond
        ``expected_size`` (field ``data``).
    """
    try:
        pos = fobj.tell()
        extra = fobj.read(1)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError, *ERRORS) as exc:
        raise damaged_stream_error(path, exc) from None
    if pos != expected_size or extra:
        raise FileFormatError(
            f"the file decompresses to {'more than ' if extra else ''}{pos + len(extra)} "
            f"bytes but its header needs {expected_size}",
            path=path, field="data", fix="copy or re-export the file")
