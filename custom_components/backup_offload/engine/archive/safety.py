"""Decide, before anything is written, whether an archive is safe to restore.

Anyone who can write to a share can put an archive there, and Home
Assistant's own restore extracts a backup with ``filter="fully_trusted"``:
whatever these checks let through, it follows. So a backup is accepted only
when its whole structure is known-good, and one bad member refuses it whole:

- the outer tar (``OuterLayout``): regular files only, exactly one
  ``backup.json`` and inner archives with plain names, each name once;
- every member of Home Assistant's inner archive (``SafetyCheck``), not only
  those under ``data/``: no absolute names or ``..``; only files,
  directories and links; ``data`` itself a directory; links that stay
  inside the archive, and under ``data/`` inside ``data/``; no symlink that
  leads to a directory holding it (Home Assistant's restore copies what
  links point to, and would copy such a loop until the disk is full); no
  restore instruction; modification times a file system can store.

Links are resolved the way the file system would resolve them after
extraction, following the archive's own symlinks, so a chain of
harmless-looking links cannot escape either. A member's directory is
checked against the links that come before it (extraction writes in
archive order, and a link cannot replace a directory that already holds a
file), the links themselves against all of them at the end. Memory does not
grow with the number of members, only with the number of links.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
import math
import re
import tarfile
from typing import Final

from ..errors import InvalidBackupError, UnsafeArchiveError
from ..seen import SeenSet

_MAX_LINK_DEPTH: Final = 40  # like the kernel's limit on nested symlinks
MAX_LINKS: Final = 100_000
"""Links an archive may hold (each is kept in memory until the end)."""
_KEPT: Final = 20  # problems remembered for the message
_SHOWN: Final = 5  # problems named in the message
_MAX_NAME_BYTES: Final = 255  # one path component, as Linux file systems allow
_MAX_MTIME: Final = 2**40  # far beyond any real date, within every time_t
_RESTORE_FILES: Final = (".HA_RESTORE", ".HA_RESTORE_RESULT")
_MEMBER_TYPES: Final = frozenset(
    {
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.GNUTYPE_SPARSE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
    }
)

BACKUP_JSON: Final = "backup.json"
INNER_SUFFIXES: Final = (".tar", ".tar.gz", ".tgz")
MAX_OUTER_MEMBERS: Final = 64
"""Members an outer tar may hold: backup.json, Home Assistant's archive and
the Supervisor's add-on and folder archives."""
_OUTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def is_unsafe_name(name: str) -> bool:
    """Return whether a member name is absolute or climbs with ``..``."""
    # String operations: this runs for every member of every archive read.
    return name.startswith(("/", "\\")) or ".." in name.split("/")


def _parts(name: str) -> list[str]:
    """Return the components of a relative POSIX path, as PurePosixPath has them."""
    return [part for part in name.split("/") if part and part != "."]


def _sane_mtime(member: tarfile.TarInfo) -> bool:
    """Return whether a member's time can be set on a file (utime would raise)."""
    mtime = member.mtime
    return isinstance(mtime, int | float) and (
        math.isfinite(mtime) and abs(mtime) < _MAX_MTIME
    )


# --- outer tar ----------------------------------------------------------------


def outer_name(name: str) -> str | None:
    """Return an outer member's plain name (``./x`` or ``x``), None if it has none."""
    plain = name.removeprefix("./")
    return plain if _OUTER_NAME.fullmatch(plain) and ".." not in plain else None


def is_inner_archive(name: str) -> bool:
    """Return whether a plain outer member name is an inner (secure)tar archive."""
    return name.endswith(INNER_SUFFIXES)


@dataclass(slots=True)
class OuterLayout:
    """Checks the outer tar's members, one at a time, as they are read.

    ``add`` raises InvalidBackupError for the first member that does not
    belong in a Home Assistant backup, and returns the member's plain name.
    """

    file: str
    names: set[str] = field(default_factory=set)

    def _invalid(self, problem: str) -> InvalidBackupError:
        return InvalidBackupError(f"{self.file}: {problem}", file=self.file)

    def add(self, member: tarfile.TarInfo) -> str:
        """Check one outer member; return its plain name."""
        if len(self.names) >= MAX_OUTER_MEMBERS:
            raise self._invalid(f"more than {MAX_OUTER_MEMBERS} members")
        name = outer_name(member.name)
        if name is None or not (name == BACKUP_JSON or is_inner_archive(name)):
            raise self._invalid(f"unexpected member {member.name!r}")
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.sparse:
            raise self._invalid(f"{name} is not a regular file")
        if not _sane_mtime(member):
            raise self._invalid(f"{name} has an impossible date")
        if name in self.names:
            raise self._invalid(f"{name} is in the archive twice")
        self.names.add(name)
        if {"homeassistant.tar", "homeassistant.tar.gz"} <= self.names:
            raise self._invalid("both homeassistant.tar and homeassistant.tar.gz")
        return name


