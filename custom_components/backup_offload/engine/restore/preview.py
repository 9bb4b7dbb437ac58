"""Dry run: what a restore would add, change and remove, touching nothing.

The configuration directory is mapped first (memory that grows with the
configuration, not with the backup); then the backup is read once, and each
member is compared with the map as it comes: a file's content is compared
only when the sizes match, by reading both side by side. What is kept are
counts and the first paths of each category, so a backup of a million
members costs no more memory than a small one. A path that is in the
backup twice counts once, as the last one (the one a restore leaves).

The same read adds up the space the restore needs (``restore_space``), for
the response's ``space``. Hard links, and for a full restore symlinks,
need a second read: what they point to has gone by when they come.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
import os
from pathlib import Path
import stat
import tarfile
import tempfile
from typing import Final

from ..archive.excludes import ARCHIVE_ROOT
from ..archive.read import (
    each_member,
    holds_configuration,
    is_homeassistant,
    read_archive,
)
from ..archive.safety import SafetyCheck
from ..archive.tarstream import member_chunks
from ..errors import BackupOffloadError
from ..metadata import BackupInfo
from ..seen import SeenSet
from .checks import (
    STAGING_DIR,
    RestorePathError,
    check_destination,
    check_inner,
    check_version,
    effective_password,
    is_live_forbidden,
    require_configuration,
    require_matches,
    selector,
)
from .space import (
    ArchiveSizer,
    Budget,
    FileSystem,
    SpaceNeed,
    Usage,
    blocks,
    keep_names,
    outer_usage,
    plan_clearing,
    startup_needs,
)

PREVIEW_PATHS: Final = 20
"""Paths listed per category in a preview (the counts are complete)."""
ADDED_EXACT = 5_000
"""Added paths remembered exactly (to count each once); beyond, in a 2 MiB
Bloom filter, which takes about one in 15,000 for a path seen before (of a
million new paths, about 64 are not counted)."""
_CHANGED: Final = "changed"
_UNCHANGED: Final = "unchanged"


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    """What a restore would do to the config directory (a dry run)."""

    added: list[str]
    """The first ``PREVIEW_PATHS`` paths in sorted order; ``added_count`` all."""
    changed: list[str]
    removed: list[str]
    unchanged: int
    added_count: int
    changed_count: int
    removed_count: int
    write_bytes: int
    """Bytes of file data the restore writes into the configuration."""
    space: list[SpaceNeed]
    """Per file system: what the restore needs there, and what is free."""


@dataclass(slots=True)
class _Current:
    """A path of the configuration directory, and what the backup has there."""

    path: str
    kind: str
    """``file``, ``link`` or ``other``."""
    size: int = 0
    link: str = ""
    verdict: str = ""
    """``changed`` or ``unchanged`` once the backup has the path."""


def _current(path: str, info: os.stat_result) -> _Current:
    if stat.S_ISREG(info.st_mode):
        return _Current(path, "file", info.st_size)
    if stat.S_ISLNK(info.st_mode):
        return _Current(path, "link", link=os.readlink(path))  # noqa: PTH115
    return _Current(path, "other")


class _Smallest:
    """The first ``limit`` strings in sorted order, of all offered."""

    def __init__(self, limit: int) -> None:
        self.items: list[str] = []
        self._limit = limit

    def offer(self, item: str) -> None:
        kept = self.items
        if len(kept) >= self._limit and item >= kept[-1]:
            return
        bisect.insort(kept, item)
        if len(kept) > self._limit:
            kept.pop()


def _read_exactly(fd: int, size: int) -> bytes:
    parts = []
    while size > 0:
        part = os.read(fd, size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _same_content(
    tar: tarfile.TarFile, member: tarfile.TarInfo, paths: Sequence[str]
) -> list[bool]:
    """Compare a member's data with each file of ``paths`` (all of its size)."""
    descriptors: list[int | None] = []
    for path in paths:
        try:
            descriptors.append(
                os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            )
        except OSError:  # gone, or replaced by a link: it changes
            descriptors.append(None)
    try:
        for piece in member_chunks(tar, member):
            for index, fd in enumerate(descriptors):
                if fd is not None and _read_exactly(fd, len(piece)) != piece:
                    os.close(fd)
                    descriptors[index] = None
            if not any(fd is not None for fd in descriptors):
                break  # the rest of the data is skipped by the next header
        return [fd is not None and not os.read(fd, 1) for fd in descriptors]
    except OSError:
        return [False] * len(paths)
    finally:
        for fd in descriptors:
            if fd is not None:
                os.close(fd)


