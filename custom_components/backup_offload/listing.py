"""List the backups of a location, cheaply enough to do it every few minutes.

A scan is one ``scandir`` of the location root plus one ``lstat`` per entry;
only archives that are new or changed (by name, size and mtime) are opened,
so on a share whose disks sleep a refresh with nothing new opens no file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
import stat

from .errors import (
    BackupNotFoundError,
    BackupOffloadError,
    CorruptBackupError,
    InvalidBackupError,
    LocationUnavailableError,
)
from .metadata import BackupInfo, parse_date, read_backup_info

_Key = tuple[int, int]  # (size, mtime_ns)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The backups of a location, newest first, and the files that are not."""

    backups: list[BackupInfo]
    invalid: dict[str, str] = field(default_factory=dict)
    """File name -> why it is not a valid backup."""


def is_candidate(name: str) -> bool:
    """Return whether a file name in a location root may be a backup.

    Hidden names are skipped: they are temporary files (ours start with a dot)
    or not meant to be seen.
    """
    return name.endswith(".tar") and not name.startswith(".")


class BackupScanner:
    """Lists one location and remembers what each archive holds.

    Safe to use from several executor threads at once: the cache is one
    (location, entries) pair, read and replaced as a whole.
    """

    def __init__(self) -> None:
        """Start with an empty cache."""
        self._state: tuple[Path | None, dict[str, tuple[_Key, BackupInfo | str]]] = (
            None,
            {},
        )

    def scan(self, location: Path) -> ScanResult:
        """Return every valid backup in ``location``'s root, newest first.

        Raises LocationUnavailableError when the directory cannot be listed.
        """
        entries = _list_archives(location)
        cached_location, cache = self._state
        cached = {
            name: value
            for name, (key, value) in cache.items()
            if cached_location == location and entries.get(name) == key
        }
        results: dict[str, BackupInfo | str] = {}
        keep: dict[str, tuple[_Key, BackupInfo | str]] = {}
        for name, key in entries.items():
            if name in cached:
                results[name] = cached[name]
                keep[name] = (key, cached[name])
                continue
            try:
                results[name], lasting = _read(location / name)
            except BackupNotFoundError:  # deleted since the directory scan
                continue
            if lasting:
                keep[name] = (key, results[name])
        self._state = (location, keep)
        backups = [value for value in results.values() if isinstance(value, BackupInfo)]
        backups.sort(key=lambda info: (parse_date(info.date), info.file), reverse=True)
        invalid = {
            name: value
            for name, value in sorted(results.items())
            if isinstance(value, str)
        }
        return ScanResult(backups=backups, invalid=invalid)

    def forget(self) -> None:
        """Drop the cache, e.g. after a file was replaced within one mtime tick."""
        self._state = (None, {})


def _read(path: Path) -> tuple[BackupInfo | str, bool]:
    """Return the archive's info or why it is not a backup, and if that lasts.

    Only what the file itself says is remembered: an I/O error or a file that
    vanished is asked again at the next scan.
    """
    try:
        return read_backup_info(path), True
    except BackupNotFoundError:
        raise
    except (InvalidBackupError, CorruptBackupError) as err:
        return str(err), True
    except BackupOffloadError as err:
        return str(err), False


def _list_archives(location: Path) -> dict[str, _Key]:
    """Return name -> (size, mtime_ns) of the candidate archives."""
    try:
        with os.scandir(location) as entries:
            found = {}
            for entry in entries:
                if not is_candidate(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted while we looked
                    continue
                if stat.S_ISREG(info.st_mode):
                    found[entry.name] = (info.st_size, info.st_mtime_ns)
            return found
    except FileNotFoundError as err:
        raise LocationUnavailableError(
            f"{location} does not exist", location_reason="not_found"
        ) from err
    except NotADirectoryError as err:
        raise LocationUnavailableError(
            f"{location} is not a directory", location_reason="not_a_directory"
        ) from err
    except OSError as err:
        raise LocationUnavailableError(
            f"Listing {location} failed: {err}", location_reason="unreachable"
        ) from err


def find_backup(
    location: Path, backup_id: str, scanner: BackupScanner | None = None
) -> BackupInfo:
    """Return the backup with ``backup_id`` (newest if several); or raise.

    Raises BackupNotFoundError, or LocationUnavailableError.
    """
    result = (scanner or BackupScanner()).scan(location)
    for backup in result.backups:
        if backup.backup_id == backup_id:
            return backup
    raise BackupNotFoundError(
        f"No backup with id {backup_id} in {location}", backup_id=backup_id
    )
