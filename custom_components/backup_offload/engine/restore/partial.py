"""Partial restore: chosen files, extracted next to the config, moved in atomically.

``extract_selected`` extracts what the patterns choose into a temporary
directory on the config directory's file system (the whole archive is
read and checked first); ``apply_files`` renames each file onto its
destination. ``.storage/`` and the database are never restored live.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import errno
import os
from pathlib import Path
import secrets
import shutil

from ..archive.extract import extract_backup
from ..errors import BackupOffloadError
from ..fileops import Local, fsync_dir, os_error, remove_quietly
from ..metadata import TEMP_PREFIX, BackupInfo
from .checks import (
    PARTIAL_PREFIX,
    RestorePathError,
    RestoreWriteError,
    check_destination,
    effective_password,
    is_live_forbidden,
    require_matches,
    selector,
)
from .space import Budget, FileSystem

# Failures in the configuration directory, which the files are restored to.
_CONFIG = Local(space=RestoreWriteError, failed=RestoreWriteError)


@dataclass(frozen=True, slots=True, kw_only=True)
class Extracted:
    """Files of a backup extracted next to the config dir, ready to move in."""

    backup: BackupInfo
    temp_dir: Path
    files: list[str]
    """Relative paths to restore (files and symlinks), in archive order."""


def extract_selected(
    source: Path,
    backup: BackupInfo,
    password: str | None,
    *,
    config_dir: Path,
    patterns: Sequence[str],
) -> Extracted:
    """Extract the files ``patterns`` choose into a temporary directory.

    The directory is in the config directory (same file system, so the files
    can be renamed into place). The whole archive is read and checked first
    (``extract_backup``); a chosen path that is never restored live, or
    whose destination leads out of the config directory, refuses the
    restore with nothing written into the configuration. So does a
    selection that does not fit in the free space less the reserve
    (FilesSpaceError): each file is counted before it is written, and
    nothing is written past that budget, so the disk Home Assistant writes
    its database and ``.storage`` to never fills up.
    """
    password = effective_password(backup, password)
    try:
        budget = Budget(FileSystem.of(config_dir))
    except OSError as err:
        what = f"Checking the free space of {config_dir} failed"
        raise _failure(err, what, writing=False, done=[]) from err
    chosen = selector(patterns)
    selected: set[str] = set()

    def select(rel: str) -> bool:
        if not chosen(rel):
            return False
        if is_live_forbidden(rel):
            raise RestorePathError(
                f"{rel} matches {', '.join(patterns)}, but .storage and the"
                " database are never restored live",
                path=rel,
            )
        selected.add(rel)
        return True

    temp_dir = config_dir / f"{PARTIAL_PREFIX}{secrets.token_hex(4)}"
    try:
        extracted = extract_backup(source, temp_dir, password, select, budget=budget)
        files = [
            rel
            for rel in extracted
            if rel in selected
            and ((temp_dir / rel).is_symlink() or not (temp_dir / rel).is_dir())
        ]
        require_matches(files, backup, patterns)
        config_real = os.path.realpath(config_dir)
        for rel in files:
            check_destination(config_real, rel)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return Extracted(backup=backup, temp_dir=temp_dir, files=files)


def _fsync_file(path: Path) -> None:
    if path.is_symlink():
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(source: Path, dest: Path) -> None:
    """Rename ``source`` onto ``dest`` atomically, also across file systems.

    A subdirectory of the config dir can be another mount; then the file is
    copied next to its destination first, and renamed there.
    """
    try:
        source.replace(dest)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        temp = dest.with_name(f"{TEMP_PREFIX}{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            shutil.copy2(source, temp, follow_symlinks=False)
            _fsync_file(temp)
            temp.replace(dest)
        except BaseException:
            remove_quietly(temp)
            raise


def apply_files(extracted: Extracted, *, config_dir: Path) -> list[str]:
    """Move the extracted files into the config dir; return what was restored.

    Every destination is checked again first (the config dir may have
    changed since extraction); then each file is fsync'ed and renamed onto
    its destination, so a reader sees the old file or the new one, never a
    mix. The temporary directory is removed whatever happens.
    """
    done: list[str] = []
    try:
        config_real = os.path.realpath(config_dir)
        for rel in extracted.files:
            check_destination(config_real, rel)
        directories: set[Path] = set()
        for rel in extracted.files:
            source = extracted.temp_dir / rel
            dest = Path(config_real, rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _fsync_file(source)
            _move_into_place(source, dest)
            directories.add(dest.parent)
            done.append(rel)
        for directory in directories:
            fsync_dir(directory)
    except OSError as err:
        what = f"Restoring into {config_dir} failed"
        raise _failure(err, what, writing=True, done=done) from err
    finally:
        shutil.rmtree(extracted.temp_dir, ignore_errors=True)
    return done


def _failure(
    err: OSError, what: str, *, writing: bool, done: list[str]
) -> BackupOffloadError:
    """Return the error of a failure in the configuration directory.

    ``done``: the files restored already (the message lists them).
    """
    return os_error(
        err, what, writing=writing, where=_CONFIG, restored=", ".join(done) or "none"
    )


def discard_extracted(extracted: Extracted) -> None:
    """Remove the temporary directory of an abandoned partial restore."""
    shutil.rmtree(extracted.temp_dir, ignore_errors=True)
