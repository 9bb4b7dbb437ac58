"""Read the config directory for a backup: what to store, and how to read it.

``plan`` walks the directory once (without following symlinks) and lists
what goes into the backup; the writer then reads each file as it is at that
moment. A file that vanishes in between is skipped and reported; a file that
changes while it is read is stored with exactly the size it had when it was
opened (cut or zero-padded) and reported, so the archive stays well-formed.
Symlinks are stored as links when they stay inside the config directory;
sockets, FIFOs and devices are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
import enum
import errno
import grp
import os
from pathlib import Path, PurePosixPath
import pwd
import sqlite3
import stat
import tarfile
from typing import Final

from .excludes import ARCHIVE_ROOT, HA_DATABASE_EXCLUDES
from .safety import link_escapes

CHUNK: Final = 1 << 20
SQLITE_SUFFIXES: Final = ("-wal", "-shm", "-journal")
"""Files next to an SQLite database that belong to its live state."""

# Skip reasons (the text a user sees next to the path).
VANISHED: Final = "vanished during the backup"
CHANGED: Final = "changed while it was read (stored at its size when opened)"
REPLACED: Final = "replaced by something else during the backup"
UNREADABLE: Final = "permission denied"
OUTSIDE_LINK: Final = "symlink pointing outside the config directory"
NOT_SQLITE: Final = "SQLite online backup failed: stored as a plain file"


class Kind(enum.Enum):
    """What a planned entry is."""

    DIR = "dir"
    FILE = "file"
    LINK = "link"


@dataclass(slots=True, frozen=True)
class Entry:
    """One thing to store: path relative to the config dir, kind, size."""

    rel: str
    kind: Kind
    size: int = 0
    link: str = ""
    """A symlink's target as it was during the walk."""


@dataclass(slots=True)
class Plan:
    """What a backup of the config directory will contain."""

    entries: list[Entry] = field(default_factory=list)
    databases: list[Entry] = field(default_factory=list)
    """Top-level database files, stored last (under the database lock)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Relative path -> why it is not stored (or not stored as it was)."""

    @property
    def total_bytes(self) -> int:
        """Bytes of file data to read, for progress."""
        return sum(entry.size for entry in (*self.entries, *self.databases))


def _special_kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket: skipped"
    if stat.S_ISFIFO(mode):
        return "FIFO: skipped"
    return "device node: skipped"


def plan(
    config_dir: Path,
    *,
    is_excluded: Callable[[str], bool],
    skip_names: Callable[[str], bool],
    include_database: bool,
    skip_dir: os.stat_result | None = None,
) -> Plan:
    """Walk ``config_dir`` and return what a backup of it stores.

    ``is_excluded`` gets paths relative to the config dir; ``skip_names``
    gets bare names (our temporary files); ``skip_dir`` is the location when
    it lies inside the config directory, matched by device and inode.
    """
    result = Plan()
    database_names = set(HA_DATABASE_EXCLUDES) if include_database else set()
    _walk(config_dir, "", result, is_excluded, skip_names, skip_dir, database_names)
    _drop_escaping_links(result)
    return result


def _walk(
    directory: Path,
    prefix: str,
    result: Plan,
    is_excluded: Callable[[str], bool],
    skip_names: Callable[[str], bool],
    skip_dir: os.stat_result | None,
    database_names: set[str],
) -> None:
    try:
        with os.scandir(directory) as iterator:
            entries = sorted(iterator, key=lambda entry: entry.name)
    except FileNotFoundError:
        result.skipped[prefix.rstrip("/") or "."] = VANISHED
        return
    except PermissionError:
        result.skipped[prefix.rstrip("/") or "."] = UNREADABLE
        return
    for entry in entries:
        rel = prefix + entry.name
        if skip_names(entry.name) or is_excluded(rel):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            result.skipped[rel] = VANISHED
            continue
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            if skip_dir is not None and _same_file(info, skip_dir):
                continue
            result.entries.append(Entry(rel, Kind.DIR))
            _walk(
                Path(entry.path),
                rel + "/",
                result,
                is_excluded,
                skip_names,
                skip_dir,
                database_names,
            )
        elif stat.S_ISLNK(mode):
            try:
                target = str(Path(entry.path).readlink())
            except FileNotFoundError:
                result.skipped[rel] = VANISHED
                continue
            result.entries.append(Entry(rel, Kind.LINK, link=target))
        elif stat.S_ISREG(mode):
            group = (
                result.databases
                if rel in database_names or belongs_to(rel, database_names)
                else result.entries
            )
            group.append(Entry(rel, Kind.FILE, info.st_size))
        else:
            result.skipped[rel] = _special_kind(mode)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _drop_escaping_links(result: Plan) -> None:
    """Skip symlinks that lead outside the config directory.

    They could not be restored safely (extraction refuses them), so they are
    reported instead of producing a backup that cannot be restored.
    """
    links = {e.rel: e.link for e in result.entries if e.kind is Kind.LINK}
    escaping = {
        rel for rel, target in links.items() if link_escapes(rel, target, links)
    }
    for rel in escaping:
        result.skipped.setdefault(rel, OUTSIDE_LINK)
    result.entries = [entry for entry in result.entries if entry.rel not in escaping]


