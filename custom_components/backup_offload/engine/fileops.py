"""Small file-system helpers shared by the synchronous core."""

from __future__ import annotations

import contextlib
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
# Write errors that mean "the location is full".
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def write_error(err: OSError, what: str) -> BackupOffloadError:
    """Return the typed error for an OSError while writing ``what``."""
    code = errno.errorcode.get(err.errno or 0, "unknown error")
    detail = f"{code} ({err.strerror or err})"
    if err.errno in SPACE_ERRNOS:
        return InsufficientSpaceError(
            f"Not enough space for {what}: {detail}", errno=code
        )
    return WriteFailedError(f"Writing {what} failed: {detail}", errno=code)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the descriptor ``fd`` (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_error(path: Path, err: OSError) -> BackupOffloadError:
    """Return the typed error for an OSError while reading a location's file."""
    if isinstance(err, FileNotFoundError):
        return BackupNotFoundError(f"{path.name} does not exist", file=path.name)
    return LocationUnavailableError(
        f"Reading {path.name} failed: {err}",
        location_reason="unreachable",
        file=path.name,
    )


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
