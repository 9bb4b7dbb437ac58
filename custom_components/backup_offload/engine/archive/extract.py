"""Extract a backup's config directory, safely, for a restore.

Every member is checked (``SafetyCheck``) before anything of the archive
reaches the target: the archive is read once, its members staged into a
new, empty or hidden directory as they are checked, and the staged files
moved into place only once the whole archive was checked. Regular files and
directories are written here; links, and everything after the first link,
by tarfile with its ``data`` filter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from dataclasses import dataclass, field
import os
from pathlib import Path
import secrets
import shutil
import stat
import tarfile
from typing import Final, Protocol

from ..errors import (
    BackupOffloadError,
    UnsafeArchiveError,
)
from ..fileops import write_all, write_error
from ..gil import responsive_call
from .excludes import ARCHIVE_ROOT
from .read import (
    each_member,
    is_homeassistant,
    read_archive,
    read_member_data,
)
from .safety import SafetyCheck, is_unsafe_name
from .securetar_compat import forget_members
from .tarstream import member_chunks


class SpaceBudget(Protocol):
    """What an extraction may write (``restore_space.Budget``)."""

    over: bool
    """A member did not fit: nothing more is written."""

    def take(self, member: tarfile.TarInfo, rel: str) -> bool:
        """Count a member before it is written; return whether it fits."""

    def error(self) -> BackupOffloadError:
        """Return the error for what did not fit."""

    def reset(self) -> None:
        """Forget what was counted (the extraction starts again)."""


@dataclass(slots=True)
class _Selection:
    """The members to extract, decided in the first pass."""

    check: SafetyCheck
    select: Callable[[str], bool] | None
    order: dict[str, int]
    """Member name -> position, for every member under ``data/``."""
    by_rel: dict[str, str]
    """Target-relative path -> member name (the last one wins, as on disk)."""
    chosen: dict[str, str]
    """Member name -> path relative to the target."""
    headers: dict[str, tuple[bytes, int, str]] = field(default_factory=dict)
    """Member name -> type, size and link target (for a space budget)."""

    def visit(self, name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.check.add(member)
        read_member_data(tar, member)
        rel = self.check.mapped(member.name)
        if not rel:
            return
        self.order[member.name] = len(self.order)
        self.headers[member.name] = (member.type, member.size, member.linkname)
        self.by_rel[rel] = member.name
        if self.select is None or self.select(rel):
            self.chosen[member.name] = rel

    def close_hardlinks(self) -> None:
        """Also extract the files that chosen hard links point to."""
        for rel in list(self.chosen.values()):
            target = self.check.hardlink_target(rel)
            if target is not None:  # present: SafetyCheck.finish checked that
                self.chosen.setdefault(self.by_rel[target], target)
        self.chosen = dict(
            sorted(self.chosen.items(), key=lambda item: self.order[item[0]])
        )

    def require(self, budget: SpaceBudget) -> None:
        """Raise the budget's error if the chosen members do not fit."""
        for name, rel in self.chosen.items():
            header = tarfile.TarInfo(rel)
            header.type, header.size, header.linkname = self.headers[name]
            budget.take(header, rel)
        if budget.over:
            raise budget.error()


class _Created:
    """What an extraction created, to remove it again if it fails."""

    def __init__(self, target: Path) -> None:
        self._target = target
        self._paths: list[Path] = []
        self._seen: set[Path] = set()

    def note(self, rel: str) -> None:
        """Remember ``rel`` and its parents that do not exist yet."""
        path = self._target / rel
        missing = []
        while path != self._target and path not in self._seen:
            if os.path.lexists(path):
                break
            missing.append(path)
            path = path.parent
        for new in reversed(missing):
            self._seen.add(new)
            self._paths.append(new)

    def undo(self) -> None:
        """Remove what was created, deepest first (best effort)."""
        for path in reversed(self._paths):
            # A directory that is not empty now is left (not ours alone).
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink(missing_ok=True)


class _TargetError(Exception):
    """Writing into the target failed."""

    def __init__(self, err: OSError) -> None:
        super().__init__(str(err))
        self.os_error = err


