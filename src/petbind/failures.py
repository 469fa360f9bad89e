"""Expected operating-system and library failures, said as a PetbindError.

The command line (:func:`petbind.cli.main`) passes any exception that is not
a :class:`~petbind.errors.PetbindError` through :func:`as_petbind_error`:
a full disk, a read-only or unwritable folder, a file where a folder should
be, an unreachable dask scheduler, nesting too deep to parse or memory
running out become one line naming the file and the fix. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import errno

from petbind.errors import PetbindError

#: errno -> (what happened, fix)
_OS = {
    errno.EACCES: ("permission denied", "choose a folder you may write to (--out), or change "
                   "the permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you may write to (--out), or "
                  "change the permissions"),
    errno.EROFS: ("the file system is read-only", "write the outputs to a writable disk (--out)"),
    errno.ENOSPC: ("no space left on the device", "free disk space, or write the outputs to "
                   "another disk (--out)"),
    errno.EDQUOT: ("disk quota exceeded", "free space in your quota, or write the outputs "
                   "elsewhere (--out)"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "name a folder, or remove "
                    "the file in its way"),
    errno.EISDIR: ("is a folder, not a file", "name a file"),
    errno.EEXIST: ("already exists", "remove it or choose another name"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("the file name is too long", "use a shorter path"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or process fewer scans "
                   "at once"),
    errno.ECONNREFUSED: ("connection refused", "check the address, and that the service "
                         "(e.g. the dask scheduler) runs"),
    errno.EHOSTUNREACH: ("host unreachable", "check the address and the network"),
}


def as_petbind_error(exc: BaseException) -> PetbindError | None:
    """The :class:`PetbindError` that says ``exc`` for a person, or None for a bug."""
    if isinstance(exc, PetbindError):
        return exc
    if isinstance(exc, OSError):
        path = exc.filename if exc.filename is not None else exc.filename2
        what, fix = _OS.get(exc.errno or -1, (None, None))
        if (isinstance(exc, TimeoutError | ConnectionError) or exc.errno == errno.ETIMEDOUT
                or "connect" in str(exc).lower()):
            what = str(exc) or "connection failed"
            fix = "check the address, and that the service (e.g. the dask scheduler) runs"
        if what is None:
            what = exc.strerror or str(exc) or type(exc).__name__
            fix = "check the path, the permissions and the free space"
        return PetbindError(what, path=path, fix=fix)
    if isinstance(exc, RecursionError):
        return PetbindError("an input is nested too deeply to read (maximum recursion depth)",
                            fix="flatten the file's nesting (JSON/TOML are a few levels deep)")
    if isinstance(exc, MemoryError):
        return PetbindError("out of memory", fix="process fewer or smaller inputs at once, or "
                            "use a machine with more memory")
    return None
