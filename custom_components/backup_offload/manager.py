"""Operations on one location: busy lock, state, progress, events, failures.

The manager is the async shell around the synchronous jobs (`jobs.py`): it
runs each operation as one executor job through the location's runner,
records a failure, and applies the job's result (the new listing) on the
event loop. Its operations raise the core's typed errors: their callers (the
actions, the button, the backup agent) translate them (`boundary.py`).

There is one manager per location for as long as Home Assistant runs, not
one per load of its config entry: a reload (after a reconfiguration, an
entity enabled, or from the menu) while a backup runs must not hand the
location to a second, idle manager that would start another backup on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from datetime import datetime
from functools import partial
import os
from typing import TYPE_CHECKING, Any

from homeassistant.components.recorder import backup as recorder_backup
from homeassistant.const import __version__ as HA_VERSION  # noqa: N812
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.util import dt as dt_util

from .boundary import translated_message
from .const import (
    CONF_COMPRESS,
    CONF_EXCLUDE,
    CONF_INCLUDE_DATABASE,
    CONF_KEEP_COUNT,
    CONF_KEEP_DAILY,
    CONF_KEEP_DAYS,
    CONF_KEEP_MONTHLY,
    CONF_KEEP_WEEKLY,
    CONF_KEEP_YEARLY,
    CONF_PASSWORD,
    CONF_PATH,
    DEFAULT_COMPRESS,
    DEFAULT_INCLUDE_DATABASE,
    DEFAULT_KEEP_COUNT,
    DEFAULT_KEEP_DAYS,
    DEFAULT_KEEP_GENERATIONS,
    EVENT_BACKUP_CREATED,
    EVENT_BACKUP_DELETED,
    EVENT_BACKUP_FAILED,
    LOGGER,
    OperationState,
)
from .engine import jobs
from .engine.errors import (
    BackupOffloadError,
    CorruptBackupError,
    InvalidBackupError,
    LocationBusyError,
    LocationUnavailableError,
    UnsupportedFormatError,
)
from .engine.listing import BackupScanner
from .engine.retention import in_future
from .engine.temporary import LiveFiles
from .models import DATA_LOCATIONS, DATA_RESTORE_FAILURES, DATA_RESTORING

if TYPE_CHECKING:
    from .coordinator import BackupOffloadCoordinator
    from .engine.archive.read import VerifyResult
    from .engine.jobs import LocationState
    from .engine.metadata import BackupInfo
    from .engine.retention import Decision
    from .models import BackupOffloadConfigEntry
    from .runner import LocationRunner


# Operations whose state sensor shows how far they are.
_SHOWS_PROGRESS = frozenset({OperationState.CREATING, OperationState.COPYING})
# Problems `verify` reports in its response instead of raising.
_VERIFY_PROBLEMS = (CorruptBackupError, InvalidBackupError, UnsupportedFormatError)


def backup_to_dict(backup: BackupInfo, instance_id: str) -> dict[str, Any]:
    """Return a backup's metadata as actions and diagnostics report it."""
    return {
        "backup_id": backup.backup_id,
        "name": backup.name,
        "date": backup.date,
        "size": backup.size,
        "protected": backup.protected,
        "database_included": backup.database_included,
        "homeassistant_version": backup.homeassistant_version,
        "file": backup.file,
        "own": backup.is_own(instance_id),
        # Ranked as made now by retention (see retention.decide).
        "date_in_future": in_future(backup, dt_util.utcnow()),
    }


def default_name(now: datetime) -> str:
    """Return the name of a backup made without one: local date and time.

    Backups made by a schedule must be told apart in a list, and the version
    of Home Assistant that made them is shown next to the name anyway.
    """
    return f"Backup Offload {now:%Y-%m-%d %H:%M}"


def retention_response(
    decision: Decision[BackupInfo], instance_id: str, *, dry_run: bool
) -> dict[str, Any]:
    """Return what retention deleted (or would) and why it kept each other."""
    return {
        "dry_run": dry_run,
        "deleted": [backup_to_dict(b, instance_id) for b in decision.deleted],
        "kept": [
            backup_to_dict(kept.backup, instance_id) | {"kept_by": list(kept.kept_by)}
            for kept in decision.kept
        ],
    }


def location_key(entry: BackupOffloadConfigEntry) -> str:
    """Return the key of an entry's location in `DATA_LOCATIONS`.

    The path is the real path the config flow resolved (symlinks followed,
    one entry per real path): resolving it again here could block the setup
    on a share that hangs.
    """
    path: str = entry.data[CONF_PATH]
    return os.path.normpath(path)