# --- inner archive ------------------------------------------------------------


def resolve(
    parts: list[str], links: Mapping[str, str], *, follow_last: bool, depth: int = 0
) -> list[str] | None:
    """Return the path's components inside the root, None if it escapes."""
    stack: list[str] = []
    for index, part in enumerate(parts):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        is_last = index == len(parts) - 1
        if links and (follow_last or not is_last):
            target = links.get("/".join(stack))
            if target is None:
                continue
            if target.startswith("/") or depth >= _MAX_LINK_DEPTH:
                return None
            through = resolve(
                [*stack[:-1], *target.split("/")],
                links,
                follow_last=True,
                depth=depth + 1,
            )
            if through is None:
                return None
            stack = through
    return stack


def escapes(parts: list[str], links: dict[str, str], *, follow_last: bool) -> bool:
    """Return whether a relative path leaves its root once links are followed.

    ``links`` maps symlink paths (relative to the root) to their targets.
    """
    return resolve(parts, links, follow_last=follow_last) is None


def link_escapes(rel: str, target: str, links: dict[str, str]) -> bool:
    """Return whether the symlink at ``rel`` pointing to ``target`` escapes."""
    if target.startswith("/"):
        return True
    return escapes(rel.split("/")[:-1] + target.split("/"), links, follow_last=True)


def link_loops(rel: str, target: str, links: dict[str, str]) -> bool:
    """Return whether the symlink at ``rel`` leads to a directory that holds it.

    Home Assistant's restore copies what a link points to: such a link would
    be copied into itself, again and again.
    """
    parent = resolve(rel.split("/")[:-1], links, follow_last=True)
    if parent is None or target.startswith("/"):
        return False
    resolved = resolve(rel.split("/")[:-1] + target.split("/"), links, follow_last=True)
    return resolved is not None and parent[: len(resolved)] == resolved


