"""One executor job per logical operation on a location (synchronous core).

Each function probes the location and then acts, in the same thread, as the
Supervisor does: the check cannot go stale between two jobs, and a slow share
costs one thread hop instead of many. The heavy part of an operation (writing
or reading a whole archive) runs in a worker process that the job starts and
waits for (``worker.py``), so that its per-file work does not compete with
Home Assistant's event loop for the GIL. Each returns what it found (including a
fresh snapshot of the location) instead of touching the integration's state;
the async side applies the result on the event loop. Nothing here imports
Home Assistant.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
import secrets

from . import worker
from .archive.create import CreateResult, create_backup, temporary_names
from .archive.read import VerifyResult, verify_backup
from .errors import BackupOffloadError
from .listing import BackupScanner, ScanResult, find_backup
from .location import PROBE_PREFIX, LocationStatus, delete_backup, probe
from .metadata import TEMP_PREFIX, BackupInfo
from .restore.full import Staged, stage
from .restore.partial import Extracted, extract_selected
from .restore.preview import Preview, preview
from .retention import Decision, Policy, decide
from .temporary import LiveFiles, cleanup_temporary


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationState:
    """What is known of a location: its probe and listing, or why it is down.

    Every job returns one, and it is what the coordinator keeps and the
    entities show.
    """

    status: LocationStatus | None = None
    """None while the location is unavailable."""
    backups: list[BackupInfo] = field(default_factory=list)
    """Every valid Home Assistant backup in the location, newest first."""
    invalid: dict[str, str] = field(default_factory=dict)
    """File name -> why it is not a valid backup."""
    error: BackupOffloadError | None = None
    """Why the location is unavailable."""

    @property
    def available(self) -> bool:
        """Return True when the last probe passed."""
        return self.status is not None

    @property
    def used_bytes(self) -> int:
        """Bytes taken by all backups."""
        return sum(backup.size for backup in self.backups)


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """Where a job works: the location and how it must be probed."""

    path: Path
    require_mount: bool
    scanner: BackupScanner
    config_dir: Path
    """Home Assistant's config directory: a location that requires a mount
    but sits on the config directory's file system is not mounted (the empty
    mount point of a share bind-mounted into a container)."""
    live: LiveFiles = field(default_factory=LiveFiles)
    """The temporary files this process writes there: the cleanup skips them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """Retention settings of a location, and whose backups it may delete."""

    keep_count: int
    keep_days: int
    instance_id: str
    now: datetime
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    time_zone: tzinfo = UTC
    """Where a day, week, month and year begin: Home Assistant's time zone."""

    @property
    def policy(self) -> Policy:
        """Return the rules of these settings."""
        return Policy(
            count=self.keep_count,
            days=self.keep_days,
            daily=self.keep_daily,
            weekly=self.keep_weekly,
            monthly=self.keep_monthly,
            yearly=self.keep_yearly,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateOutcome:
    """What `create` did."""

    result: CreateResult
    retention: Decision[BackupInfo]
    """What the retention after it deleted and kept."""
    snapshot: LocationState

    @property
    def purged(self) -> list[BackupInfo]:
        """The backups retention deleted, oldest first."""
        return self.retention.deleted


def listed(location: Location, status: LocationStatus) -> LocationState:
    """Return the state of a location that passed ``status``'s probe."""
    return state_of(status, location.scanner.scan(location.path))


def state_of(status: LocationStatus, scan: ScanResult) -> LocationState:
    """Return the state of a probed and listed location."""
    return LocationState(status=status, backups=scan.backups, invalid=scan.invalid)


def probe_location(
    location: Location, *, for_write: bool = False, needed_bytes: int = 0
) -> LocationStatus:
    """Probe a location as its settings say (mount required, config dir)."""
    return probe(
        location.path,
        require_mount=location.require_mount,
        for_write=for_write,
        needed_bytes=needed_bytes,
        config_dir=location.config_dir,
    )


def refresh(location: Location) -> LocationState:
    """Probe the location and list its backups."""
    return listed(location, probe_location(location))


def prepare(
    location: Location, *, stale_after: float
) -> tuple[list[str], LocationState]:
    """Probe, list, and remove the stale temporary files a crash left behind.

    The listing's hidden names are the cleanup's candidates: one listing of
    the directory serves both. A location that is down is not touched: the
    probe raises first; nor is one mounted read-only, which is listed.
    """
    status = probe_location(location)
    scan = location.scanner.scan(location.path)
    removed: list[str] = []
    if status.writable is not False:
        removed = cleanup_temporary(
            location.path,
            prefix=(TEMP_PREFIX, PROBE_PREFIX),
            older_than=stale_after,
            names=scan.hidden,
            keep=location.live,
        )
    return removed, state_of(status, scan)


def _purge(
    location: Location,
    retention: Retention,
    keep: Collection[str] = (),
    *,
    dry_run: bool = False,
) -> Decision[BackupInfo]:
    """Delete what retention selects among this instance's backups.

    ``keep``: ids never deleted (the backup the same operation created).
    ``dry_run``: decide only, delete nothing.
    """
    scan = location.scanner.scan(location.path)
    decision = decide(
        scan.backups,
        retention.policy,
        now=retention.now,
        time_zone=retention.time_zone,
        own=lambda backup: backup.is_own(retention.instance_id),
        keep=keep,
    )
    if not dry_run:
        for backup in decision.deleted:
            delete_backup(location.path, backup.file)
    return decision


def create(
    location: Location,
    retention: Retention,
    checked: Callable[[], None],
    *,
    name: str,
    password: str | None,
    include_database: bool,
    excludes: Sequence[str],
    compress: bool,
    homeassistant_version: str,
    progress: Callable[[float], None] | None = None,
    database_lock: Callable[[], AbstractContextManager[None]] | None = None,
) -> CreateOutcome:
    """Probe for writing, create a backup, apply retention, list again.

    The newest backup's size is the space estimate: it is free to get and
    close to the next one's, so a location that cannot hold another backup
    is refused before a byte is written. ``checked`` is called once the probe
    passed, so the caller can tell a hung share from a long backup.
    """
    status = probe_location(location, for_write=True)
    previous = location.scanner.scan(location.path).backups
    if previous:
        status = probe_location(location, needed_bytes=previous[0].size)
    checked()
    # Named here, so that the stale-file cleanup knows what this process writes.
    backup_id = secrets.token_hex(4)
    with location.live.holding(*temporary_names(backup_id)):
        result = worker.run(
            create_backup,
            location.config_dir,
            location.path,
            name=name,
            password=password,
            include_database=include_database,
            excludes=excludes,
            compress=compress,
            homeassistant_version=homeassistant_version,
            instance_id=retention.instance_id,
            progress=progress,
            database_lock=database_lock,
            backup_id=backup_id,
        )
    decision = _purge(location, retention, keep={result.info.backup_id})
    return CreateOutcome(
        result=result, retention=decision, snapshot=listed(location, status)
    )


def delete(
    location: Location, backup_id: str, checked: Callable[[], None]
) -> tuple[BackupInfo, LocationState]:
    """Probe for writing, delete one backup and its sidecar, list again."""
    status = probe_location(location, for_write=True)
    checked()
    backup = find_backup(location.path, backup_id, location.scanner)
    delete_backup(location.path, backup.file)
    return backup, listed(location, status)


def _found(
    location: Location, backup_id: str, checked: Callable[[], None]
) -> tuple[BackupInfo, Path]:
    """Probe the location (then ``checked()``) and find one backup in it."""
    probe_location(location)
    checked()
    backup = find_backup(location.path, backup_id, location.scanner)
    return backup, location.path / backup.file


def verify(
    location: Location,
    backup_id: str,
    password: str | None,
    checked: Callable[[], None],
) -> tuple[BackupInfo, VerifyResult]:
    """Probe, then read the whole backup: decrypt, decompress, checksum."""
    backup, path = _found(location, backup_id, checked)
    return backup, worker.run(verify_backup, path, password)


def purge(
    location: Location,
    retention: Retention,
    checked: Callable[[], None],
    *,
    dry_run: bool = False,
) -> tuple[Decision[BackupInfo], LocationState]:
    """Probe, apply retention to this instance's backups, list again.

    A dry run only decides: it needs no write access and deletes nothing.
    """
    status = probe_location(location, for_write=not dry_run)
    checked()
    decision = _purge(location, retention, dry_run=dry_run)
    return decision, listed(location, status)


def restore_stage(
    location: Location,
    backup_id: str,
    password: str | None,
    checked: Callable[[], None],
    *,
    is_newer: Callable[[str], bool],
    temp_dir: Path,
    restore_database: bool,
) -> Staged:
    """Probe, find the backup, validate it and stage a verified local copy.

    The location is only read: one pass copies the archive to this machine
    and everything else reads the local copy. ``temp_dir`` is Home
    Assistant's temporary directory (where its restore unpacks the backup).
    """
    backup, path = _found(location, backup_id, checked)
    return worker.run(
        stage,
        path,
        backup,
        password,
        config_dir=location.config_dir,
        is_newer=is_newer,
        temp_dir=temp_dir,
        restore_database=restore_database,
    )


def restore_preview(
    location: Location,
    backup_id: str,
    password: str | None,
    checked: Callable[[], None],
    *,
    patterns: Sequence[str] | None,
    restore_database: bool,
    is_newer: Callable[[str], bool],
    temp_dir: Path,
) -> tuple[BackupInfo, Preview]:
    """Probe, find the backup, and report what restoring it would change."""
    backup, path = _found(location, backup_id, checked)
    return backup, worker.run(
        preview,
        path,
        backup,
        password,
        config_dir=location.config_dir,
        patterns=patterns,
        restore_database=restore_database,
        is_newer=is_newer,
        temp_dir=temp_dir,
    )


def restore_extract(
    location: Location,
    backup_id: str,
    password: str | None,
    checked: Callable[[], None],
    *,
    patterns: Sequence[str],
) -> Extracted:
    """Probe, find the backup, and extract the chosen files next to the config."""
    backup, path = _found(location, backup_id, checked)
    return worker.run(
        extract_selected,
        path,
        backup,
        password,
        config_dir=location.config_dir,
        patterns=patterns,
    )


def keep_all(retention: Retention) -> Retention:
    """Return ``retention`` that deletes nothing (for a safety backup).

    A safety backup must not make retention delete the backup that is about
    to be restored; retention runs again with the next backup.
    """
    return replace(
        retention,
        keep_count=0,
        keep_days=0,
        keep_daily=0,
        keep_weekly=0,
        keep_monthly=0,
        keep_yearly=0,
    )
