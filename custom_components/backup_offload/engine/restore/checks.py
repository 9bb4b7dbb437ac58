"""Restore a backup into Home Assistant (synchronous core): what all ways share.

Two ways, both validated completely before the configuration is touched:

- **Full restore** (``restore_full``): the archive is copied from the
  location into Home Assistant's local temporary backup directory, the
  copy is verified, and Home Assistant's own restore-at-startup instruction
  is written. Home Assistant replaces the configuration at its next start,
  before anything runs, exactly as it does for a restore from its own
  backup page.
- **Partial restore** (``restore_partial``): the chosen files are extracted
  into a temporary directory on the config directory's file system, and
  each is then moved into place with an atomic rename. ``.storage/`` and
  the database are never restored live.

``restore_preview`` reports what either would add, change and remove,
touching nothing; ``restore_outcome`` reads what Home Assistant's restore at
startup left behind. This module holds their names, errors and checks.
Every function does its blocking work in the calling thread and is meant
to run in one executor job; nothing here imports Home Assistant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
from dataclasses import dataclass
import os
from pathlib import Path, PurePosixPath
import tarfile
from typing import Final

from awesomeversion import AwesomeVersion

from ..archive.excludes import HA_DATABASE_EXCLUDES, build_matcher
from ..archive.read import is_homeassistant, read_archive
from ..errors import BackupOffloadError
from ..metadata import INNER_NAME, TEMP_PREFIX, BackupInfo

STAGING_DIR: Final = "tmp_backups"
"""Home Assistant core's temporary backup directory (in the config dir); its
own restore downloads a backup there too, and backups leave ``*.tar`` in it
out."""
STAGED_PREFIX: Final = "backup_offload_"
"""Staged archives: ``tmp_backups/backup_offload_<backup id>.tar``."""
MARKER_NAME: Final = f"{TEMP_PREFIX}restore.json"
"""Our record of a staged restore, next to the staged archive.