# --- reading what was planned -------------------------------------------------


class SourceError(Exception):
    """Reading the config directory failed in a way that stops the backup."""

    def __init__(self, rel: str, err: OSError) -> None:
        """Remember which file and the OS error."""
        super().__init__(f"Reading {rel} failed: {err}")
        self.rel = rel
        self.os_error = err


class _Names:
    """User and group names for tar headers, looked up once per id."""

    def __init__(self) -> None:
        self._users: dict[int, str] = {}
        self._groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = ""
        return self._users[uid]

    def group(self, gid: int) -> str:
        if gid not in self._groups:
            try:
                self._groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self._groups[gid] = ""
        return self._groups[gid]


NAMES = _Names()


def tarinfo(rel: str, info: os.stat_result) -> tarfile.TarInfo:
    """Return a header for ``rel`` (under ``data/``) from its stat result."""
    member = tarfile.TarInfo(
        PurePosixPath(ARCHIVE_ROOT, rel).as_posix() if rel else ARCHIVE_ROOT
    )
    member.mode = stat.S_IMODE(info.st_mode)
    member.uid, member.gid = info.st_uid, info.st_gid
    member.uname, member.gname = NAMES.user(info.st_uid), NAMES.group(info.st_gid)
    member.mtime = int(info.st_mtime)
    return member


class ExactReader:
    """Reads exactly ``size`` bytes of an open file, whatever happens to it.

    tarfile has already written ``size`` into the member header, so a file
    that shrank is padded with zeros and a file that grew is cut; either way
    ``changed`` is set. Progress is reported per chunk.
    """

    def __init__(
        self, fd: int, rel: str, size: int, advance: Callable[[int], None]
    ) -> None:
        """Read from ``fd`` (owned by the caller)."""
        self._fd = fd
        self._rel = rel
        self._left = size
        self._advance = advance
        self.changed = False

    def read(self, size: int = -1) -> bytes:
        """Return the next ``size`` bytes (fewer only at the planned end)."""
        want = self._left if size < 0 else min(size, self._left)
        data = b""
        while len(data) < want:
            try:
                chunk = os.read(self._fd, min(want - len(data), CHUNK))
            except OSError as err:
                raise SourceError(self._rel, err) from err
            if not chunk:
                self.changed = True
                data += bytes(want - len(data))
                break
            data += chunk
        self._left -= len(data)
        self._advance(len(data))
        return data


def open_file(path: Path) -> int | str:
    """Open a regular file for reading; return its fd or why it is skipped.

    Never follows a symlink and never blocks on a FIFO that replaced the file.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return VANISHED
    except PermissionError:
        return UNREADABLE
    except OSError as err:
        if err.errno == errno.ELOOP:
            return REPLACED
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return REPLACED
    return fd


def changed_since(fd: int, before: os.stat_result) -> bool:
    """Return whether the open file's size or mtime moved since ``before``."""
    after = os.fstat(fd)
    return (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)


def copy_sqlite(source: Path, destination: Path) -> str | None:
    """Copy an SQLite database consistently with its online backup API.

    The copy is one transaction-consistent snapshot (WAL writers go on while
    it is taken) with everything in the main file, so no -wal/-shm is needed.
    Returns None on success, else why it could not (the caller then stores
    the file as it is).
    """
    uri = f"{source.absolute().as_uri()}?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True, timeout=60)
        try:
            dst = sqlite3.connect(destination)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as err:
        return f"{NOT_SQLITE} ({err})"
    return None


def sqlite_mains(entries: Iterable[Entry]) -> list[Entry]:
    """Return the database entries that are main database files."""
    return [e for e in entries if not e.rel.endswith(SQLITE_SUFFIXES)]


def belongs_to(rel: str, databases: Iterable[str]) -> bool:
    """Return whether ``rel`` is a -wal/-shm/-journal file of one of them."""
    return any(rel == name + suffix for name in databases for suffix in SQLITE_SUFFIXES)
