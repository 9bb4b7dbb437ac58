"""Small file-system helpers shared by the synchronous core.

``os_error`` is the one place where an OSError becomes a typed error.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
import errno
import os
from pathlib import Path
import stat
from typing import BinaryIO, Final

from .errors import (
    BackupNotFoundError,
    BackupOffloadError,
    InsufficientSpaceError,
    InvalidBackupError,
    LocationUnavailableError,
    WriteFailedError,
)

_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# fsync on a directory is refused by some file systems (CIFS, some FUSE):
# the rename is then as durable as that file system makes it.
_FSYNC_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EBADF)
# Write errors that mean "the file system is full".
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Errors that mean "this location does not accept writes" when writing.
NOT_WRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class Place(Enum):
    """Where in the location a file-system call failed."""

    LOCATION = "location"
    """The location's directory itself: gone, read-only, unreachable."""
    FILE = "file"
    """A file in the location: a backup, its sidecar, a file being written."""


@dataclass(frozen=True, slots=True)
class Local:
    """A failure on this machine (staging, the configuration), not the location's.

    The caller's operation names its errors: one for a full file system,
    one for anything else.
    """

    space: type[BackupOffloadError]
    failed: type[BackupOffloadError]


def errno_name(err: OSError) -> str:
    """Return the symbolic errno name (``ENOTCONN``), or the number."""
    if err.errno is None:
        return "unknown error"
    return errno.errorcode.get(err.errno, str(err.errno))


def os_error(
    err: OSError,
    subject: str,
    *,
    writing: bool,
    where: Place | Local = Place.FILE,
    **placeholders: str,
) -> BackupOffloadError:
    """Return the typed error for ``err``, an OSError on ``subject``.

    The one mapping of OSError. In the location (``Place``): reading a file
    that is gone is BackupNotFoundError, any other read error means the
    share is broken (``unreachable``: the location is unavailable); writing
    a file fails for space (InsufficientSpaceError) or otherwise
    (WriteFailedError); the directory itself is not found, too long, not
    writable (when writing) or unreachable. On this machine (``Local``):
    the caller's errors, and ``subject`` says what was being done.
    """
    if isinstance(where, Local):
        cls = where.space if err.errno in SPACE_ERRNOS else where.failed
        return cls(f"{subject}: {_detail(err)}", errno=errno_name(err), **placeholders)
    if where is Place.LOCATION:
        return _directory_error(err, subject, writing=writing, **placeholders)
    if writing:
        return _file_write_error(err, subject, **placeholders)
    if err.errno == errno.ENOENT:
        return BackupNotFoundError(f"{subject} does not exist", **placeholders)
    return LocationUnavailableError(
        f"Reading {subject} failed: {err}", "unreachable", **placeholders
    )


def _detail(err: OSError) -> str:
    return f"{errno_name(err)} ({err.strerror or err})"


def _file_write_error(
    err: OSError, subject: str, **placeholders: str
) -> BackupOffloadError:
    """Return the error of a write to a file in the location."""
    if err.errno in SPACE_ERRNOS:
        return InsufficientSpaceError(
            f"Not enough space for {subject}: {_detail(err)}",
            errno=errno_name(err),
            **placeholders,
        )
    return WriteFailedError(
        f"Writing {subject} failed: {_detail(err)}",
        errno=errno_name(err),
        **placeholders,
    )


def _directory_error(
    err: OSError, subject: str, *, writing: bool, **placeholders: str
) -> BackupOffloadError:
    """Return the error of a call on the location's directory itself."""
    message = f"{subject}: {err.strerror or err} ({errno_name(err)})"
    placeholders.setdefault("path", subject)
    if err.errno in SPACE_ERRNOS:
        return InsufficientSpaceError(message, **placeholders)
    reason = _location_reason(err, writing=writing)
    return LocationUnavailableError(message, reason, **placeholders)


def _location_reason(err: OSError, *, writing: bool) -> str:
    """Return why the location's directory cannot be used."""
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return "not_found"
    if err.errno == errno.ENAMETOOLONG:
        return "path_too_long"
    if writing and err.errno in NOT_WRITABLE_ERRNOS:
        return "not_writable"
    # ENOTCONN, EIO, ESTALE, EHOSTDOWN, ETIMEDOUT, ... and EACCES on a read:
    # the share (or the way to it) is broken, not the path itself.
    return "unreachable"


def write_error(err: OSError, what: str) -> BackupOffloadError:
    """Return the typed error for an OSError while writing ``what``."""
    return os_error(err, what, writing=True)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the descriptor ``fd`` (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_error(path: Path, err: OSError) -> BackupOffloadError:
    """Return the typed error for an OSError while reading a location's file."""
    return os_error(err, path.name, writing=False, file=path.name)


def file_kind(mode: int) -> str:
    """Return what a file that is not a regular file is, in words."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((word for test, word in kinds if test(mode)), "a device")


def open_regular(path: Path, *, buffering: int = -1) -> BinaryIO:
    """Open a location's file for reading: only a regular file, never blocking.

    Anyone who can write to a share can put a FIFO (an ``open`` would wait
    forever for a writer), a device or a symlink under a backup's name. The
    file is opened without following a link and without blocking, and must
    then be a regular file. Raises InvalidBackupError for anything else, and
    the OSError of ``open`` (the caller maps it).
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InvalidBackupError(
                f"{path.name} is a symbolic link, not a file", file=path.name
            ) from err
        raise
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InvalidBackupError(
            f"{path.name} is {file_kind(mode)}, not a regular file", file=path.name
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=buffering)


def fsync_dir(directory: Path | int) -> None:
    """Make the renames in a directory (a path or an open descriptor) durable."""
    fd = (
        directory
        if isinstance(directory, int)
        else os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    )
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _FSYNC_UNSUPPORTED:
            raise
    finally:
        if not isinstance(directory, int):
            os.close(fd)


def remove_quietly(*paths: Path) -> None:
    """Remove files that may be gone already; errors are not ours to report."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


@contextmanager
def open_directory(path: str) -> Iterator[int]:
    """Open a directory so that later calls work relative to that very directory.

    Using the descriptor (``dir_fd``) means a share that is remounted or
    swapped in the middle of an operation cannot redirect it elsewhere.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    """Return the lstat of ``name`` in the directory, or None when missing."""
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
