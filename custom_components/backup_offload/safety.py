"""Decide, before anything is written, whether an archive is safe to extract.

An archive is refused as a whole when any member has an absolute name or a
``..`` component, is a device node or a FIFO, or is a symbolic or hard link
that would lead out of the target directory. Links are resolved the way the
file system would resolve them after extraction, following the archive's own
symlinks (a chain of harmless-looking links can still escape), so the check
does not depend on the order of the members. Tarfile's ``data`` filter runs
during extraction as a second line of defence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import tarfile
from typing import Final

from .errors import UnsafeArchiveError

_MAX_LINK_DEPTH: Final = 40  # like the kernel's limit on nested symlinks
_SHOWN: Final = 5  # problems named in the error message


def is_unsafe_name(name: str) -> bool:
    """Return whether a member name is absolute or climbs with ``..``."""
    # String operations: this runs for every member of every archive read.
    return name.startswith(("/", "\\")) or ".." in name.split("/")


def _parts(name: str) -> list[str]:
    """Return the components of a relative POSIX path, as PurePosixPath has them."""
    return [part for part in name.split("/") if part and part != "."]


def escapes(
    parts: list[str], links: dict[str, str], *, follow_last: bool, depth: int = 0
) -> bool:
    """Return whether a relative path leaves its root once links are followed.

    ``links`` maps symlink paths (relative to the root) to their targets.
    """
    resolved = _resolve(parts, links, follow_last=follow_last, depth=depth)
    return resolved is None


def link_escapes(rel: str, target: str, links: dict[str, str]) -> bool:
    """Return whether the symlink at ``rel`` pointing to ``target`` escapes."""
    if target.startswith("/"):
        return True
    return escapes(rel.split("/")[:-1] + target.split("/"), links, follow_last=True)


def _resolve(
    parts: list[str], links: dict[str, str], *, follow_last: bool, depth: int
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
        current = "/".join(stack)
        is_last = index == len(parts) - 1
        if current in links and (follow_last or not is_last):
            target = links[current]
            if target.startswith("/") or depth >= _MAX_LINK_DEPTH:
                return None
            through = _resolve(
                [*stack[:-1], *target.split("/")],
                links,
                follow_last=True,
                depth=depth + 1,
            )
            if through is None:
                return None
            stack = through
    return stack


@dataclass(slots=True)
class SafetyCheck:
    """Collects an archive's members, then says which ones are unsafe.

    ``root`` is the directory inside the archive that is extracted (``data``):
    member names are checked as they will be on disk, relative to the target.
    """

    root: str
    problems: list[str] = field(default_factory=list)
    _links: dict[str, str] = field(default_factory=dict)
    _hardlinks: dict[str, str] = field(default_factory=dict)
    _paths: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def mapped(self, name: str) -> str | None:
        """Return a member's path relative to the target, None if not under root.

        The root directory itself maps to ``""``.
        """
        if name.startswith("/"):
            return None
        parts = _parts(name)
        root = _parts(self.root)
        if parts[: len(root)] != root:
            return None
        return "/".join(parts[len(root) :])

    def add(self, member: tarfile.TarInfo) -> None:
        """Check what can be checked of one member alone; remember the rest."""
        if is_unsafe_name(member.name):
            self.problems.append(f"{member.name}: absolute path or '..'")
            return
        if member.ischr() or member.isblk() or member.isfifo():
            self.problems.append(f"{member.name}: device node or FIFO")
            return
        rel = self.mapped(member.name)
        if rel is None or not rel:
            return
        if member.islnk():
            self._add_hardlink(member, rel)
        self._paths.append(rel)
        self._seen.add(rel)
        if member.issym():
            self._links[rel] = member.linkname

    def _add_hardlink(self, member: tarfile.TarInfo, rel: str) -> None:
        target = self.mapped(member.linkname)
        if is_unsafe_name(member.linkname) or not target:
            self.problems.append(f"{member.name}: hard link to {member.linkname}")
        elif target not in self._seen:
            # Extraction links to a file already written: it must come first.
            self.problems.append(f"{member.name}: hard link to a missing member")
        else:
            self._hardlinks[rel] = target

    def hardlink_target(self, rel: str) -> str | None:
        """Return what the hard link at ``rel`` points to (target-relative)."""
        return self._hardlinks.get(rel)

    def finish(self) -> None:
        """Check the links and paths; raise UnsafeArchiveError if anything is."""
        for rel, target in self._links.items():
            if link_escapes(rel, target, self._links):
                self.problems.append(f"{self.root}/{rel}: symlink to {target}")
        for rel, target in self._hardlinks.items():
            if escapes(target.split("/"), self._links, follow_last=True):
                self.problems.append(f"{self.root}/{rel}: hard link leaves the target")
        for rel in self._paths:
            if escapes(rel.split("/"), self._links, follow_last=False):
                self.problems.append(
                    f"{self.root}/{rel}: leads through a symlink outside"
                )
        if self.problems:
            shown = "; ".join(self.problems[:_SHOWN])
            more = len(self.problems) - _SHOWN
            raise UnsafeArchiveError(
                f"The backup has unsafe members and was not extracted: {shown}"
                + (f" (and {more} more)" if more > 0 else ""),
                count=str(len(self.problems)),
            )