@responsive_call
def extract_backup(
    path: Path,
    target: Path,
    password: str | None,
    select: Callable[[str], bool] | None = None,
    *,
    budget: SpaceBudget | None = None,
) -> list[str]:
    """Extract the config directory of a backup into ``target``.

    Only members under ``data/`` are extracted, without that prefix;
    ``select(relative path)`` picks members (default: all); a chosen hard link
    brings the file it links to. One unsafe member (absolute path, ``..``, a
    link leading out of the target, a device node or FIFO) refuses the whole
    archive, and nothing of it is left in ``target``; tarfile's ``data``
    filter checks every write as a second line of defence. If anything fails,
    what was created is removed again.

    The archive is read once: the chosen members are extracted as they come
    into a staging directory (the target itself when it is new or empty,
    else a hidden directory in it), every member is checked on the way, and
    the staged files are moved into place only once the whole archive was
    checked. Only a chosen hard link to a file that was not chosen makes it
    read twice: checked completely, then the members extracted.

    ``budget`` counts every chosen member before it is written: once one
    does not fit, nothing more is written, the rest of the archive is read
    (checked, and counted for the message), what was written is removed
    and the budget's error raised. So the file system never fills.

    Returns the extracted relative paths in archive order. Raises what
    ``verify_backup`` raises, and InsufficientSpaceError or WriteFailedError
    when writing into ``target`` fails.
    """
    try:
        return _OnePass(path, target, password, select, budget).run()
    except _LinkTargetNotChosenError:
        pass  # nothing of the first attempt is left
    if budget is not None:
        budget.reset()
    selection = _Selection(SafetyCheck(ARCHIVE_ROOT), select, {}, {}, {})
    checked = read_archive(
        path,
        password,
        each_member(selection.visit),
        wanted=is_homeassistant,
        digest=True,
    )
    selection.check.finish()
    selection.close_hardlinks()
    if budget is not None:
        selection.require(budget)  # before anything is written
    if selection.chosen:
        _extract(path, target, password, selection, checked.sha256)
    return list(dict.fromkeys(selection.chosen.values()))


class _LinkTargetNotChosenError(Exception):
    """A chosen hard link points to a member that was passed over."""


_STAGE_PREFIX: Final = ".backup_offload-extract-"


