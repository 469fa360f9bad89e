"""An image's bytes read ahead in a background thread, from the start of the process.

``petbind parametric`` reads its 4D scan once, in order, from the first byte
to the last (:func:`petbind.parametric.images._frame_reader`). Inflating a
1 M-voxel ``.nii.gz`` takes about 0.4 CPU-s (ISA-L, one deflate stream), and
the command's imports and option parsing about as long again; both are
serial, but they need not wait for each other. :func:`start` begins reading
(and inflating) the file in a thread as soon as the command line names it
(:func:`petbind.commands.start_early`, before typer parses the options); the
reader takes the stream over with :func:`take` (through
:func:`petbind.io.images.open_stream`) and gets the same bytes, and the same
errors at the same positions, as from opening the file itself: the thread
reads through the same reader (:func:`petbind.gz.open_read` for ``.gz``,
which checks every gzip member's CRC-32 and length at its end), and an error
it meets is raised to the consumer once the bytes before it are used up.

Memory: at most :data:`MAX_AHEAD` bytes are held ahead of the consumer (the
consumer is faster than the inflater once it starts, so in practice what the
thread read while the imports ran). The inflater and the file read release
the GIL, so on 2 cores this runs beside the main thread's imports.
A prefetch nobody takes is dropped by :func:`cancel_all` (the CLI's exit).
"""

from __future__ import annotations

import collections
import io
import os
import threading
from pathlib import Path
from typing import Any

from petbind.gz import ChunkedStream, nifti_frames, open_read

#: Bytes per read of the background thread where the file is not a 4-D NIfTI-1 image
#: (whose frames are read one per chunk); large reads: few GIL hand-overs.
CHUNK = 8 * 2**20
#: Compressed bytes taken from a ``.gz`` file at a time (:func:`petbind.gz.open_read`: the
#: reader waits for the GIL only at each refill, so few refills while the main thread
#: imports; with igzip's 512 KiB the 101 MB scan took 0.69 s of wall clock to inflate
#: 0.46 CPU-s beside the imports).
GZ_BUFFER = 16 * 2**20
#: Size of a NIfTI-1 header (``sizeof_hdr``).
_NIFTI1_HEADER = 348
#: Most bytes read ahead of the consumer (the thread waits beyond this).
MAX_AHEAD = 256 * 2**20

_LOCK = threading.Lock()
_PENDING: dict[str, _Prefetch] = {}


def _frame_layout(head: bytes) -> tuple[int, int]:
    """``(data offset, bytes per frame)`` of a 4-D NIfTI-1 image from its header
    (:func:`petbind.gz.nifti_frames`), so that every chunk read ahead is one frame (handed
    to the reader without a copy); for any other file ``(len(head), CHUNK)``."""
    layout = nifti_frames(head)
    if layout is not None and layout[1] <= MAX_AHEAD // 4:
        return layout
    return len(head), CHUNK


def _identity(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _Prefetch:
    """The background reader of one file and its buffer of chunks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity = _identity(path)
        self.chunks: collections.deque[bytes] = collections.deque()
        self.ahead = 0
        self.done = False
        self.error: BaseException | None = None
        self.stopped = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._fill, name="petbind-prefetch",
                                       daemon=True)

    def _open(self) -> Any:
        if self.path.endswith(".gz"):
            return open_read(self.path, buffer_size=GZ_BUFFER, threads=0)  # this thread inflates
        return open(self.path, "rb")  # closed in _fill

    def _put(self, b: bytes) -> bool:
        """Queue ``b``; False once stopped (or ``b`` is empty: the end)."""
        with self.cond:
            while self.ahead and self.ahead + len(b) > MAX_AHEAD and not self.stopped:
                self.cond.wait()
            if not b or self.stopped:
                return False
            self.chunks.append(b)
            self.ahead += len(b)
            self.cond.notify_all()
            return True

    def _fill(self) -> None:
        try:
            with self._open() as f:
                head = f.read(_NIFTI1_HEADER)  # the GIL is released while inflating / reading
                first, step = _frame_layout(head)
                if not self._put(head):
                    return
                if first > len(head) and not self._put(f.read(first - len(head))):
                    return
                while self._put(f.read(step)):
                    pass
        except BaseException as exc:  # handed to the consumer, raised there
            with self.cond:
                self.error = exc
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def next_chunk(self) -> bytes:
        """The next chunk (waiting for it); b"" at the end; the thread's error after the
        bytes before it."""
        with self.cond:
            while not self.chunks and not self.done:
                self.cond.wait()
            if self.chunks:
                b = self.chunks.popleft()
                self.ahead -= len(b)
                self.cond.notify_all()
                return b
            if self.error is not None:
                raise self.error
            return b""

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.chunks.clear()
            self.ahead = 0
            self.cond.notify_all()


class PrefetchedStream(ChunkedStream):
    """A read-only, forward-seekable stream of a :class:`_Prefetch`'s bytes.

    ``read`` (one whole chunk, a frame, without a copy), ``readinto``, ``seek``
    (forward only: the bytes behind are gone), ``tell``
    (:class:`petbind.gz.ChunkedStream`); a context manager that stops the thread on
    exit.
    """

    def __init__(self, pre: _Prefetch) -> None:
        super().__init__()
        self._pre = pre
        self.name = pre.path

    def _next_chunk(self) -> bytes:
        return self._pre.next_chunk()

    def _rewind(self) -> None:
        raise io.UnsupportedOperation("a prefetched stream only seeks forward")

    def close(self) -> None:
        if not self.closed:
            self._pre.stop()
            self._cur = b""
        super().close()


def start(path: str | os.PathLike) -> bool:
    """Begin reading ``path`` (``.nii.gz`` inflated, ``.nii`` as it is) in a background thread.

    Returns False (nothing started) when the file does not exist or is
    already being read ahead; never raises for a file it cannot read (the
    command that opens it later reports that).
    """
    p = os.path.abspath(os.fspath(path))
    try:
        pre = _Prefetch(p)
    except (OSError, ValueError):
        return False
    with _LOCK:
        if p in _PENDING:
            return False
        _PENDING[p] = pre
    pre.thread.start()
    return True


def take(path: str | os.PathLike) -> PrefetchedStream | None:
    """The stream of a prefetch of ``path`` started by :func:`start`, or None.

    A prefetch is taken once. If the file changed since it started (device,
    inode, size or modification time) it is dropped and None returned.
    """
    p = os.path.abspath(os.fspath(path))
    with _LOCK:
        pre = _PENDING.pop(p, None)
    if pre is None:
        return None
    try:
        same = _identity(p) == pre.identity
    except (OSError, ValueError):
        same = False
    if not same:
        pre.stop()
        return None
    return PrefetchedStream(pre)


def cancel_all() -> None:
    """Stop and drop every prefetch not taken (their threads end at their next chunk)."""
    with _LOCK:
        pending = list(_PENDING.values())
        _PENDING.clear()
    for pre in pending:
        pre.stop()


def pending() -> list[Path]:
    """Files being read ahead and not yet taken."""
    with _LOCK:
        return [Path(p) for p in _PENDING]