In ``tmp_backups`` because Home Assistant's restore empties the whole config
directory (except ``backups/``) before it copies the backup in: the record
survives exactly when the restore stopped before that point. Its name starts
with the temporary prefix, so no backup of ours includes it.
"""
PARTIAL_PREFIX: Final = f"{TEMP_PREFIX}restore-"
"""Temporary directories of partial restores, in the config directory."""

# What Home Assistant's restore keeps in the config directory (its
# KEEP_BACKUPS and KEEP_DATABASE): kept at the top level, and never copied
# from the backup at any depth (shutil.ignore_patterns).
KEEP_ALWAYS: Final = ("backups",)
DATABASE_FILES: Final = HA_DATABASE_EXCLUDES
# Paths a live (partial) restore never writes: Home Assistant keeps
# `.storage` in memory and writes it back, and the recorder holds the
# database open. Also the restore control files.
_LIVE_FORBIDDEN_DIRS: Final = (".storage",)
_LIVE_FORBIDDEN_FILES: Final = (
    *DATABASE_FILES,
    "home-assistant_v2.db-shm",
    "home-assistant_v2.db-journal",
    ".HA_RESTORE",
    ".HA_RESTORE_RESULT",
)


# --- errors -------------------------------------------------------------------


class RestoreInputError(BackupOffloadError):
    """The restore was asked for something it refuses (the caller's input)."""

    caller_input = True


class BackupTooNewError(RestoreInputError):
    """The backup was made by a newer Home Assistant than the running one."""

    reason = "backup_too_new"


class RestorePathError(RestoreInputError):
    """A path cannot be restored live (.storage, database, outside, conflict)."""

    reason = "restore_path_not_allowed"


class NothingToRestoreError(RestoreInputError):
    """No file of the backup matches the paths."""

    reason = "restore_nothing_matched"


class NotRestorableError(BackupOffloadError):
    """Home Assistant's restore at startup could not restore this archive."""

    reason = "not_restorable"


class StagingSpaceError(BackupOffloadError):
    """Not enough local space to stage the restore or to run it at startup."""

    reason = "restore_no_space"


class StartupSpaceError(StagingSpaceError):
    """Home Assistant's restore at startup would fill a file system.

    Placeholders: ``path`` (a directory on that file system), ``needed`` and
    ``free`` (readable sizes).
    """

    reason = "restore_startup_no_space"


class StartupInodesError(StagingSpaceError):
    """Home Assistant's restore at startup would need more files than fit.

    Placeholders: ``path``, ``needed`` and ``free`` (numbers of files).
    """

    reason = "restore_startup_no_inodes"


class ConfigNotClearableError(BackupOffloadError):
    """Home Assistant's restore would stop halfway through emptying the config.

    Placeholder ``path``: the entry it would stop at (relative).
    """

    reason = "restore_config_not_clearable"


class FilesSpaceError(BackupOffloadError):
    """The chosen files of a partial restore do not fit, with the reserve.

    Placeholders: ``path``, ``needed``, ``free`` and ``reserve`` (readable sizes).
    """

    reason = "restore_files_no_space"


class FilesInodesError(FilesSpaceError):
    """The chosen files of a partial restore are more files than fit.

    Placeholders: ``path``, ``needed`` and ``free`` (numbers of files).
    """

    reason = "restore_files_no_inodes"


class StagingError(BackupOffloadError):
    """Writing on this machine (staging, instruction) failed."""

    reason = "restore_staging_failed"


class RestoreWriteError(BackupOffloadError):
    """Moving restored files into place failed (some may be restored)."""

    reason = "restore_write_failed"


class SafetyBackupError(BackupOffloadError):
    """The safety backup before a restore failed; the restore was cancelled."""

    reason = "safety_backup_failed"


class RestoreFormatError(BackupOffloadError):
    """The installed Home Assistant reads restore instructions we do not know."""

    reason = "restore_unsupported"


# --- checks -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewerThan:
    """``is_newer`` for a running Home Assistant version.

    The comparison Home Assistant's restore makes before it refuses a backup
    (AwesomeVersion); an object, not a closure, so that it can be sent to
    the worker process.
    """

    running: str

    def __call__(self, version: str) -> bool:
        """Return whether ``version`` is newer than the running one."""
        return bool(AwesomeVersion(version) > self.running)


def check_version(backup: BackupInfo, is_newer: Callable[[str], bool]) -> None:
    """Refuse what Home Assistant's restore at startup would refuse.

    ``is_newer(version)`` says whether a backup's Home Assistant version is
    newer than the running one (Home Assistant compares with AwesomeVersion).
    """
    version = backup.homeassistant_version
    if version is None:
        raise NotRestorableError(
            f"{backup.file} holds no Home Assistant configuration (add-ons or"
            " folders only)",
            file=backup.file,
        )
    try:
        newer = is_newer(version)
    except Exception as err:
        raise NotRestorableError(
            f"{backup.file}: Home Assistant version {version!r} cannot be compared",
            file=backup.file,
        ) from err
    if newer:
        raise BackupTooNewError(
            f"{backup.name} was made by Home Assistant {version}",
            name=backup.name,
            backup_version=version,
        )


def effective_password(backup: BackupInfo, password: str | None) -> str | None:
    """Return the password Home Assistant's restore must get for ``backup``.

    Home Assistant decrypts whenever a password is given, so an unencrypted
    backup must get none (a location's password may be set meanwhile).
    """
    return password if backup.protected else None


class _Enough(Exception):  # noqa: N818 - a signal, not an error
    """Stops a read once the start of the Home Assistant archive was seen."""


def check_start(path: Path, backup: BackupInfo, password: str | None) -> None:
    """Check the password and the layout Home Assistant expects; read little.

    Opens the Home Assistant archive (decrypts and decompresses its first
    block) and stops: a wrong password is refused before a large archive is
    copied. Home Assistant's restore looks for ``homeassistant.tar.gz`` or
    ``homeassistant.tar`` as ``backup.json``'s ``compressed`` says; an
    archive named otherwise would fail at startup.
    """
    seen: list[str] = []

    def consume(name: str, tar: tarfile.TarFile) -> None:
        seen.append(name)
        raise _Enough

    with contextlib.suppress(_Enough):
        read_archive(path, password, consume, wanted=is_homeassistant)
    check_inner(backup, seen)


def check_inner(backup: BackupInfo, seen: Sequence[str]) -> None:
    """Refuse unless Home Assistant's archive is the one its restore looks for.

    ``seen``: the names of the Home Assistant archives read (see
    ``check_start``).
    """
    expected = INNER_NAME + (".gz" if backup.compressed else "")
    if list(seen) != [expected]:
        raise NotRestorableError(
            f"{backup.file}: backup.json says compressed={backup.compressed},"
            f" so Home Assistant's restore looks for {expected}, but the backup"
            f" has {' and '.join(seen) or 'none'}",
            file=backup.file,
        )


def is_live_forbidden(rel: str) -> bool:
    """Return whether a partial (live) restore must never write ``rel``."""
    parts = PurePosixPath(rel).parts
    return bool(parts) and (
        parts[0] in _LIVE_FORBIDDEN_DIRS
        or (len(parts) == 1 and parts[0] in _LIVE_FORBIDDEN_FILES)
    )


def pattern_is_forbidden(pattern: str) -> bool:
    """Return whether a restore pattern names a path never restored live.

    Only what the pattern names outright (``.storage/...``, the database);
    a broad pattern that happens to match such a file is refused when the
    backup is read.
    """
    return is_live_forbidden(pattern.strip().removeprefix("./"))


def selector(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Return whether a relative path is chosen by ``patterns``.

    Patterns match like the exclude patterns (``*`` within a segment, ``**``
    across, anchored at the config directory); a pattern that matches a
    directory chooses everything in it.
    """
    matches = build_matcher(patterns)

    def chosen(rel: str) -> bool:
        parts = rel.split("/")
        return any(
            matches("/".join(parts[:depth])) for depth in range(1, len(parts) + 1)
        )

    return chosen


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath((root, path)) == root


def check_destination(config_real: str, rel: str) -> None:
    """Refuse a destination that leads out of the config dir or conflicts."""
    dest = Path(config_real, rel)
    parent_real = os.path.realpath(dest.parent)
    if not _inside(config_real, parent_real):
        raise RestorePathError(
            f"{rel}: its directory leads outside the configuration directory",
            path=rel,
        )
    resolved = os.path.relpath(Path(parent_real, dest.name), config_real)
    if is_live_forbidden(resolved):
        raise RestorePathError(
            f"{rel}: leads to {resolved}, which is never restored live", path=rel
        )
    ancestor = Path(parent_real)
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RestorePathError(
            f"{rel}: {os.path.relpath(ancestor, config_real)} is a file in the"
            " configuration directory",
            path=rel,
        )
    if dest.is_dir() and not dest.is_symlink():
        raise RestorePathError(
            f"{rel} is a directory in the configuration directory", path=rel
        )


def require_matches(
    files: Sequence[str], backup: BackupInfo, patterns: Sequence[str]
) -> None:
    """Refuse a partial restore that the patterns choose nothing for."""
    if not files:
        raise NothingToRestoreError(
            f"No file in {backup.file} matches {', '.join(patterns)}",
            patterns=", ".join(patterns),
        )


def require_configuration(backup: BackupInfo, *, holds: bool) -> None:
    """Refuse a full restore of a backup Home Assistant could not start from.

    Its restore empties the configuration first: a backup with neither
    ``configuration.yaml`` nor a file in ``.storage`` (``holds``, see
    ``archive_read.holds_configuration``) would leave nothing behind.
    """
    if not holds:
        raise NotRestorableError(
            f"{backup.file} holds neither configuration.yaml nor .storage: restoring"
            " it would leave an empty configuration",
            file=backup.file,
        )