@dataclass(slots=True)
class _Comparison:
    """Compares the backup's members with the configuration as they come."""

    config_dir: Path
    current: dict[str, _Current]
    """The configuration's paths (all of them, or those looked up so far)."""
    lazy: bool
    """Look paths up as they come (partial), not in a map made first (full)."""
    mapped: Callable[[str], str | None]
    """A member name's path relative to the configuration."""
    added: int = 0
    first_added: _Smallest = field(default_factory=lambda: _Smallest(PREVIEW_PATHS))
    seen_added: SeenSet = field(
        default_factory=lambda: SeenSet(exact=ADDED_EXACT, bits=1 << 24, hashes=7)
    )
    hardlinks: dict[str, str] = field(default_factory=dict)
    """Hard link path -> the path it links to (compared in a second read)."""

    def _lookup(self, rel: str) -> _Current | None:
        found = self.current.get(rel)
        if found is None and self.lazy:
            path = os.path.join(self.config_dir, rel)  # noqa: PTH118 - per member
            try:
                found = _current(path, os.lstat(path))
            except (FileNotFoundError, NotADirectoryError):
                return None
            self.current[rel] = found
        return found

    def member(self, rel: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Compare one member (not a directory) with the configuration."""
        if member.islnk():
            self.hardlinks[rel] = self.mapped(member.linkname) or ""
            return
        current = self._lookup(rel)
        if current is None:
            self._add(rel)
            return
        if member.isreg():
            same = (
                current.kind == "file"
                and current.size == member.size
                and _same_content(tar, member, [current.path])[0]
            )
        elif member.issym():
            same = current.kind == "link" and current.link == member.linkname
        else:
            same = current.kind == "other"
        current.verdict = _UNCHANGED if same else _CHANGED

    def _add(self, rel: str) -> None:
        if self.seen_added.add(rel):
            self.added += 1
            self.first_added.offer(rel)

    def link_targets(self) -> dict[str, list[str]]:
        """Return file -> the hard links to it, for the second read.

        A hard link whose path is not in the configuration is added now.
        """
        targets: dict[str, list[str]] = {}
        for rel, linked in self.hardlinks.items():
            if self._lookup(rel) is None:
                self._add(rel)
                continue
            target = linked
            for _ in range(len(self.hardlinks)):  # a link to a link
                if target not in self.hardlinks:
                    break
                target = self.hardlinks[target]
            targets.setdefault(target, []).append(rel)
        return targets

    def compare_links(
        self, links: list[str], tar: tarfile.TarFile, member: tarfile.TarInfo
    ) -> None:
        """Second read: compare the hard links to ``member`` with the config."""
        currents = [self.current[rel] for rel in links]
        for current in currents:
            current.verdict = _CHANGED
        same_size = [
            current
            for current in currents
            if current.kind == "file" and current.size == member.size
        ]
        if member.isreg() and same_size:
            results = _same_content(tar, member, [c.path for c in same_size])
            for current, same in zip(same_size, results, strict=True):
                current.verdict = _UNCHANGED if same else _CHANGED

    def result(
        self, *, full: bool, write_bytes: int, space: list[SpaceNeed]
    ) -> Preview:
        """Return the preview (the config's paths are few enough to sort)."""
        changed = sorted(
            rel for rel, c in self.current.items() if c.verdict == _CHANGED
        )
        removed = (
            sorted(rel for rel, c in self.current.items() if not c.verdict)
            if full
            else []
        )
        unchanged = sum(c.verdict == _UNCHANGED for c in self.current.values())
        return Preview(
            added=self.first_added.items,
            changed=changed[:PREVIEW_PATHS],
            removed=removed[:PREVIEW_PATHS],
            unchanged=unchanged,
            added_count=self.added,
            changed_count=len(changed),
            removed_count=len(removed),
            write_bytes=write_bytes,
            space=space,
        )


def _second_read(
    source: Path,
    password: str | None,
    check: SafetyCheck,
    comparison: _Comparison,
    sizer: ArchiveSizer | None,
) -> None:
    """Read the archive again for what links point to (only when it has some)."""
    targets = comparison.link_targets()
    if sizer is not None and sizer.links:
        sizer.measure_links(source, password)  # reads it (its own targets)
    if not targets:
        return

    def visit(name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = check.mapped(member.name)
        links = targets.get(rel) if rel else None
        if links and not member.islnk():
            comparison.compare_links(links, tar, member)

    read_archive(
        source, password, each_member(visit), wanted=is_homeassistant, checksum=False
    )


def _file_system(path: Path) -> FileSystem:
    """Return the file system of ``path``, or of its closest existing parent."""
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return FileSystem.of(path)


def _full(
    source: Path,
    backup: BackupInfo,
    password: str | None,
    *,
    config_dir: Path,
    restore_database: bool,
    temp_dir: Path,
) -> Preview:
    """Simulate Home Assistant's restore at startup (see ``restore_space``)."""
    current: dict[str, _Current] = {}

    def note(rel: str, path: str, info: os.stat_result) -> None:
        if not stat.S_ISDIR(info.st_mode):
            current[rel] = _current(path, info)

    clearing = plan_clearing(config_dir, keep_names(restore_database), visit=note)
    config = _file_system(config_dir)
    temp = _file_system(temp_dir)
    staging = _file_system(config_dir / STAGING_DIR)
    check = SafetyCheck(ARCHIVE_ROOT)
    comparison = _Comparison(config_dir, current, lazy=False, mapped=check.mapped)
    sizer = ArchiveSizer(
        temp_block=temp.block,
        config_block=config.block,
        restore_database=restore_database,
    )
    _read_full(source, backup, password, check, comparison, sizer)
    _second_read(source, password, check, comparison, sizer)
    copied = sizer.copied()
    space = startup_needs(
        config=config,
        temp=temp,
        unpacked=sizer.unpacked() + outer_usage(source, temp.block),
        copied=copied,
        freed=clearing.freed,
        staged=(staging, Usage(blocks(backup.size, staging.block), 1)),
    )
    return comparison.result(full=True, write_bytes=copied.data, space=space)


def _read_full(
    source: Path,
    backup: BackupInfo,
    password: str | None,
    check: SafetyCheck,
    comparison: _Comparison,
    sizer: ArchiveSizer,
) -> None:
    """Read the backup once: check, size and compare every member.

    Refused for what the restore refuses: unsafe members, the layout
    ``check_start`` checks (in the same read: a dry run reads the whole
    backup anyway, and reading its start twice costs memory), and nothing to
    start from.
    """
    holds = False
    inner: list[str] = []

    def visit(name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        nonlocal holds
        safe = check.add(member)
        sizer.add(member)
        rel = check.mapped(member.name)
        holds = holds or (safe and rel is not None and holds_configuration(rel, member))
        if sizer.copies(rel) and not member.isdir():
            comparison.member(rel or "", tar, member)

    each = each_member(visit)

    def consume(name: str, tar: tarfile.TarFile) -> None:
        inner.append(name)
        each(name, tar)

    read_archive(source, password, consume, wanted=is_homeassistant)
    check_inner(backup, inner)
    check.finish()
    require_configuration(backup, holds=holds)


def _partial(
    source: Path,
    backup: BackupInfo,
    password: str | None,
    *,
    config_dir: Path,
    patterns: Sequence[str],
) -> Preview:
    """Compare the chosen files with the configuration (see ``restore_partial``)."""
    chosen = selector(patterns)
    config_real = os.path.realpath(config_dir)
    check = SafetyCheck(ARCHIVE_ROOT)
    comparison = _Comparison(config_dir, {}, lazy=True, mapped=check.mapped)
    budget = Budget(FileSystem.of(config_dir))
    first: list[str] = []
    refused: list[BackupOffloadError] = []

    def visit(name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        check.add(member)
        rel = check.mapped(member.name)
        if not rel or not chosen(rel) or refused:
            return
        if is_live_forbidden(rel):
            refused.append(
                RestorePathError(
                    f"{rel} matches {', '.join(patterns)}, but .storage and"
                    " the database are never restored live",
                    path=rel,
                )
            )
            return
        budget.take(member, rel)
        if member.isdir():
            return
        try:
            check_destination(config_real, rel)
        except RestorePathError as err:
            refused.append(err)
            return
        if not first:
            first.append(rel)
        comparison.member(rel, tar, member)

    read_archive(source, password, each_member(visit), wanted=is_homeassistant)
    check.finish()  # an unsafe archive is refused first, as by the restore
    if refused:
        raise refused[0]
    require_matches(first, backup, patterns)
    _second_read(source, password, check, comparison, None)
    return comparison.result(
        full=False, write_bytes=budget.usage.data, space=[budget.need()]
    )


def preview(
    source: Path,
    backup: BackupInfo,
    password: str | None,
    *,
    config_dir: Path,
    patterns: Sequence[str] | None,
    restore_database: bool,
    is_newer: Callable[[str], bool],
    temp_dir: Path | None = None,
) -> Preview:
    """Return what a restore would add, change and remove; write nothing.

    A full restore (no ``patterns``) is simulated as Home Assistant's restore
    does it: the config directory is emptied except ``backups/`` (and the
    database when it is not restored), then the backup is copied in without
    any entry of those names; ``space`` says what that needs on each file
    system (``temp_dir``: Home Assistant's temporary directory). A partial
    restore only adds or replaces the chosen files. The backup is read
    completely and refused for the same reasons as the restore itself.
    """
    password = effective_password(backup, password)
    if patterns is not None:
        return _partial(
            source, backup, password, config_dir=config_dir, patterns=patterns
        )
    check_version(backup, is_newer)
    return _full(
        source,
        backup,
        password,
        config_dir=config_dir,
        restore_database=restore_database,
        temp_dir=Path(tempfile.gettempdir()) if temp_dir is None else temp_dir,
    )