@dataclass(slots=True)
class Failure:
    """The last operation that failed."""

    time: datetime
    operation: OperationState
    error: str


class LocationManager:
    """Runs the operations of one location, one at a time.

    It outlives the loads of the location's entry (`DATA_LOCATIONS`): the
    busy lock, the state and progress the sensor shows, the runner (with a
    thread stuck on a share that hangs) and the temporary files being written
    stay with the location. Each setup attaches the entry's new coordinator,
    which then gets the result of an operation that an earlier load started.
    """

    def __init__(
        self, hass: HomeAssistant, runner: LocationRunner, instance_id: str
    ) -> None:
        """Set up the manager of one location; `attach` gives it its entry."""
        self.hass = hass
        self.runner = runner
        self.instance_id = instance_id
        self.scanner = BackupScanner()
        self.live = LiveFiles()
        self.state = OperationState.IDLE
        self.progress: int | None = None
        self.last_failure: Failure | None = None
        self._entry: BackupOffloadConfigEntry | None = None
        self._coordinator: BackupOffloadCoordinator | None = None
        self._lock = asyncio.Lock()
        self._progress_listeners: list[Callable[[], None]] = []

    @property
    def entry(self) -> BackupOffloadConfigEntry:
        """Return the config entry of the location (the one attached last)."""
        if self._entry is None:
            raise RuntimeError("No config entry attached")
        return self._entry

    @property
    def coordinator(self) -> BackupOffloadCoordinator:
        """Return the coordinator of the entry's current load."""
        if self._coordinator is None:
            raise RuntimeError("No config entry attached")
        return self._coordinator

    @property
    def last_data(self) -> LocationState | None:
        """Return what the previous load knew of the location, if any."""
        return None if self._coordinator is None else self._coordinator.data

    @callback
    def attach(
        self, entry: BackupOffloadConfigEntry, coordinator: BackupOffloadCoordinator
    ) -> None:
        """Serve a (re)loaded entry: its coordinator shows what runs from now on."""
        self._entry = entry
        self._coordinator = coordinator
        self.runner.name = entry.title
        # A restore that failed at startup is reported before the locations
        # are set up (restoring.async_report_restore_result).
        failures = self.hass.data.get(DATA_RESTORE_FAILURES, {})
        if (failure := failures.pop(entry.entry_id, None)) is not None:
            self.last_failure = failure

    @property
    def busy(self) -> bool:
        """Return True while an operation runs."""
        return self._lock.locked()

    async def async_wait_idle(self) -> None:
        """Wait until no operation runs (the caller bounds the wait)."""
        async with self._lock:
            pass

    def _options(self, key: str, default: Any) -> Any:
        return self.entry.options.get(key, default)

    def _retention(self) -> jobs.Retention:
        def generations(key: str) -> int:
            return int(self._options(key, DEFAULT_KEEP_GENERATIONS))

        return jobs.Retention(
            keep_count=int(self._options(CONF_KEEP_COUNT, DEFAULT_KEEP_COUNT)),
            keep_days=int(self._options(CONF_KEEP_DAYS, DEFAULT_KEEP_DAYS)),
            keep_daily=generations(CONF_KEEP_DAILY),
            keep_weekly=generations(CONF_KEEP_WEEKLY),
            keep_monthly=generations(CONF_KEEP_MONTHLY),
            keep_yearly=generations(CONF_KEEP_YEARLY),
            instance_id=self.instance_id,
            now=dt_util.utcnow(),
            time_zone=dt_util.get_default_time_zone(),
        )

    @callback
    def _set_state(self, state: OperationState, progress: int | None = None) -> None:
        self.state = state
        self.progress = progress
        self.coordinator.async_update_listeners()

    @callback
    def async_add_progress_listener(
        self, listener: Callable[[], None]
    ) -> CALLBACK_TYPE:
        """Call ``listener`` on every progress step; return how to stop."""
        self._progress_listeners.append(listener)
        return lambda: self._progress_listeners.remove(listener)

    @callback
    def set_progress(self, fraction: float) -> None:
        """Report how far the running backup (upload, copy) is, 0.0 to 1.0."""
        percent = max(0, min(100, int(fraction * 100)))
        if percent != self.progress and self.state in _SHOWS_PROGRESS:
            self.progress = percent
            # A hundred steps per backup: only what shows progress is
            # written, not every entity of the location each time.
            for listener in self._progress_listeners:
                listener()

    def fire(self, event: str, **data: Any) -> None:
        """Fire one of the integration's events for this location."""
        self.hass.bus.async_fire(
            event,
            {"config_entry_id": self.entry.entry_id, "location": self.entry.title}
            | data,
        )

    def check_idle(self, *, exclusive: bool = False) -> None:
        """Raise LocationBusyError unless this location (or every one) is idle.

        While a restore runs anywhere, every location refuses operations: a
        backup must not capture a configuration in the middle of a restore.
        """
        restoring = self.hass.data.get(DATA_RESTORING)
        if restoring:
            raise LocationBusyError(restoring, OperationState.RESTORING.value)
        if self._lock.locked():
            raise LocationBusyError(self.entry.title, self.state.value)
        if not exclusive:
            return
        # Every location, loaded or not: one whose entry was unloaded may
        # still finish a backup.
        for other in self.hass.data.get(DATA_LOCATIONS, {}).values():
            if other.busy:
                raise LocationBusyError(other.entry.title, other.state.value)

    @asynccontextmanager
    async def _operation(
        self, state: OperationState, *, exclusive: bool = False
    ) -> AsyncIterator[None]:
        """Hold the location for one operation; record its failure.

        ``exclusive`` (a restore) also holds every other location. The
        core's errors pass on to the caller, who translates them.
        """
        self.check_idle(exclusive=exclusive)
        async with self._lock:
            if exclusive:
                self.hass.data[DATA_RESTORING] = self.entry.title
            self._set_state(state, 0 if state in _SHOWS_PROGRESS else None)
            try:
                yield
            except BackupOffloadError as err:
                if not err.caller_input:
                    self._record_failure(state, err)
                raise
            finally:
                if exclusive:
                    self.hass.data.pop(DATA_RESTORING, None)
                self._set_state(OperationState.IDLE)

    def operation(
        self, state: OperationState, *, exclusive: bool = False
    ) -> AbstractAsyncContextManager[None]:
        """Hold the location for an operation run by another module.

        The restore and the backup agent's upload: as the manager's own
        operations, it raises the core's errors (LocationBusyError first).
        """
        return self._operation(state, exclusive=exclusive)

    @callback
    def _record_failure(self, state: OperationState, err: BackupOffloadError) -> None:
        LOGGER.warning("%s: %s failed: %s", self.entry.title, state.value, err)
        err.logged = True
        self.last_failure = Failure(
            time=dt_util.utcnow(), operation=state, error=str(err)
        )
        if isinstance(err, LocationUnavailableError):
            self.coordinator.async_set_unavailable(err)

    def _database_lock(self) -> Callable[[], AbstractContextManager[None]] | None:
        """Pause the recorder around the database copy, as core's backup does.

        The engine enters the lock from its executor thread only while it
        copies the database files, so the recorder is paused for seconds, not
        for the whole backup; it is resumed whatever happens in between.
        """
        if "recorder" not in self.hass.config.components:
            return None
        hass = self.hass

        @contextmanager
        def lock() -> Iterator[None]:
            asyncio.run_coroutine_threadsafe(
                recorder_backup.async_pre_backup(hass), hass.loop
            ).result()
            try:
                yield
            finally:
                asyncio.run_coroutine_threadsafe(
                    recorder_backup.async_post_backup(hass), hass.loop
                ).result()

        return lock

    async def async_create(
        self,
        *,
        name: str | None = None,
        password: str | None = None,
        include_database: bool | None = None,
        exclude: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Create a backup, apply retention, and return its metadata."""
        name = name or default_name(dt_util.now())
        try:
            async with self._operation(OperationState.CREATING):
                outcome = await self.run_create(
                    name=name,
                    password=password,
                    include_database=include_database,
                    exclude=exclude,
                )
        except BackupOffloadError as err:
            self.fire(
                EVENT_BACKUP_FAILED,
                name=name,
                error=translated_message(err, self.entry.title),
            )
            raise
        return self.apply_created(outcome)

    async def run_create(
        self,
        *,
        name: str,
        password: str | None = None,
        include_database: bool | None = None,
        exclude: Sequence[str] | None = None,
        safety: bool = False,
    ) -> jobs.CreateOutcome:
        """Run the create job; the caller holds the operation.

        Options not given are the location's. ``safety`` (the backup before a
        restore) skips retention and every user exclude: it is what a user
        gets back if the restore was a mistake. Raises the core's errors.
        """
        options = self.entry.options
        if password is None:
            password = options.get(CONF_PASSWORD) or None
        if include_database is None:
            include_database = options.get(
                CONF_INCLUDE_DATABASE, DEFAULT_INCLUDE_DATABASE
            )
        excludes = [*options.get(CONF_EXCLUDE, []), *(exclude or [])]
        retention = self._retention()
        if safety:
            excludes = []
            retention = jobs.keep_all(retention)
        loop = self.hass.loop

        def report_progress(fraction: float) -> None:
            loop.call_soon_threadsafe(self.set_progress, fraction)

        return await self.runner.run_checked(
            partial(
                jobs.create,
                name=name,
                password=password,
                include_database=bool(include_database),
                excludes=excludes,
                compress=options.get(CONF_COMPRESS, DEFAULT_COMPRESS),
                homeassistant_version=HA_VERSION,
                progress=report_progress,
                database_lock=self._database_lock(),
            ),
            self.coordinator.location,
            retention,
        )

    @callback
    def apply_created(self, outcome: jobs.CreateOutcome) -> dict[str, Any]:
        """Apply a create job's result: listing, events; return the response."""
        self.coordinator.async_set_snapshot(outcome.snapshot)
        info = outcome.result.info
        self.fire(EVENT_BACKUP_CREATED, backup_id=info.backup_id, name=info.name)
        for backup in outcome.purged:
            self.fire(
                EVENT_BACKUP_DELETED, backup_id=backup.backup_id, name=backup.name
            )
        return {
            "backup": backup_to_dict(info, self.instance_id),
            "skipped": [
                {"path": path, "reason": outcome.result.reasons.get(path, "")}
                for path in outcome.result.skipped
            ],
            "purged": [backup.backup_id for backup in outcome.purged],
            "retention": retention_response(
                outcome.retention, self.instance_id, dry_run=False
            ),
        }

    async def async_delete(self, backup_id: str) -> dict[str, Any]:
        """Delete one backup and its sidecar."""
        async with self._operation(OperationState.DELETING):
            backup, snapshot = await self.runner.run_checked(
                jobs.delete, self.coordinator.location, backup_id
            )
        self.coordinator.async_set_snapshot(snapshot)
        self.fire(EVENT_BACKUP_DELETED, backup_id=backup.backup_id, name=backup.name)
        return {"backup": backup_to_dict(backup, self.instance_id)}

    async def async_verify(
        self, backup_id: str, password: str | None = None
    ) -> dict[str, Any]:
        """Read the whole backup and report whether it is sound."""
        if password is None:
            password = self.entry.options.get(CONF_PASSWORD) or None
        async with self._operation(OperationState.VERIFYING):
            try:
                backup, result = await self.runner.run_checked(
                    jobs.verify, self.coordinator.location, backup_id, password
                )
            except _VERIFY_PROBLEMS as err:
                return {
                    "backup_id": backup_id,
                    "valid": False,
                    "problem": err.translation_key,
                    "error": str(err),
                }
        return _verify_response(backup, result, self.instance_id)

    async def async_purge(self, *, dry_run: bool = False) -> dict[str, Any]:
        """Apply the location's retention to this instance's backups now.

        ``dry_run``: delete nothing, only report what would go and why each
        other backup stays.
        """
        async with self._operation(OperationState.PURGING):
            decision, snapshot = await self.runner.run_checked(
                partial(jobs.purge, dry_run=dry_run),
                self.coordinator.location,
                self._retention(),
            )
        self.coordinator.async_set_snapshot(snapshot)
        if not dry_run:
            for backup in decision.deleted:
                self.fire(
                    EVENT_BACKUP_DELETED, backup_id=backup.backup_id, name=backup.name
                )
        return retention_response(decision, self.instance_id, dry_run=dry_run)

    async def async_list(self) -> dict[str, Any]:
        """List every backup in the location, newest first.

        The listing is read fresh, except while another job holds the
        location (a backup being written): then the last listing is returned
        with ``cached: true`` instead of waiting for it.
        """
        data = self.coordinator.data
        # An operation, not the periodic probe (milliseconds): a listing
        # that meets the probe waits for it and is fresh.
        if self.busy and not self.runner.stuck and data.available:
            return {
                "backups": [backup_to_dict(b, self.instance_id) for b in data.backups],
                "invalid": data.invalid,
                "cached": True,
            }
        try:
            snapshot = await self.runner.run(jobs.refresh, self.coordinator.location)
        except BackupOffloadError as err:
            self.coordinator.async_set_unavailable(err)
            raise
        self.coordinator.async_set_snapshot(snapshot)
        return {
            "backups": [backup_to_dict(b, self.instance_id) for b in snapshot.backups],
            "invalid": snapshot.invalid,
            "cached": False,
        }


def _verify_response(
    backup: BackupInfo, result: VerifyResult, instance_id: str
) -> dict[str, Any]:
    return {
        "backup_id": backup.backup_id,
        "valid": True,
        "backup": backup_to_dict(backup, instance_id),
        "members": result.members,
        "bytes": result.bytes,
        "checksum_verified": result.checksum,
    }
