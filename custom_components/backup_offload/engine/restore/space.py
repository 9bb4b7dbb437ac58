"""The disk space and files a restore needs, worked out before anything is written.

Home Assistant's restore at startup (``homeassistant.backup_restore``), step
by step, and what each step costs:

1. the staged archive (``tmp_backups/`` in the config directory) stays
   open, and so on disk, until the restore ends;
2. the outer tar is unpacked into a new directory in Home Assistant's
   temporary directory: ``backup.json`` and every inner archive;
3. Home Assistant's inner archive is unpacked next to it, every member;
4. the configuration directory is emptied, except ``backups/`` (and the
   database files when the database is not restored);
5. ``data/`` is copied in with ``shutil.copytree``: a hard link becomes a
   copy, a symlink is followed (what it points to is copied again), and
   what is kept is left out by name at every depth.

Steps 2 and 3 fill the temporary directory before step 4 frees anything,
and a disk that fills up in step 5 has lost the old configuration already.
So the need is worked out per file system: the temporary directory's holds
2 + 3, the configuration's holds 5 minus what 4 frees for certain, and one
file system holding both (Home Assistant OS) needs the sum. Everything is
counted in the file system's blocks (a small file takes a whole block, a
directory at least one, each name a directory entry) and in files, where
the file system limits them (inodes).

Everything here works member by member, in memory that does not grow with
the number of members, except for links: what a link points to is measured
in a second read of the archive, and only when it has links.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
import os
from pathlib import Path
import stat
import tarfile
from typing import Final

from ..archive.excludes import ARCHIVE_ROOT
from ..archive.read import each_member, is_homeassistant, read_archive
from ..archive.safety import resolve
from ..errors import BackupOffloadError
from ..fileops import read_error
from ..location import SPACE_MARGIN_BYTES, mount_table
from ..seen import SeenSet
from .checks import (
    DATABASE_FILES,
    KEEP_ALWAYS,
    ConfigNotClearableError,
    FilesInodesError,
    FilesSpaceError,
    NotRestorableError,
    StartupInodesError,
    StartupSpaceError,
)

INODE_MARGIN: Final = 256
"""Files (inodes) kept free, where a file system limits them."""
TEMP_DIRECTORIES: Final = 3
"""Directories Home Assistant's restore makes in the temporary directory: its
own, ``extracted`` and ``homeassistant``."""
DIRECTORIES_EXACT = 20_000
"""Directories remembered exactly; beyond, in a 2 MiB Bloom filter."""
_INLINE_SYMLINK: Final = 60  # ext4 keeps a shorter target in the inode itself
_DIRENT_HEADER: Final = 8  # an ext4 directory entry: 8 bytes and the name


def blocks(size: int, block: int) -> int:
    """Return the bytes ``size`` bytes of data take in blocks of ``block``."""
    return -(-size // block) * block


def _entry(name: str) -> int:
    """Return the bytes of a directory entry for ``name`` (ext4's layout)."""
    length = len(name) if name.isascii() else len(name.encode("utf-8", "replace"))
    return (_DIRENT_HEADER + length + 3) & ~3


def readable(size: int) -> str:
    """Return a size for people: ``82.5 MiB``."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _normal(name: str) -> str:
    """Return a member name as extraction resolves it: no ``.``, no empty parts."""
    if name.startswith("./") or "//" in name or "/./" in name or name.endswith("/"):
        return "/".join(part for part in name.split("/") if part and part != ".")
    return "" if name == "." else name.removesuffix("/.")


# --- measures -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """What something takes on a file system."""

    bytes: int = 0
    """Allocated bytes (whole blocks)."""
    inodes: int = 0
    """Files, directories and links."""
    data: int = 0
    """Bytes of file data written (the sizes of the files)."""

    def __add__(self, other: Usage) -> Usage:
        """Return both together."""
        return Usage(
            self.bytes + other.bytes,
            self.inodes + other.inodes,
            self.data + other.data,
        )

    def beyond(self, freed: Usage) -> Usage:
        """Return what is left of this need once ``freed`` was freed first."""
        return Usage(
            max(0, self.bytes - freed.bytes),
            max(0, self.inodes - freed.inodes),
            self.data,
        )


def file_usage(size: int, name: str, block: int) -> Usage:
    """Return what a new regular file of ``size`` bytes takes."""
    return Usage(blocks(size, block) + _entry(name), 1, size)


def dir_usage(name: str, block: int) -> Usage:
    """Return what a new directory takes (its first block)."""
    return Usage(block + _entry(name), 1)


def link_usage(name: str, target: str, block: int) -> Usage:
    """Return what a new symlink takes (a short target fits in the inode)."""
    data = blocks(len(target), block) if len(target) >= _INLINE_SYMLINK else 0
    return Usage(data + _entry(name), 1)


@dataclass(frozen=True, slots=True)
class FileSystem:
    """A file system as ``statvfs`` sees it, named by a directory on it."""

    path: Path
    device: int
    block: int
    """Its allocation unit."""
    free: int
    """Bytes free for us."""
    free_inodes: int | None
    """Files that can still be made; None when the file system has no limit."""

    @classmethod
    def of(cls, path: Path) -> FileSystem:
        """Return the file system of the directory ``path`` (OSError if none)."""
        vfs = os.statvfs(path)
        block = vfs.f_frsize or vfs.f_bsize
        return cls(
            path=path,
            device=path.stat().st_dev,
            block=block,
            free=vfs.f_bavail * block,
            free_inodes=vfs.f_favail if vfs.f_files else None,
        )


@dataclass(frozen=True, slots=True)
class SpaceNeed:
    """What a restore needs on one file system, and what is free there."""

    path: str
    needed: int
    """Bytes (the reserve not included)."""
    free: int
    inodes: int
    """Files, directories and links."""
    free_inodes: int | None
    """None: the file system does not limit them."""

    @property
    def fits_bytes(self) -> bool:
        """Return whether the bytes fit, with ``SPACE_MARGIN_BYTES`` to spare."""
        return self.needed + SPACE_MARGIN_BYTES <= self.free

    @property
    def fits_inodes(self) -> bool:
        """Return whether the files fit, with ``INODE_MARGIN`` to spare."""
        return (
            self.free_inodes is None or self.inodes + INODE_MARGIN <= self.free_inodes
        )

    @property
    def fits(self) -> bool:
        """Return whether both fit."""
        return self.fits_bytes and self.fits_inodes


class _Directories:
    """Which directories extraction creates, also those the archive leaves out.

    tarfile creates a member's missing parent directories; each costs like
    one in the archive. Members come directory by directory, so most are
    answered by comparing with the previous member's directory.
    """

    def __init__(self) -> None:
        self._seen = SeenSet(exact=DIRECTORIES_EXACT, bits=1 << 24)
        self._last = ""

    def declared(self, path: str) -> bool:
        """Note a directory member; return whether extraction creates it."""
        return self._seen.add(path)

    def missing(self, path: str) -> Iterator[str]:
        """Yield the parents of ``path`` that do not exist yet (and note them)."""
        parent = path.rpartition("/")[0]
        if parent == self._last:
            return
        self._last = parent
        while parent and self._seen.add(parent):
            yield parent
            parent = parent.rpartition("/")[0]


# --- the archive ----------------------------------------------------------------


def _resolve(parts: list[str], links: Mapping[str, str]) -> str | None:
    """Return where a path leads once the archive's symlinks are followed.

    ``links`` maps symlink paths to their targets, relative to one root;
    None when the path leaves the root or the links nest too deep.
    """
    resolved = resolve(parts, links, follow_last=True)
    return None if resolved is None else "/".join(resolved)


def _ancestors(rel: str) -> Iterator[tuple[str, str]]:
    """Yield (ancestor, the rest of the path below it), deepest first."""
    head = rel
    while head:
        head = head.rpartition("/")[0]
        yield head, rel[len(head) + 1 :] if head else rel


@dataclass(slots=True)
class _Target:
    """What a link points to, as the second read found it."""

    kind: str = ""
    """``file``, ``dir``, or empty: nothing there (a dangling link)."""
    size: int = 0
    below: Usage = field(default_factory=Usage)
    """Files and directories below a directory (not its links)."""
    links: list[str] = field(default_factory=list)
    """Links below a directory that its copy follows."""


class ArchiveSizer:
    """Adds up what unpacking Home Assistant's archive, and copying it, costs.

    ``add`` takes every member of the inner archive (in order); then, when
    ``links`` is true, ``measure_links`` reads the archive again for what
    the links lead to. ``unpacked()`` is step 3 (in the temporary
    directory's blocks), ``copied()`` step 5 (in the configuration's).
    """

    def __init__(
        self, *, temp_block: int, config_block: int, restore_database: bool
    ) -> None:
        """Count in the two file systems' blocks; keep the database or not."""
        self._temp_block = temp_block
        self._block = config_block
        self.keep = frozenset(keep_names(restore_database))
        self._prefix = ARCHIVE_ROOT + "/"
        self._dirs = _Directories()
        # Plain numbers: this runs for every member.
        self._unpacked = [0, 0, 0]
        self._copied = [0, 0, 0]
        self._symlinks: dict[str, str] = {}
        """Every symlink under data/: path -> target (relative to data/)."""
        self._hardlinks: dict[str, str] = {}
        """Every hard link under data/: path -> target (relative to data/)."""
        self._targets: dict[str, _Target] = {}

    def _rel(self, path: str) -> str | None:
        if path.startswith(self._prefix):
            return path[len(self._prefix) :]
        return "" if path == ARCHIVE_ROOT else None

    def copies(self, rel: str | None) -> bool:
        """Return whether the restore copies this path into the configuration."""
        if not rel:
            return False
        return self.keep.isdisjoint(rel.split("/"))

    def add(self, member: tarfile.TarInfo) -> None:
        """Count one member of the inner archive."""
        path = _normal(member.name)
        if not path:
            return
        temp, block = self._temp_block, self._block
        unpacked, copied = self._unpacked, self._copied
        for parent in self._dirs.missing(path):
            entry = _entry(parent.rpartition("/")[2])
            _count(unpacked, temp + entry, 1)
            if self.copies(self._rel(parent)):
                _count(copied, block + entry, 1)
        entry = _entry(path.rpartition("/")[2])
        rel = self._rel(path)
        if member.isreg():
            size = member.size
            _count(unpacked, blocks(size, temp) + entry, 1, size)
            if self.copies(rel):
                _count(copied, blocks(size, block) + entry, 1, size)
        elif member.isdir():
            if self._dirs.declared(path):
                _count(unpacked, temp + entry, 1)
                if self.copies(rel):
                    _count(copied, block + entry, 1)
        elif member.issym():
            target = member.linkname
            data = blocks(len(target), temp) if len(target) >= _INLINE_SYMLINK else 0
            _count(unpacked, data + entry, 1)
            if rel:
                self._symlinks[rel] = target
        elif member.islnk():
            _count(unpacked, entry, 0)
            linked = self._rel(_normal(member.linkname))
            if rel and linked:
                self._hardlinks[rel] = linked

    def unpacked(self) -> Usage:
        """Return what unpacking the inner archive takes (step 3)."""
        return Usage(*self._unpacked)

    @property
    def links(self) -> bool:
        """Return whether the archive has links the copy must follow."""
        return bool(self._symlinks or self._hardlinks)

    def _final(self, rel: str) -> str:
        """Return the file a chain of hard links ends at."""
        for _ in range(len(self._hardlinks) + 1):
            if rel not in self._hardlinks:
                break
            rel = self._hardlinks[rel]
        return rel

    def _points_to(self, link: str) -> str | None:
        """Return the path a link leads to (a file or a directory), None if none."""
        if link in self._hardlinks:
            return self._final(link)
        parts = [*link.split("/")[:-1], *self._symlinks[link].split("/")]
        resolved = _resolve(parts, self._symlinks)
        return None if resolved is None else self._final(resolved)

    def measure(self, member: tarfile.TarInfo) -> None:
        """Second read: note what a link target is, and what is below it."""
        rel = self._rel(_normal(member.name))
        if not rel or member.issym() or member.islnk():
            return
        targets = self._targets
        target = targets.get(rel)
        if target is not None:
            target.kind = "dir" if member.isdir() else "file"
            target.size = member.size
        name = rel.rpartition("/")[2]
        for ancestor, below in _ancestors(rel):
            found = targets.get(ancestor)
            if found is None or not self.keep.isdisjoint(below.split("/")):
                continue
            if member.isdir():
                found.below += dir_usage(name, self._block)
            else:
                found.below += file_usage(member.size, name, self._block)

    def measure_links(self, path: Path, password: str | None) -> None:
        """Read the archive again, for what the links lead to.

        Only when ``links``. Raises what ``read_archive`` raises.
        """
        links = [*self._symlinks, *self._hardlinks]
        self._targets = {}
        for link in links:
            target = self._points_to(link)
            if target:
                self._targets.setdefault(target, _Target())

        def visit(name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
            self.measure(member)

        read_archive(
            path, password, each_member(visit), wanted=is_homeassistant, checksum=False
        )
        for link in links:
            for ancestor, below in _ancestors(link):
                found = self._targets.get(ancestor)
                if found is not None and self.keep.isdisjoint(below.split("/")):
                    found.links.append(link)

    def copied(self) -> Usage:
        """Return what copying ``data/`` into the configuration takes (step 5).

        Raises NotRestorableError for symlinks that lead into each other:
        Home Assistant's restore would copy them until the disk is full.
        """
        total = Usage(*self._copied)
        memo: dict[str, Usage] = {}
        for link in [*self._symlinks, *self._hardlinks]:
            if self.copies(link):
                total += self._link(link, ("",), memo)
        return total

    def _link(
        self, link: str, within: tuple[str, ...], memo: dict[str, Usage]
    ) -> Usage:
        """Return what copying the link at ``link`` takes: a copy of its target.

        ``within``: the directories being copied on the way here (the root
        and link targets); an endless copy must come back to one of them.
        """
        target = self._points_to(link)
        found = self._targets.get(target) if target is not None else None
        name = link.rpartition("/")[2]
        if target is None or found is None or not found.kind:
            return Usage()  # dangling: the copy leaves it out
        if found.kind == "file":
            return file_usage(found.size, name, self._block)
        if target in within:
            raise NotRestorableError(
                f"the symlink {link} leads back into a directory it is copied"
                " from: Home Assistant's restore would copy it until the disk"
                " is full"
            )
        if target not in memo:
            total = found.below
            for inner in found.links:
                total += self._link(inner, (*within, target), memo)
            memo[target] = total
        return dir_usage(name, self._block) + memo[target]


def _count(totals: list[int], size: int, inodes: int, data: int = 0) -> None:
    totals[0] += size
    totals[1] += inodes
    totals[2] += data


def outer_usage(path: Path, block: int) -> Usage:
    """Return what unpacking the outer tar takes (step 2), and its directories.

    Reads only the headers (an outer tar has a few members). An OSError is
    the file's (LocationUnavailableError, BackupNotFoundError).
    """
    total = Usage()
    for _ in range(TEMP_DIRECTORIES):
        total += dir_usage("homeassistant", block)
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                total += file_usage(member.size, _normal(member.name), block)
    except OSError as err:
        raise read_error(path, err) from err
    return total


# --- the configuration ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Clearing:
    """What emptying the configuration directory frees for certain."""

    freed: dict[int, Usage]
    """Device -> bytes and files freed on it."""


def _mount_points(root: str) -> set[str]:
    """Return the mount points inside ``root`` (a real path), as far as known.

    Without /proc the device numbers still show most mounts.
    """
    prefix = os.fsencode(root) + b"/"
    return {
        os.fsdecode(mount.point)
        for mount in mount_table() or ()
        if mount.point.startswith(prefix)
    }


def _lstat(path: str) -> os.stat_result | None:
    """Return an entry's lstat, None if it was removed meanwhile."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


class _ClearingWalk:
    """Walks what Home Assistant's restore removes, adding up what that frees."""

    def __init__(
        self,
        root: str,
        skip: set[str],
        visit: Callable[[str, str, os.stat_result], None] | None,
    ) -> None:
        self.root = root
        self.device = os.stat(root).st_dev  # noqa: PTH116 - a path string
        self.skip = skip
        self.visit = visit
        self.mounts = _mount_points(root)
        self.freed: dict[int, list[int]] = {}
        self.linked: dict[tuple[int, int], list[int]] = {}
        """(device, inode) of files with more than one name -> [names seen,
        names it has, bytes]."""

    def _free(self, info: os.stat_result, *, data: bool = True) -> None:
        entry = self.freed.setdefault(info.st_dev, [0, 0])
        entry[0] += info.st_blocks * 512 if data else 0
        entry[1] += 1

    def _refuse(self, rel: str, what: str) -> ConfigNotClearableError:
        return ConfigNotClearableError(
            f"{rel} {what}: Home Assistant's restore at startup would stop there"
            " with part of the configuration deleted",
            path=rel,
        )

    def top(self, entry: os.DirEntry[str]) -> None:
        """Count one entry of the configuration directory itself."""
        rel = entry.name
        info = _lstat(entry.path)
        if info is None:
            return
        if self.visit is not None:
            self.visit(rel, entry.path, info)
        self._mounted(entry.path, rel, info, self.device)
        if stat.S_ISLNK(info.st_mode):
            if entry.is_dir():
                # pathlib's is_dir follows the link; shutil.rmtree refuses it.
                raise self._refuse(rel, "is a symbolic link to a directory")
            if entry.is_file():
                self._free(info)  # the link goes, not what it points to
        elif stat.S_ISREG(info.st_mode):
            self._file(rel, info)
        elif stat.S_ISDIR(info.st_mode):
            self._free(info)
            self.tree(entry.path, rel, info.st_dev)
        # Anything else (FIFO, socket, device, dangling link) stays.

    def _mounted(self, path: str, rel: str, info: os.stat_result, device: int) -> None:
        """Refuse a mount point, which cannot be removed.

        Known from the mount table, or as a directory on another device.
        """
        if path in self.mounts or (
            stat.S_ISDIR(info.st_mode) and info.st_dev != device
        ):
            raise self._refuse(rel, "is a mount point")

    def _file(self, rel: str, info: os.stat_result) -> None:
        if rel in self.skip:
            return
        if info.st_nlink <= 1:
            self._free(info)
            return
        seen = self.linked.setdefault(
            (info.st_dev, info.st_ino), [0, info.st_nlink, info.st_blocks * 512]
        )
        seen[0] += 1

    def tree(self, path: str, rel: str, device: int) -> None:
        """Count everything below a directory that ``shutil.rmtree`` removes."""
        try:
            listing = os.scandir(path)
        except FileNotFoundError:  # removed meanwhile
            return
        with listing as entries:
            for entry in entries:
                sub = f"{rel}/{entry.name}"
                info = _lstat(entry.path)
                if info is None:
                    continue
                if self.visit is not None:
                    self.visit(sub, entry.path, info)
                self._mounted(entry.path, sub, info, device)
                if stat.S_ISDIR(info.st_mode):
                    self._free(info)
                    self.tree(entry.path, sub, device)
                elif stat.S_ISREG(info.st_mode):
                    self._file(sub, info)
                else:
                    self._free(info, data=stat.S_ISLNK(info.st_mode))

    def result(self) -> Clearing:
        for (device, _), (seen, names, size) in self.linked.items():
            if seen >= names:  # every name of it is removed
                entry = self.freed.setdefault(device, [0, 0])
                entry[0] += size
                entry[1] += 1
        return Clearing(
            {device: Usage(size, count) for device, (size, count) in self.freed.items()}
        )


def plan_clearing(
    config_dir: Path,
    keep: Iterable[str],
    *,
    skip: Iterable[str] = (),
    visit: Callable[[str, str, os.stat_result], None] | None = None,
) -> Clearing:
    """Return what emptying ``config_dir`` frees, as Home Assistant's restore does it.

    Home Assistant removes every entry of the configuration directory but
    ``keep``: a file (or a link to one) with ``unlink``, a directory with
    ``shutil.rmtree``; anything else stays. Counted as freed is only what
    surely is: the blocks of files whose every name is removed (not a file
    that a hard link elsewhere keeps), of directories and of links. ``skip``
    (relative paths) are files that stay on disk though removed (the staged
    archive: Home Assistant holds it open). ``visit(rel, path, lstat)`` sees
    every entry that is removed or stays, except ``keep``.

    Raises ConfigNotClearableError for an entry that would stop the restore
    halfway: a symlink to a directory (``shutil.rmtree`` refuses it) or a
    mount point (it cannot be removed). An OSError is the caller's.
    """
    root = os.path.realpath(config_dir)
    walk = _ClearingWalk(root, set(skip), visit)
    kept = set(keep)
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name not in kept:
                walk.top(entry)
    return walk.result()


def keep_names(restore_database: bool) -> tuple[str, ...]:
    """Return what Home Assistant's restore keeps (and never copies in)."""
    return (*KEEP_ALWAYS, *(() if restore_database else DATABASE_FILES))


# --- needs and checks -----------------------------------------------------------


def startup_needs(
    *,
    config: FileSystem,
    temp: FileSystem,
    unpacked: Usage,
    copied: Usage,
    freed: Mapping[int, Usage],
    staged: tuple[FileSystem, Usage] | None = None,
) -> list[SpaceNeed]:
    """Return what Home Assistant's restore at startup needs, per file system.

    ``unpacked``: steps 2 and 3, in the temporary directory; ``copied``:
    step 5, of which what emptying the configuration frees (``freed``, per
    device) is taken off; ``staged``: the staged copy where it is not made
    yet (a dry run). The configuration's file system comes first.
    """
    totals: dict[int, tuple[FileSystem, Usage]] = {}

    def add(system: FileSystem, usage: Usage) -> None:
        before = totals.get(system.device, (system, Usage()))
        totals[system.device] = (before[0], before[1] + usage)

    add(config, copied.beyond(freed.get(config.device, Usage())))
    add(temp, unpacked)
    if staged is not None:
        add(*staged)
    return [
        SpaceNeed(
            path=str(system.path),
            needed=usage.bytes,
            free=system.free,
            inodes=usage.inodes,
            free_inodes=system.free_inodes,
        )
        for system, usage in totals.values()
    ]


def require_startup(needs: Iterable[SpaceNeed], detail: str) -> None:
    """Raise StartupSpaceError (or StartupInodesError) if a need does not fit."""
    for need in needs:
        if not need.fits_bytes:
            raise StartupSpaceError(
                f"Home Assistant's restore at startup needs {need.needed} bytes"
                f" plus {SPACE_MARGIN_BYTES} in reserve on the file system of"
                f" {need.path} ({detail}); {need.free} are free",
                path=need.path,
                needed=readable(need.needed + SPACE_MARGIN_BYTES),
                free=readable(need.free),
                reserve=readable(SPACE_MARGIN_BYTES),
            )
        if not need.fits_inodes:
            raise StartupInodesError(
                f"Home Assistant's restore at startup makes {need.inodes} files"
                f" (plus {INODE_MARGIN} in reserve) on the file system of"
                f" {need.path} ({detail}); there is room for {need.free_inodes}",
                path=need.path,
                needed=str(need.inodes + INODE_MARGIN),
                free=str(need.free_inodes),
            )


class Budget:
    """What a partial restore may write: free space minus the reserve.

    ``take`` counts each member before it is written and says whether it
    still fits; once one does not, nothing more fits, and counting goes on
    so that the error says what the whole selection needs.
    """

    def __init__(self, system: FileSystem) -> None:
        """Count against ``system`` as it is now."""
        self.system = system
        self.reset()

    def reset(self) -> None:
        """Forget what was counted (the extraction starts again)."""
        self.usage = Usage()
        self.over = False
        self._dirs = _Directories()

    def take(self, member: tarfile.TarInfo, rel: str) -> bool:
        """Count ``member`` (extracted at ``rel``); return whether it fits."""
        block = self.system.block
        usage = self.usage
        for parent in self._dirs.missing(rel):
            usage += dir_usage(parent.rpartition("/")[2], block)
        name = rel.rpartition("/")[2]
        if member.isdir():
            if self._dirs.declared(rel):
                usage += dir_usage(name, block)
        elif member.issym():
            usage += link_usage(name, member.linkname, block)
        elif member.islnk():
            usage += Usage(_entry(name))
        else:
            usage += file_usage(member.size, name, block)
        self.usage = usage
        self.over = self.over or not self.need().fits
        return not self.over

    def need(self) -> SpaceNeed:
        """Return what was counted, against what is free."""
        return SpaceNeed(
            path=str(self.system.path),
            needed=self.usage.bytes,
            free=self.system.free,
            inodes=self.usage.inodes,
            free_inodes=self.system.free_inodes,
        )

    def error(self) -> BackupOffloadError:
        """Return the error for a selection that does not fit."""
        need = self.need()
        if not need.fits_bytes:
            return FilesSpaceError(
                f"The chosen files need {need.needed} bytes plus"
                f" {SPACE_MARGIN_BYTES} in reserve in {need.path}; {need.free}"
                " are free",
                path=need.path,
                needed=readable(need.needed + SPACE_MARGIN_BYTES),
                free=readable(need.free),
                reserve=readable(SPACE_MARGIN_BYTES),
            )
        return FilesInodesError(
            f"The chosen files are {need.inodes} files (plus {INODE_MARGIN} in"
            f" reserve) in {need.path}; there is room for {need.free_inodes}",
            path=need.path,
            needed=str(need.inodes + INODE_MARGIN),
            free=str(need.free_inodes),
        )