class _OnePass:
    """Extract in one read: stage, check, then move into place."""

    def __init__(
        self,
        path: Path,
        target: Path,
        password: str | None,
        select: Callable[[str], bool] | None,
        budget: SpaceBudget | None,
    ) -> None:
        self.path = path
        self.target = target
        self.password = password
        self.select = select
        self.budget = budget
        self.check = SafetyCheck(ARCHIVE_ROOT)
        self.chosen: dict[str, tarfile.TarInfo] = {}
        """Target-relative path -> its (last) member, in archive order."""
        self.refused: tarfile.FilterError | None = None
        self.created_target = False
        self.stage = target
        self.created: _Created | None = None

    def run(self) -> list[str]:
        try:
            self._prepare()
            read_archive(
                self.path, self.password, self._consume, wanted=is_homeassistant
            )
            self._finish_check()
            if self.stage != self.target:
                self._commit()
        except BaseException as err:
            self._undo(remove_target=not isinstance(err, _TargetError))
            if isinstance(err, tarfile.FilterError):
                raise UnsafeArchiveError(f"Refused while extracting: {err}") from err
            if isinstance(err, _TargetError):
                raise write_error(
                    err.os_error, f"the extracted files in {self.target}"
                ) from err
            raise
        if not self.chosen and self.created_target:
            self._undo(remove_target=True)
        return list(self.chosen)

    def _finish_check(self) -> None:
        """Raise for unsafe members (all named), then what the filter refused.

        Then for members beyond the budget: safety comes first.
        """
        self.check.finish()
        if self.refused is not None:
            raise self.refused
        if self.budget is not None and self.budget.over:
            raise self.budget.error()

    def _prepare(self) -> None:
        """Create the target if needed and choose the staging directory."""
        try:
            try:
                with os.scandir(self.target) as entries:
                    empty = next(entries, None) is None
            except FileNotFoundError:
                self.target.mkdir(parents=True)
                self.created_target = True
                empty = True
            if not empty:
                self.stage = self.target / f"{_STAGE_PREFIX}{secrets.token_hex(4)}"
                self.stage.mkdir(mode=0o700)
        except OSError as err:
            raise _TargetError(err) from err

    def _members(self, tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        """Check every member; yield those to extract (none once refused).

        Each yielded member is renamed in place to its target-relative path
        (a stream's members are not read again).
        """
        for member in tar:
            forget_members(tar)  # tarfile's hard-link fallback is not needed here
            if not self.check.add(member) or self.refused is not None:
                continue
            rel = self.check.mapped(member.name)
            if rel and (self.select is None or self.select(rel)):
                if self.budget is not None and not self.budget.take(member, rel):
                    continue  # counted, for the message; nothing more is written
                if member.islnk():
                    member.linkname = (
                        self.check.mapped(member.linkname) or member.linkname
                    )
                    if member.linkname not in self.chosen:
                        # Its data went by unextracted: only a second pass
                        # can bring it.
                        raise _LinkTargetNotChosenError(member.linkname)
                member.name = rel
                self.chosen.pop(rel, None)  # keep archive order of the last one
                self.chosen[rel] = member
                yield member

    def _consume(self, name: str, tar: tarfile.TarFile) -> None:
        tar.errorlevel = 2  # every extraction problem raises
        writer = _PlainWriter(self.stage)

        def handed_over() -> Iterator[tarfile.TarInfo]:
            for member in self._members(tar):
                if writer.takes(member):
                    writer.write(tar, member)
                else:
                    writer.hand_over(member)
                    yield member

        try:
            # Safe: every member is checked as it comes (SafetyCheck), what
            # tarfile extracts goes through its data filter, and nothing
            # leaves the staging directory before the whole archive has been
            # checked.
            tar.extractall(self.stage, members=handed_over(), filter="data")
            writer.finish()
        except tarfile.FilterError as err:
            # Refused: read the rest only to name every unsafe member.
            self.refused = err
            for member in tar:
                self.check.add(member)
                forget_members(tar)
        except OSError as err:
            raise _TargetError(err) from err

    def _commit(self) -> None:
        """Move the staged members into the target (the filter checks again)."""
        created = self.created = _Created(self.target)
        directories: list[str] = []
        for rel, member in self.chosen.items():
            # The target may hold symlinks that the staging directory did not.
            tarfile.data_filter(member, str(self.target))
            created.note(rel)
            dest = self.target / rel
            staged = self.stage / rel
            try:
                if member.isdir():
                    directories.append(rel)
                    if not dest.is_dir() or dest.is_symlink():
                        dest.mkdir()
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                staged.replace(dest)
            except OSError as err:
                raise _TargetError(err) from err
        for rel in reversed(directories):
            _copy_attributes(self.stage / rel, self.target / rel)
        shutil.rmtree(self.stage, ignore_errors=True)

    def _undo(self, *, remove_target: bool) -> None:
        if self.created is not None:
            self.created.undo()
        if self.stage != self.target:
            shutil.rmtree(self.stage, ignore_errors=True)
            return
        if self.created_target and remove_target:
            shutil.rmtree(self.target, ignore_errors=True)
            return
        # The target was new or empty: everything in it is ours.
        with contextlib.suppress(OSError), os.scandir(self.target) as entries:
            for entry in list(entries):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    Path(entry.path).unlink(missing_ok=True)


_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
_REWRITE: Final = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW


class _PlainWriter:
    """Writes an archive's regular files and directories into the staging dir.

    tarfile extracts a file through a dozen calls (its open and copy loop,
    ``os.path.exists`` of the directory, chown, chmod and utime by path):
    on ten thousand small files, as much time as the rest of the restore.
    Here a file is one descriptor: create (with its mode, when the umask
    leaves it whole), write, ``utime``, close, with what tarfile's ``data``
    filter would give it (the same permission rules, no ownership, the
    archive's mtime; directories get the default mode, and their mtime once
    everything is written).

    Links, and every member after the archive's first link, go to tarfile
    with its ``data`` filter instead. What this relies on, each upheld by
    ``_OnePass`` and tested: the staging directory is new, empty or a fresh
    private (0700) directory, so until the archive creates a link nothing in
    it can lead anywhere else; a member whose name ``SafetyCheck`` objects
    to is never handed over; moving the staged files into a target that was
    not empty checks each member against that target with
    ``tarfile.data_filter`` again.
    """

    def __init__(self, stage: Path) -> None:
        """Write into ``stage``."""
        self._stage = str(stage)
        self._links = False
        self._umask = _umask()
        self._known_dirs = {self._stage}
        """Directories that exist: their files need no ``makedirs``."""
        self._mtimes: dict[str, float] = {}
        """Directory path -> the mtime it gets once everything is written."""

    def takes(self, member: tarfile.TarInfo) -> bool:
        """Return whether ``member`` is written here (else tarfile writes it)."""
        self._links |= member.issym() or member.islnk()
        plain = member.isdir() or (member.isreg() and member.sparse is None)
        return plain and not self._links and not is_unsafe_name(member.name)

    # Strings and os.path, not pathlib: this runs for every member, and a
    # Path object costs more than the system call it wraps.

    def hand_over(self, member: tarfile.TarInfo) -> None:
        """Note that tarfile extracts ``member``: its directory times are its own."""
        self._mtimes.pop(f"{self._stage}/{member.name}", None)

    def write(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Write a member ``takes`` accepted; OSError if the target refuses."""
        path = f"{self._stage}/{member.name}"
        parent = path.rpartition("/")[0]
        if parent not in self._known_dirs:
            # Directories the archive does not hold, as tarfile creates them.
            os.makedirs(parent, exist_ok=True)  # noqa: PTH103
            self._known_dirs.add(parent)
        if member.isdir():
            try:
                os.mkdir(path)  # noqa: PTH102
            except FileExistsError:
                if not os.path.isdir(path):  # noqa: PTH112
                    raise
            self._known_dirs.add(path)
            self._mtimes[path] = member.mtime
            return
        mode = _data_mode(member.mode)
        try:
            fd = os.open(path, _CREATE, mode)
            exact = self._umask is not None and not mode & self._umask
        except FileExistsError:  # in the archive twice: the last one wins
            fd = os.open(path, _REWRITE)
            exact = False
        try:
            for piece in member_chunks(tar, member):
                write_all(fd, piece)
            if not exact:
                os.fchmod(fd, mode)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Give the directories their times, deepest first (as tarfile does)."""
        for path in sorted(self._mtimes, reverse=True):
            mtime = self._mtimes[path]
            os.utime(path, (mtime, mtime))


def _umask() -> int | None:
    """Return the process's umask without changing it (Linux), None if unknown."""
    try:
        with open("/proc/self/status", "rb") as status:  # noqa: PTH123
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except OSError:  # not Linux, or no procfs
        pass
    return None


def _data_mode(mode: int) -> int:
    """Return a regular file's mode as tarfile's ``data`` filter sets it."""
    mode &= 0o755  # no high bits, no group/other write
    if not mode & 0o100:
        mode &= ~0o111  # executable only if the owner may execute it
    return mode | 0o600


def _copy_attributes(source: Path, dest: Path) -> None:
    """Give a directory in the target the mode and times tarfile gave its copy."""
    with contextlib.suppress(OSError):
        info = source.stat()
        dest.chmod(stat.S_IMODE(info.st_mode))
        os.utime(dest, ns=(info.st_atime_ns, info.st_mtime_ns))


def _require_unchanged(path: Path, read: str | None, checked: str | None) -> None:
    """Refuse what the second pass read if it is not what the first checked."""
    if read != checked:
        raise UnsafeArchiveError(
            f"{path.name} changed while it was restored; nothing was kept",
            file=path.name,
        )


def _extract(
    path: Path,
    target: Path,
    password: str | None,
    selection: _Selection,
    checked: str | None,
) -> None:
    """Second pass: write the chosen members into ``target``.

    ``checked`` is the digest of the file the first pass checked: a file
    that changed in between (someone wrote to the share) is refused, and
    what the second pass wrote is removed.
    """
    created = _Created(target)
    chosen = selection.chosen

    def remap(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        rel = chosen[member.name]
        linkname = member.linkname
        if member.islnk():
            linkname = selection.check.mapped(member.linkname) or linkname
        mapped = member.replace(name=rel, linkname=linkname, deep=False)
        filtered = tarfile.data_filter(mapped, dest)
        created.note(rel)
        return filtered

    def consume(name: str, tar: tarfile.TarFile) -> None:
        tar.errorlevel = 2  # every extraction problem raises

        def members() -> Iterator[tarfile.TarInfo]:
            for member in tar:
                forget_members(tar)
                if member.name in chosen:
                    yield member

        try:
            # Safe: every member was checked in the first pass, and remap ends
            # in tarfile's data filter.
            tar.extractall(target, members=members(), filter=remap)  # noqa: S202
        except OSError as err:
            raise _TargetError(err) from err

    try:
        target.mkdir(parents=True, exist_ok=True)
        extracted = read_archive(
            path,
            password,
            consume,
            wanted=is_homeassistant,
            checksum=False,
            digest=True,
        )
        _require_unchanged(path, extracted.sha256, checked)
    except BaseException as err:
        created.undo()
        if isinstance(err, tarfile.FilterError):
            raise UnsafeArchiveError(f"Refused while extracting: {err}") from err
        if isinstance(err, _TargetError):
            raise write_error(err.os_error, f"the extracted files in {target}") from err
        if isinstance(err, OSError):
            raise write_error(err, f"the extracted files in {target}") from err
        raise