def _too_long(part: str) -> bool:
    return len(part.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES


def _inside(resolved: list[str] | None, root: list[str]) -> bool:
    return resolved is not None and resolved[: len(root)] == root


@dataclass(slots=True)
class SafetyCheck:
    """Checks every member of Home Assistant's archive, then its links.

    ``root`` is the directory of the archive that is restored into the
    configuration (``data``); ``mapped`` gives a member's path relative to it.
    """

    root: str
    count: int = 0
    """Problems found so far."""
    problems: list[str] = field(default_factory=list)
    """The first problems, for the message."""
    _root_parts: list[str] = field(default_factory=list)
    _links: dict[str, str] = field(default_factory=dict)
    _hardlinks: dict[str, str] = field(default_factory=dict)
    _files: SeenSet = field(
        # Only asked for hard links' targets: a filter from the first name on
        # (2 MiB); a target it wrongly claims is refused by the extraction.
        default_factory=lambda: SeenSet(exact=0, bits=1 << 24)
    )
    _checked_dir: tuple[str, int] | None = None
    """The last directory found safe, and how many links there were then."""

    def __post_init__(self) -> None:
        """Split the root once."""
        self._root_parts = _parts(self.root)

    def _problem(self, text: str) -> bool:
        self.count += 1
        if len(self.problems) < _KEPT:
            self.problems.append(text)
        return False

    def mapped(self, name: str) -> str | None:
        """Return a member's path relative to the target, None if not under root.

        The root directory itself maps to ``""``.
        """
        if name.startswith("/"):
            return None
        parts = _parts(name)
        root = self._root_parts
        if parts[: len(root)] != root:
            return None
        return "/".join(parts[len(root) :])

    def add(self, member: tarfile.TarInfo) -> bool:
        """Check what can be checked of one member now; False if it is unsafe."""
        parts = _parts(member.name)
        in_root = parts[: len(self._root_parts)] == self._root_parts
        problem = self._member_problem(member, parts, in_root)
        if problem is not None:
            return self._problem(f"{member.name}: {problem}")
        path = "/".join(parts)
        if member.issym():
            if len(self._links) + len(self._hardlinks) >= MAX_LINKS:
                return self._problem(f"{member.name}: more than {MAX_LINKS} links")
            self._links[path] = member.linkname
        elif member.islnk():
            return self._add_hardlink(member, path, in_root)
        elif member.isreg():
            self._files.add(path)
        return True

    def _member_problem(
        self, member: tarfile.TarInfo, parts: list[str], in_root: bool
    ) -> str | None:
        """Return what is wrong with one member by itself, None if nothing."""
        relative = parts[len(self._root_parts) :] if in_root else None
        problem: str | None = None
        if is_unsafe_name(member.name):
            problem = "absolute path or '..'"
        elif member.ischr() or member.isblk() or member.isfifo():
            problem = "device node or FIFO"
        elif member.type not in _MEMBER_TYPES:
            problem = "unsupported member type"
        elif not _sane_mtime(member):
            problem = "impossible modification time"
        elif any(_too_long(part) for part in parts):
            problem = f"a name longer than {_MAX_NAME_BYTES} bytes"
        elif not member.isdir() and (not parts or relative == []):
            problem = f"{self.root or 'the root'} must be a directory"
        elif (
            relative is not None
            and len(relative) == 1
            and (relative[0] in _RESTORE_FILES)
        ):
            problem = "a restore instruction (Home Assistant would restore again)"
        elif not self._directory_ok(parts, in_root):
            problem = "leads through a symlink outside"
        return problem

    def _directory_ok(self, parts: list[str], in_root: bool) -> bool:
        """Return whether a member's directory stays inside (through known links)."""
        if not self._links or len(parts) < 2:
            return True
        directory = "/".join(parts[:-1])
        if self._checked_dir == (directory, len(self._links)):
            return True  # members come directory by directory
        resolved = resolve(parts[:-1], self._links, follow_last=True)
        ok = resolved is not None and (
            not in_root or _inside(resolved, self._root_parts)
        )
        if ok:
            self._checked_dir = (directory, len(self._links))
        return ok

    def _add_hardlink(self, member: tarfile.TarInfo, path: str, in_root: bool) -> bool:
        target = "/".join(_parts(member.linkname))
        if is_unsafe_name(member.linkname) or not target:
            return self._problem(f"{member.name}: hard link to {member.linkname}")
        if in_root and self.mapped(target) in (None, ""):
            return self._problem(f"{member.name}: hard link out of {self.root}")
        if target not in self._files:
            # Extraction links to a file already written: it must come first.
            return self._problem(f"{member.name}: hard link to a missing member")
        if len(self._links) + len(self._hardlinks) >= MAX_LINKS:
            return self._problem(f"{member.name}: more than {MAX_LINKS} links")
        self._hardlinks[path] = target
        self._files.add(path)
        return True

    def hardlink_target(self, rel: str) -> str | None:
        """Return what the hard link at ``rel`` points to (target-relative)."""
        target = self._hardlinks.get("/".join([*self._root_parts, rel]))
        return None if target is None else self.mapped(target)

    def _check_links(self) -> None:
        root = self._root_parts
        for path, target in self._links.items():
            parts = path.split("/")
            resolved = (
                None
                if target.startswith("/")
                else resolve(
                    [*parts[:-1], *target.split("/")], self._links, follow_last=True
                )
            )
            if resolved is None:
                self._problem(f"{path}: symlink to {target} leaves the archive")
            elif parts[: len(root)] == root and not _inside(resolved, root):
                self._problem(f"{path}: symlink to {target} leads out of {self.root}")
            elif parts[: len(root)] == root and link_loops(path, target, self._links):
                self._problem(
                    f"{path}: symlink to {target} leads to a directory that holds it"
                )
        for path, target in self._hardlinks.items():
            resolved = resolve(target.split("/"), self._links, follow_last=True)
            if resolved is None or (
                path.split("/")[: len(root)] == root and not _inside(resolved, root)
            ):
                self._problem(f"{path}: hard link leaves the target")

    def finish(self) -> None:
        """Check the links; raise UnsafeArchiveError if anything is unsafe."""
        self._check_links()
        if self.count:
            shown = "; ".join(self.problems[:_SHOWN])
            more = self.count - min(self.count, _SHOWN)
            raise UnsafeArchiveError(
                f"The backup has unsafe members and was not extracted: {shown}"
                + (f" (and {more} more)" if more > 0 else ""),
                count=str(self.count),
            )
