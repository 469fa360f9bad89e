"""gzip streams for images: ISA-L (``isal``) when installed, else the standard library.

ISA-L inflated a 1 M-voxel, 29-frame float32 scan about 2x and compressed a
4 MB float32 map at level 1 about 6x faster than ``zlib``
(``benchmarks/bench_parametric_cli.py``). Both back-ends write standard RFC 1952
gzip with MTIME 0 and no file name: equal inputs give equal bytes (same
back-end and level). Their errors surface as ``zlib.error`` / ``EOFError`` /
``OSError``, which the readers turn into :class:`~petbind.errors.FileFormatError`.

Images petbind writes are gzip files of several members (RFC 1952 allows any
number; every gzip reader reads them as one stream): the NIfTI header, then
one member per frame of a 4-D image (frames under 1 MiB grouped), or pieces of
64 MiB otherwise. Each member's header carries an extra subfield ``PM`` (RFC
1952 section 2.3.1.1; readers skip subfields they do not know) with the
member's length in the file and inflated, as BGZF's ``BC`` does for
genomics files. :func:`open_read` finds the members from their headers alone
(:func:`member_index`) and, for a file of 16 MiB or more, inflates them on
:data:`THREADS` worker threads ahead of the reader and in the reader's thread,
each in one call without the GIL: ``verify_gzip`` of a 1 M-voxel, 29-frame scan
took 0.15-0.17 s of wall clock on 2 cores against 0.41-0.47 s as one stream
(issue 18). Any other gzip file (a scanner's, nibabel's), and a small one, is
read as one stream, as before.

Long module: the member writer, the member reader and the one-stream readers
share the format (subfield, sizes) and the error conventions; apart, each would
import the others.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import threading
import zlib
from collections.abc import Iterator
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


#: Worker threads inflating the members of an indexed file ahead of its reader, which
#: inflates too when they are behind: one core each (2 cores: one worker). Two workers
#: beside a reader gathering voxel curves on 2 cores cost 0.62-0.78 CPU-s for the 117 MB
#: scan against 0.51-0.61 with one (concurrent page faults).
THREADS = max(1, min(3, (os.cpu_count() or 1) - 1))
#: Extra-field subfield identifier (SI1, SI2) of a member petbind writes; its 8 bytes are
#: the member's length in the file and inflated (little-endian uint32 each).
SUBFIELD = b"PM"
#: A member's header: ID1 ID2 CM FLG(FEXTRA), MTIME 0, XFL 0, OS 255 (unknown), XLEN 12,
#: then the subfield (SI1 SI2, LEN 8, member length, inflated length).
_HEADER = struct.Struct("<4sIBBH2sHII")
#: Smallest member of a 4-D image's frames (smaller frames are grouped).
MEMBER_MIN = 2**20
#: Largest member (bytes inflated): pieces of this size where a frame is larger, or the
#: data is not a 4-D NIfTI-1 image.
MEMBER_MAX = 64 * 2**20
#: Indexed files of fewer inflated bytes are read as one stream (:func:`parallel_index`).
PARALLEL_MIN = 16 * 2**20
#: Inflated bytes the reader of an indexed file holds ahead (at least one member per thread).
READ_AHEAD = 64 * 2**20
#: Size of a NIfTI-1 header (``sizeof_hdr``).
NIFTI1_HEADER = 348


def nifti_frames(head: bytes) -> tuple[int, int] | None:
    """``(data offset, bytes per frame)`` of a 4-D NIfTI-1 image from its first 348 bytes,
    or None when ``head`` is not such a header (3-D, NIfTI-2, Analyze, other data)."""
    if len(head) < NIFTI1_HEADER:
        return None
    for end in "<>":
        if struct.unpack_from(end + "i", head, 0)[0] != NIFTI1_HEADER:
            continue
        dim = struct.unpack_from(end + "8h", head, 40)
        bitpix = struct.unpack_from(end + "h", head, 72)[0]
        offset = struct.unpack_from(end + "f", head, 108)[0]
        if dim[0] == 4 and min(dim[1:5]) > 0 and bitpix in (8, 16, 32, 64, 128) \
                and NIFTI1_HEADER <= offset < 2**31 and offset == int(offset):
            return int(offset), dim[1] * dim[2] * dim[3] * bitpix // 8
    return None


def _member_sizes(head: bytes) -> Iterator[int]:
    """Inflated sizes of the members of a stream that starts with ``head``: the header up
    to the data, then whole frames (at least :data:`MEMBER_MIN` bytes) for a 4-D NIfTI-1
    image; pieces of :data:`MEMBER_MAX` otherwise."""
    layout = nifti_frames(head)
    if layout is None:
        while True:
            yield MEMBER_MAX
    first, frame = layout
    yield first
    step = frame * max(1, -(-MEMBER_MIN // frame)) if frame <= MEMBER_MAX else MEMBER_MAX
    while True:
        yield step


def member(data: Any, level: int = LEVEL) -> bytes:
    """One gzip member of ``data`` with the ``PM`` subfield (its length and ``len(data)``)."""
    if _isal_zlib is not None:
        body = _isal_zlib.compress(data, min(level, _isal_zlib.ISAL_BEST_COMPRESSION),
                                   wbits=-zlib.MAX_WBITS)
        crc = _isal_zlib.crc32(data)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        body, crc = c.compress(data) + c.flush(), zlib.crc32(data)
    n = len(memoryview(data).cast("B"))
    total = _HEADER.size + len(body) + 8
    return b"".join((_HEADER.pack(b"\x1f\x8b\x08\x04", 0, 0, 255, 12, SUBFIELD, 8, total, n),
                     body, struct.pack("<II", crc & 0xFFFFFFFF, n & 0xFFFFFFFF)))


class _MemberWriter(io.RawIOBase):
    """Write-only gzip stream of members (:func:`member`, :func:`_member_sizes`' layout);
    ``tell`` and forward ``seek`` (zeros) as nibabel's writers use them.

    What was written is kept as immutable ``bytes`` until a member is full: a
    ``bytearray`` cut from the front failed in a dask worker ("Existing exports
    of data: object cannot be re-sized"), its profiler holding a frame whose
    ``memoryview`` of it was still alive.
    """

    def __init__(self, fileobj: IO[bytes], level: int) -> None:
        super().__init__()
        self._out = fileobj
        self._level = level
        self._parts: list[bytes] = []
        self._have = 0
        self._sizes: Iterator[int] | None = None
        self._size = 0
        self._pos = 0
        self._members = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        target = {0: offset, 1: self._pos + offset}.get(whence)
        if target is None or target < self._pos:
            raise io.UnsupportedOperation("a gzip stream being written only seeks forward")
        if target > self._pos:
            self.write(bytes(target - self._pos))
        return self._pos

    def write(self, b: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed gzip stream")
        data = b if type(b) is bytes else memoryview(b).cast("B").tobytes()
        if data:
            self._parts.append(data)
            self._have += len(data)
            self._pos += len(data)
            self._emit(final=False)
        return len(data)

    def _joined(self) -> bytes:
        if len(self._parts) > 1:
            self._parts = [b"".join(self._parts)]
        return self._parts[0] if self._parts else b""

    def _emit(self, final: bool) -> None:
        if self._sizes is None:
            if self._have < NIFTI1_HEADER and not final:
                return
            self._sizes = _member_sizes(self._joined()[:NIFTI1_HEADER])
            self._size = next(self._sizes)
        while self._have >= self._size or (final and (self._have or not self._members)):
            k = min(self._size, self._have)
            data = self._joined()
            self._out.write(member(memoryview(data)[:k], self._level))
            self._parts = [data[k:]] if k < len(data) else []
            self._have -= k
            self._members += 1
            self._size = next(self._sizes)

    def close(self) -> None:
        if not self.closed:
            try:
                self._emit(final=True)
            finally:
                super().close()


def open_write(fileobj: IO[bytes], level: int = LEVEL) -> Any:
    """A gzip writer around ``fileobj`` (MTIME 0, no name: reproducible bytes).

    The stream is written as indexed members (the module's docstring): the
    header of a NIfTI-1 image, then its frames; any gzip reader reads them as
    one stream, and :func:`open_read` inflates them in parallel.
    """
    return _MemberWriter(fileobj, level)


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


def member_index(path: str | os.PathLike) -> list[tuple[int, int, int]] | None:
    """``[(offset, length, inflated length), ...]`` of the members of a gzip file petbind
    wrote (:func:`open_write`), from their headers alone; None for any other file.

    Every member must carry the ``PM`` subfield and the last one end at the end
    of the file (or before zero padding only); otherwise (a file from another
    writer, a truncated or damaged one) None, and the file is read as one stream,
    whose reader reports any damage as before.
    """
    out = []
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = 0
            while offset < size:
                f.seek(offset)
                head = f.read(_HEADER.size)
                if len(head) < _HEADER.size or head[:4] != b"\x1f\x8b\x08\x04":
                    if out and not head.strip(b"\x00") and not f.read().strip(b"\x00"):
                        break  # zero padding after the last member
                    return None
                _, _, _, _, xlen, si, slen, total, n = _HEADER.unpack(head)
                if xlen != 12 or si != SUBFIELD or slen != 8 or total < _HEADER.size + 8 \
                        or offset + total > size:
                    return None
                out.append((offset, total, n))
                offset += total
    except (OSError, ValueError):
        return None
    return out or None


def parallel_index(path: str | os.PathLike) -> list[tuple[int, int, int]] | None:
    """:func:`member_index` of a file worth reading member by member (at least
    :data:`PARALLEL_MIN` bytes inflated in two or more data members), else None: a map
    of one member read through the member reader took 1.45 s for 166 maps in ``petbind
    run`` against 0.82 s as one stream (thread hand-overs, fresh output buffers)."""
    index = member_index(path)
    if index is None or len(index) < 3 or sum(n for *_, n in index) < PARALLEL_MIN:
        return None
    return index


def _inflate_member(raw: bytes, n: int) -> bytes:
    """The inflated bytes of one member (its CRC-32 and ISIZE checked), ``n`` long.

    The output buffer is made ``n + 1`` bytes at once: the inflater takes the GIL
    back each time it grows its buffer, and beside a busy main thread each time
    waited up to the switch interval (a 29-member, 117 MB scan: 1.6 s of wall
    clock for 0.4 CPU-s, against 0.43 s for 0.27 CPU-s with the buffer sized).
    """
    size = n + 1
    try:
        out = (_isal_zlib.decompress(raw, wbits=16 + zlib.MAX_WBITS, bufsize=size)
               if _isal_zlib is not None
               else zlib.decompress(raw, wbits=16 + zlib.MAX_WBITS, bufsize=size))
    except ERRORS as exc:
        raise zlib.error(str(exc)) from None
    if len(out) != n:
        raise zlib.error(f"a gzip member inflated to {len(out)} bytes, its header says {n}")
    return out


class ChunkedStream(io.RawIOBase):
    """A read-only stream over chunks of bytes that a subclass hands out in order
    (:meth:`_next_chunk`, b"" at the end): ``read`` (a whole chunk without a copy),
    ``read1``, ``readinto``, ``tell`` and forward ``seek``; a backward seek calls
    :meth:`_rewind` (refused unless the subclass can start again)."""

    def __init__(self) -> None:
        super().__init__()
        self._cur: bytes = b""
        self._at = 0
        self._pos = 0

    def _next_chunk(self) -> bytes:
        raise NotImplementedError

    def _rewind(self) -> None:
        raise io.UnsupportedOperation("this stream only seeks forward")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _take(self, n: int) -> memoryview | bytes:
        """Up to ``n`` bytes (``n < 0``: the rest of the current chunk) at the position."""
        if self._at >= len(self._cur):
            self._cur, self._at = self._next_chunk(), 0
            if not self._cur:
                return b""
        left = len(self._cur) - self._at
        k = left if n < 0 else min(n, left)
        if self._at == 0 and k == len(self._cur):
            out: memoryview | bytes = self._cur  # a whole chunk: no copy
        else:
            out = memoryview(self._cur)[self._at:self._at + k]
        self._at += k
        self._pos += k
        return out

    def read(self, size: int | None = -1) -> bytes:
        need = -1 if size is None or size < 0 else size
        parts = []
        while need != 0:
            part = self._take(need)
            if not len(part):
                break
            parts.append(part)
            if need > 0:
                need -= len(part)
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (``-1``: the rest of the current chunk, a whole chunk without
        a copy); b"" at the end."""
        part = self._take(size)
        return part if isinstance(part, bytes) else bytes(part)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = 0
        while n < len(view):
            part = self._take(len(view) - n)
            if not len(part):
                break
            view[n:n + len(part)] = part
            n += len(part)
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        target = {0: offset, 1: self._pos + offset}.get(whence)
        if target is None or target < 0:
            raise io.UnsupportedOperation("seek from the end of a stream")
        if target < self._pos:
            self._rewind()
            self._cur, self._at, self._pos = b"", 0, 0
        while self._pos < target:
            if not len(self._take(target - self._pos)):
                break
        return self._pos


class _MemberReader(ChunkedStream):
    """Read-only stream of an indexed gzip file (:func:`member_index`).

    ``threads`` worker threads take the members in file order and inflate each
    in one call (no GIL), up to :data:`READ_AHEAD` bytes (and at least one
    member per thread) ahead of the reader; while it waits for a member, the
    reader inflates the next one nobody has taken (with ``threads=0``, every
    member). It gets them in order, and a member's error once the bytes before it
    are read. Seeks backward start again from the first member.

    Handing a member from a worker to the reader costs a GIL hand-over, which a
    process with other busy threads (a dask client's event loop) makes slow.
    """

    def __init__(self, path: str | os.PathLike, index: list[tuple[int, int, int]],
                 threads: int = THREADS) -> None:
        super().__init__()
        self.name = os.fspath(path)
        self._file = open(path, "rb")  # closed by close()
        self._index = index
        self._ends = [0]
        for _, _, n in index:
            self._ends.append(self._ends[-1] + n)
        self._threads = max(0, threads)
        self._cond = threading.Condition()
        self._gen = 0  # a backward seek starts a new generation of workers
        self._taken = 0  # next member a worker takes
        self._given = 0  # next member the reader gets
        self._done: dict[int, bytes | BaseException] = {}
        self._started = False

    def _raw(self, i: int) -> bytes:
        offset, total, _ = self._index[i]
        if hasattr(os, "pread"):
            raw = os.pread(self._file.fileno(), total, offset)
        else:  # pragma: no cover - Windows
            with self._cond:
                self._file.seek(offset)
                raw = self._file.read(total)
        if len(raw) != total:
            raise EOFError("the compressed file ends inside a gzip member (truncated)")
        return raw

    def _may_take(self) -> bool:
        ahead = self._ends[self._taken] - self._ends[self._given]
        return self._taken - self._given < self._threads or ahead < READ_AHEAD

    def _work(self, gen: int) -> None:
        while True:
            with self._cond:
                while gen == self._gen and self._taken < len(self._index) \
                        and not self._may_take():
                    self._cond.wait()
                if gen != self._gen or self._taken >= len(self._index):
                    return
                i = self._taken
                self._taken += 1
            try:
                out: bytes | BaseException = _inflate_member(self._raw(i), self._index[i][2])
            except BaseException as exc:  # handed to the reader, raised there
                out = exc
            with self._cond:
                if gen != self._gen:
                    return
                self._done[i] = out
                self._cond.notify_all()

    def _spawn(self) -> None:
        self._started = True
        for k in range(self._threads):
            threading.Thread(target=self._work, args=(self._gen,), daemon=True,
                             name=f"petbind-inflate-{k}").start()

    def _next_chunk(self) -> bytes:
        """The next member's bytes; b"" at the end. While the member it needs is being
        inflated by a worker, the reader inflates the next one nobody has taken (it
        waits only when there is none)."""
        if not self._started:
            self._spawn()
        while True:
            with self._cond:
                i = self._given
                if i >= len(self._index):
                    return b""
                if i in self._done:
                    out = self._done.pop(i)
                    self._given += 1
                    self._cond.notify_all()
                elif self._taken < len(self._index) and (self._taken == i
                                                         or self._may_take()):
                    j = self._taken
                    self._taken += 1
                    out = None
                else:
                    self._cond.wait()
                    continue
            if out is None:  # inflate member j here, then look again
                try:
                    got: bytes | BaseException = _inflate_member(self._raw(j),
                                                                 self._index[j][2])
                except BaseException as exc:
                    got = exc
                with self._cond:
                    self._done[j] = got
                    self._cond.notify_all()
                continue
            if isinstance(out, BaseException):
                raise out
            if out:
                return out

    def _rewind(self) -> None:
        self._stop()
        self._started = False
        self._taken = self._given = 0

    def _stop(self) -> None:
        with self._cond:
            self._gen += 1
            self._done.clear()
            self._cond.notify_all()

    def close(self) -> None:
        if not self.closed:
            self._stop()
            self._file.close()
            self._cur = b""
        super().close()


def open_read(path: str | os.PathLike, *, buffer_size: int | None = None,
              threads: int | None = None, members: bool = True) -> Any:
    """A gzip reader of ``path`` (seekable forward, as :func:`gzip.open`).

    A file petbind wrote (:func:`member_index`) is inflated member by member on
    ``threads`` threads (default :data:`THREADS`) ahead of the reader, and in the
    reader's thread (``buffer_size`` does not apply); a small one
    (:func:`parallel_index`) as one stream. ``members=False`` reads such a file as one
    stream too, in the caller's thread: for a reader that copies every byte into
    its own buffer (nibabel's ``readinto``), where inflating ahead into new
    ``bytes`` cost 0.1 CPU-s more per 117 MB (the copy and the new pages) for
    0.1 s less wall clock, and CPU is what a busy worker lacks.

    ``buffer_size`` (ISA-L only): compressed bytes taken from the file at a
    time. ISA-L's reader inflates without the GIL and takes it back to refill
    its buffer (512 KiB by default); a reader in a background thread beside a
    busy main thread (:mod:`petbind.io.prefetch`) waits up to the interpreter's
    switch interval (5 ms) at every refill, so it reads in large buffers. The
    reader then has ``read`` (full reads up to the end) and ``close`` only.
    """
    index = parallel_index(path) if members else None
    if index is not None:
        return _MemberReader(path, index, THREADS if threads is None else threads)
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
