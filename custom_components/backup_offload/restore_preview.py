"""Dry run: what a restore would add, change and remove, touching nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
import contextlib
from dataclasses import dataclass
import hashlib
import os
from pathlib import Path
import stat
import tarfile
from typing import Final

from .archive import BackupInfo
from .archive_read import CHUNK, each_member, is_homeassistant, read_archive
from .excludes import ARCHIVE_ROOT
from .restore import (
    DATABASE_FILES,
    KEEP_ALWAYS,
    RestorePathError,
    check_destination,
    check_start,
    check_version,
    effective_password,
    is_live_forbidden,
    require_matches,
    selector,
)
from .safety import SafetyCheck
from .tarstream import member_chunks

PREVIEW_PATHS: Final = 20
"""Paths listed per category in a preview (the counts are complete)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    """What a restore would do to the config directory (a dry run)."""

    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: int


# What a path is, for comparing: ("file", size, sha256), ("link", target),
# ("other",). Directories are not compared.
type _State = tuple[str, ...]


def _backup_states(source: Path, password: str | None) -> dict[str, _State]:
    """Read the whole archive once; return each config path's state.

    The same checks as a verification (and the same errors), with the
    member data hashed on the way.
    """
    check = SafetyCheck(ARCHIVE_ROOT)
    states: dict[str, _State] = {}
    by_name: dict[str, _State] = {}

    def visit(name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        check.add(member)
        rel = check.mapped(member.name)
        state: _State | None
        if member.isfile():
            sha = hashlib.sha256()
            size = 0
            for chunk in member_chunks(tar, member):
                sha.update(chunk)
                size += len(chunk)
            state = ("file", str(size), sha.hexdigest())
        elif member.issym():
            state = ("link", member.linkname)
        elif member.islnk():
            state = by_name.get(member.linkname, ("other",))
        elif member.isdir():
            state = None
        else:
            state = ("other",)
        if state is not None:
            by_name[member.name] = state
        if rel and state is not None:
            states[rel] = state
        elif rel:
            states.pop(rel, None)

    read_archive(source, password, each_member(visit), wanted=is_homeassistant)
    check.finish()
    return states


def _config_state(path: Path, info: os.stat_result, size_hint: str | None) -> _State:
    """Return a config file's state; hash it only when the size could match."""
    if stat.S_ISLNK(info.st_mode):
        return ("link", str(path.readlink()))
    if not stat.S_ISREG(info.st_mode):
        return ("other",)
    if size_hint != str(info.st_size):
        return ("file", str(info.st_size), "")
    sha = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            sha.update(chunk)
    return ("file", str(info.st_size), sha.hexdigest())


def _size_hint(state: _State | None) -> str | None:
    return state[1] if state is not None and state[0] == "file" else None


def _config_states(
    config_dir: Path, keep_top: Iterable[str], wanted: dict[str, _State]
) -> dict[str, _State]:
    """Walk the config dir (no symlinks followed) except the kept entries."""
    keep = set(keep_top)
    states: dict[str, _State] = {}
    for dirpath, dirnames, filenames in os.walk(config_dir):
        base = Path(dirpath)
        prefix = base.relative_to(config_dir).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        for name in [*dirnames, *filenames]:
            rel = prefix + name
            if not prefix and name in keep:
                continue
            try:
                info = os.lstat(base / name)
            except FileNotFoundError:  # removed while we looked
                continue
            if stat.S_ISDIR(info.st_mode):
                continue
            states[rel] = _config_state(base / name, info, _size_hint(wanted.get(rel)))
        if not prefix:
            dirnames[:] = [name for name in dirnames if name not in keep]
    return states


def _differs(new: _State, old: _State) -> bool:
    if new[0] == "file" and old[0] == "file":
        # Sizes differ, or (equal sizes) the hashes do.
        return new[1] != old[1] or new[2] != old[2]
    return new != old


def preview(
    source: Path,
    backup: BackupInfo,
    password: str | None,
    *,
    config_dir: Path,
    patterns: Sequence[str] | None,
    restore_database: bool,
    is_newer: Callable[[str], bool],
) -> Preview:
    """Return what a restore would add, change and remove; write nothing.

    A full restore (no ``patterns``) is simulated as Home Assistant's restore
    does it: the config directory is emptied except ``backups/`` (and the
    database when it is not restored), then the backup is copied in without
    any entry of those names. A partial restore only adds or replaces the
    chosen files. The backup is read completely and refused for the same
    reasons as the restore itself.
    """
    password = effective_password(backup, password)
    if patterns is None:
        check_version(backup, is_newer)
        check_start(source, backup, password)
    states = _backup_states(source, password)
    if patterns is None:
        keep = {*KEEP_ALWAYS, *(() if restore_database else DATABASE_FILES)}
        wanted = {
            rel: state
            for rel, state in states.items()
            if not keep.intersection(rel.split("/"))
        }
        current = _config_states(config_dir, keep, wanted)
    else:
        chosen = selector(patterns)
        wanted = {}
        for rel, state in states.items():
            if chosen(rel):
                if is_live_forbidden(rel):
                    raise RestorePathError(
                        f"{rel} matches {', '.join(patterns)}, but .storage and"
                        " the database are never restored live",
                        path=rel,
                    )
                wanted[rel] = state
        require_matches(list(wanted), backup, patterns)
        config_real = os.path.realpath(config_dir)
        current = {}
        for rel in wanted:
            check_destination(config_real, rel)
            path = config_dir / rel
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                current[rel] = _config_state(
                    path, os.lstat(path), _size_hint(wanted[rel])
                )
    added = sorted(set(wanted) - set(current))
    removed = sorted(set(current) - set(wanted)) if patterns is None else []
    both = set(wanted) & set(current)
    changed = sorted(rel for rel in both if _differs(wanted[rel], current[rel]))
    return Preview(
        added=added,
        changed=changed,
        removed=removed,
        unchanged=len(both) - len(changed),
    )
