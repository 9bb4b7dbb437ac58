"""Small file-system helpers shared by the synchronous core."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from .errors import (
    BackupNotFoundError,
    BackupOffloadError,
    InsufficientSpaceError,
    LocationUnavailableError,
    WriteFailedError,
)

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
