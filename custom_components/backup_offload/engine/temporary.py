"""Temporary files of a location: lock them while written, clean up what a crash left.

A backup is written under a hidden temporary name and renamed into place
when complete (docs/architecture.md, "Nothing half-done is visible"). Its
writer holds an ``flock`` on the file; the cleanup, run at every idle
refresh, removes only files that nobody has written to for a while and
whose lock nobody holds, so a backup that this or another Home Assistant is
still writing into the same folder is left alone.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from contextlib import contextmanager
import errno
import fcntl
import os
from pathlib import Path
import stat
import threading
import time

from .fileops import Place, lstat_at, open_directory, os_error

_PEEK_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})


class LiveFiles:
    """Names of the temporary files this process is writing in one location.

    The cleanup skips them before it opens anything. Its lock test alone is
    not enough for our own files: where the file system emulates ``flock``
    with record locks (NFS), a lock held by this process does not keep
    another descriptor of the same process out, and closing that descriptor
    would even drop the writer's lock.
    """

    def __init__(self) -> None:
        """Start with no file."""
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        """Return True while ``name`` is being written."""
        with self._lock:
            return name in self._names

    def add(self, *names: str) -> None:
        """Mark ``names`` as being written (before they are created)."""
        with self._lock:
            self._names.update(names)

    def discard(self, *names: str) -> None:
        """Forget ``names`` (published, or removed)."""
        with self._lock:
            self._names.difference_update(names)

    @contextmanager
    def holding(self, *names: str) -> Iterator[None]:
        """Mark ``names`` as being written for the duration of the block."""
        self.add(*names)
        try:
            yield
        finally:
            self.discard(*names)


def lock_temporary(fd: int) -> bool:
    """Lock a temporary file being written: the cleanup skips it while ``fd`` is open.

    Returns False where the file system has no locks (NFS without its lock
    service answers ENOLCK): the file's fresh modification time protects it
    there, as it protects every file in the moment between its creation and
    this call.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlocked(fd: int) -> bool:
    """Return False if a writer holds the file's lock (ours or another host's)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in _NO_LOCKS:
            return True  # No locks here: the age alone decides.
        raise
    return True


def _open_for_lock(name: str, dir_fd: int) -> int | None:
    """Open a temporary file to test its lock; None if it is not ours to judge."""
    try:
        # Never follow a link, never wait (a FIFO planted under our prefix).
        return os.open(name, _PEEK_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EACCES, errno.EPERM):
            # Replaced by a link meanwhile, or another user's file (another
            # Home Assistant's, on a share that squashes root): not ours.
            return None
        raise


def _remove_if_stale(name: str, dir_fd: int, deadline: float) -> bool:
    """Remove one temporary file if it is a regular file, old, and not locked."""
    info = lstat_at(name, dir_fd)
    if info is None or not stat.S_ISREG(info.st_mode) or info.st_mtime >= deadline:
        return False
    fd = _open_for_lock(name, dir_fd)
    if fd is None:
        return False
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            return False  # Replaced meanwhile: judged at the next refresh.
        if not _unlocked(fd):
            return False
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False  # Removed meanwhile by someone else: fine.
    finally:
        os.close(fd)
    return True


def cleanup_temporary(
    location: str | Path,
    *,
    prefix: str | tuple[str, ...],
    older_than: float = 3600.0,
    now: float | None = None,
    names: Iterable[str] | None = None,
    keep: Container[str] = (),
) -> list[str]:
    """Remove stale temporary files a crash left in the location root.

    Removes only regular files whose name starts with ``prefix`` (the archive
    writer's temporary prefix, ``PROBE_PREFIX``, or a tuple of them), whose
    modification time is more than ``older_than`` seconds before ``now``, and
    whose lock no writer holds: a backup that this or another Home Assistant
    is still writing keeps its file locked (``lock_temporary``), however
    long it pauses. Where the file system has no locks, the age decides
    alone. Names in ``keep`` (the files this process writes) are not even
    opened. ``names`` are the directory's entries if the caller has just
    listed it; else the directory is listed. Returns the removed names.
    """
    prefixes = (prefix,) if isinstance(prefix, str) else prefix
    for one in prefixes:
        if not one or "/" in one:
            raise ValueError(f"invalid temporary file prefix {one!r}")
    loc = os.fspath(location)
    deadline = (time.time() if now is None else now) - older_than
    try:
        with open_directory(loc) as dir_fd:
            candidates = os.listdir(dir_fd) if names is None else names  # noqa: PTH208
            removed = [
                name
                for name in candidates
                if name.startswith(prefixes)
                and name not in keep
                and _remove_if_stale(name, dir_fd, deadline)
            ]
    except OSError as err:
        raise os_error(err, loc, writing=True, where=Place.LOCATION, path=loc) from err
    return sorted(removed)
