"""List the backups of a location, cheaply enough to do it every few minutes.

A scan is one ``scandir`` of the location root plus one ``lstat`` per entry;
only archives that are new or changed (by name, size and mtime) are opened,
so on a share whose disks sleep a refresh with nothing new opens no file.

On a share where each operation takes a round trip (NAS, VPN), hundreds of
them one after the other add up: as soon as one ``lstat`` or one archive
takes longer than a local disk would (``SLOW_OPERATION``), the rest of them
run on a few threads at once (at most ``MAX_THREADS``, for this scan only).

Those threads are the one deliberate exception to "one thread per hung
location": an archive costs about four round trips (lookup, open, read,
close), so 500 archives at 20 ms each take 40 s one after the other and
about 10 s on 8 threads. A share that stops answering before the scan goes
parallel (the usual case: the probe or the first ``lstat`` hangs) holds one
thread. One that stops in the middle of a parallel scan holds at most
``MAX_THREADS`` more, private to this scan (not Home Assistant's executor);
the location's runner starts nothing else on it meanwhile, so the number
never grows, and they all return when the share does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
import os
from pathlib import Path
import stat
import time
from typing import Final

from .errors import (
    BackupNotFoundError,
    BackupOffloadError,
    CorruptBackupError,
    InvalidBackupError,
    LocationUnavailableError,
    printable,
)
from .fileops import Place, file_kind, os_error
from .gil import responsive_call
from .metadata import BackupInfo, is_backup_file_name, parse_date, read_backup_info

# (size, mtime, ctime, inode): a file rewritten in place with its old size
# and modification time still gets a new ctime, which nobody can set.
_Key = tuple[int, int, int, int]
# What one entry gave: nothing (gone, not a file), an error listing it, or
# its key and (info or why it is invalid, whether that lasts) - or None
# when the file went away while it was read.
_Look = tuple[_Key, "tuple[BackupInfo | str, bool] | None"] | OSError | None

SLOW_OPERATION: Final = 0.005
"""Seconds one file operation may take before a scan goes parallel."""
MAX_THREADS: Final = 8


def _map[T, R](func: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """Return ``[func(item) ...]``: in this thread while it is fast, then on threads.

    ``func`` must not raise (it returns its failures).
    """
    results: list[R] = []
    for index, item in enumerate(items):
        start = time.monotonic()
        results.append(func(item))
        rest = items[index + 1 :]
        if rest and time.monotonic() - start > SLOW_OPERATION:
            with ThreadPoolExecutor(
                min(MAX_THREADS, len(rest)), thread_name_prefix="backup_offload-scan"
            ) as pool:
                results.extend(pool.map(func, rest))
            break
    return results


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The backups of a location, newest first, and the files that are not."""

    backups: list[BackupInfo]
    invalid: dict[str, str] = field(default_factory=dict)
    """File name -> why it is not a valid backup."""
    hidden: list[str] = field(default_factory=list, compare=False)
    """Hidden names in the root (temporary files among them), so that the
    stale-file cleanup needs no second listing of the directory."""


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

    @responsive_call
    def scan(self, location: Path) -> ScanResult:
        """Return every valid backup in ``location``'s root, newest first.

        Raises LocationUnavailableError when the directory cannot be listed.
        """
        cached_location, cache = self._state
        if cached_location != location:
            cache = {}

        def look(entry: os.DirEntry[str]) -> _Look:
            """Stat one entry and, unless the cache knows it, read it at once.

            One worker does both, so the share answers both while its
            directory entry is fresh in the kernel's cache.
            """
            try:
                stat_result = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted while we looked
                return None
            except OSError as err:
                return err
            key = (
                stat_result.st_size,
                stat_result.st_mtime_ns,
                stat_result.st_ctime_ns,
                stat_result.st_ino,
            )
            if not stat.S_ISREG(stat_result.st_mode):
                kind = file_kind(stat_result.st_mode)
                return key, (f"{entry.name} is {kind}, not a backup file", True)
            if printable(entry.name) != entry.name:
                return key, ("the file name is not valid UTF-8: rename the file", True)
            known = cache.get(entry.name)
            if known is not None and known[0] == key:
                return key, (known[1], True)
            return key, _read(location / entry.name)

        entries, hidden = _list_entries(location)
        results: dict[str, BackupInfo | str] = {}
        keep: dict[str, tuple[_Key, BackupInfo | str]] = {}
        for entry, looked in zip(entries, _map(look, entries), strict=True):
            if isinstance(looked, OSError):
                raise os_error(
                    looked, str(location / entry.name), writing=False
                ) from looked
            if looked is None:
                continue
            key, outcome = looked
            if outcome is None:  # deleted while it was read
                continue
            value, lasting = outcome
            results[printable(entry.name)] = value
            if lasting:
                keep[entry.name] = (key, value)
        self._state = (location, keep)
        return _result(results, hidden)

    def forget(self) -> None:
        """Drop the cache, e.g. after a file was replaced within one mtime tick."""
        self._state = (None, {})


def _result(results: dict[str, BackupInfo | str], hidden: list[str]) -> ScanResult:
    """Sort the backups, newest first; an id found in several files is no backup.

    Which of two archives with one id would Home Assistant download and
    restore? Neither: a planted copy must not stand in for the real one.
    """
    by_id: dict[str, list[str]] = {}
    for value in results.values():
        if isinstance(value, BackupInfo):
            by_id.setdefault(value.backup_id, []).append(value.file)
    invalid = {name: value for name, value in results.items() if isinstance(value, str)}
    backups = []
    for value in results.values():
        if not isinstance(value, BackupInfo):
            continue
        files = by_id[value.backup_id]
        if len(files) == 1:
            backups.append(value)
            continue
        others = ", ".join(sorted(file for file in files if file != value.file))
        invalid[value.file] = (
            f"the backup id {value.backup_id} is also in {others}: remove the"
            " copy that does not belong here"
        )
    backups.sort(key=lambda info: (parse_date(info.date), info.file), reverse=True)
    return ScanResult(
        backups=backups, invalid=dict(sorted(invalid.items())), hidden=hidden
    )


def _read(path: Path) -> tuple[BackupInfo | str, bool] | None:
    """Return the archive's info or why it is not a backup, and if that lasts.

    Only what the file itself says is remembered: an I/O error or a file that
    vanished (None) is asked again at the next scan.
    """
    try:
        return read_backup_info(path), True
    except BackupNotFoundError:
        return None
    except (InvalidBackupError, CorruptBackupError) as err:
        return str(err), True
    except BackupOffloadError as err:
        return str(err), False


def _list_entries(location: Path) -> tuple[list[os.DirEntry[str]], list[str]]:
    """Return the directory entries of the candidate archives, and hidden names."""
    candidates: list[os.DirEntry[str]] = []
    hidden: list[str] = []
    try:
        with os.scandir(location) as iterator:
            for entry in iterator:
                if is_backup_file_name(entry.name):
                    candidates.append(entry)
                elif entry.name.startswith("."):
                    hidden.append(entry.name)
    except NotADirectoryError as err:
        raise LocationUnavailableError(
            f"{location}: not a directory",
            location_reason="not_a_directory",
            path=str(location),
        ) from err
    except OSError as err:
        raise os_error(err, str(location), writing=False, where=Place.LOCATION) from err
    return candidates, hidden


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
