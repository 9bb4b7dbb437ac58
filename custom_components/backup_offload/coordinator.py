"""Periodic refresh of a location: is it usable, and which backups it holds.

A location that is down is data, not an error: the coordinator keeps
running and reports it, so the `connected` sensor can say "NAS disconnected"
and a repair issue can explain it, instead of Home Assistant retrying the
setup in a loop.

Between two listings a cheap probe (mount check and statvfs, no listing)
runs on its own schedule: often enough that a share that goes away, or comes
back, shows within a minute or half a minute, without reading the share's
whole listing every few seconds. It goes through the location's runner like
every job, and it never waits for one: while an operation or a refresh holds
the location, or a job hangs on it, the probe is skipped or fails at once.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import partial
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from homeassistant.core import CALLBACK_TYPE, HassJob, HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.event import async_call_later
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator
from homeassistant.util import dt as dt_util

from .const import (
    CONF_PATH,
    CONF_REQUIRE_MOUNT,
    DOMAIN,
    LOGGER,
    PROBE_INTERVAL,
    PROBE_RETRY_FIRST,
    PROBE_RETRY_MAX,
    SCAN_INTERVAL,
    STALE_TEMP_AGE,
)
from .engine import jobs
from .engine.errors import BackupOffloadError, LocationUnavailableError
from .engine.jobs import LocationState
from .engine.location import LocationStatus
from .engine.metadata import BackupInfo
from .engine.retention import in_future

if TYPE_CHECKING:
    from .manager import LocationManager
    from .models import BackupOffloadConfigEntry

ISSUE_PREFIX = "location_unavailable_"
"""The repair issue of a location that is down: this and its entry's id."""


class BackupOffloadCoordinator(DataUpdateCoordinator[LocationState]):
    """Probes and lists one location periodically, in one executor job."""

    config_entry: BackupOffloadConfigEntry

    def __init__(
        self,
        hass: HomeAssistant,
        entry: BackupOffloadConfigEntry,
        manager: LocationManager,
    ) -> None:
        """Set up the coordinator of one location (of one load of its entry)."""
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{DOMAIN} {entry.title}",
            update_interval=SCAN_INTERVAL,
            always_update=False,
        )
        self.manager = manager
        self.runner = manager.runner
        self._future_warned: set[str] = set()
        self.location = jobs.Location(
            path=Path(entry.data[CONF_PATH]),
            require_mount=entry.data[CONF_REQUIRE_MOUNT],
            scanner=manager.scanner,
            config_dir=Path(hass.config.config_dir),
            live=manager.live,
        )
        # A reload starts from what the previous load knew: an operation that
        # still holds the location refreshes it when it is done.
        if (previous := manager.last_data) is not None:
            self.data = previous
        self._probing = False
        self._probe_holds = False
        self._probe_timer: CALLBACK_TYPE | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._retry_delay = PROBE_RETRY_FIRST
        self._probe_job = HassJob(
            self._async_probe_due, f"{self.name} probe", cancel_on_shutdown=True
        )

    @property
    def usable(self) -> bool:
        """Return True when the last probe passed and backups can be written."""
        # None before the first refresh, whatever the base class's type says.
        data: LocationState | None = self.data
        return data is not None and _usable(data.status)

    def problem(self) -> BackupOffloadError | None:
        """Return what keeps the location from being usable, if anything."""
        data = self.data
        if data.error is not None:
            return data.error
        if data.status is not None and data.status.writable is False:
            return self._read_only_error()
        return None

    def _read_only_error(self) -> LocationUnavailableError:
        path = str(self.location.path)
        return LocationUnavailableError(
            f"{path}: mounted read-only", "not_writable", path=path
        )

    async def _async_setup(self) -> None:
        """Start the probe's schedule (once per load, before the first refresh).

        A reload of a location that is down probes soon, as the first load
        does once its first refresh finds it down.
        """
        self._probing = True
        previous: LocationState | None = self.data
        if previous is None:
            self._schedule_probe(PROBE_INTERVAL)
        else:
            self._schedule_next_probe()

    async def async_shutdown(self) -> None:
        """Stop the refreshes and the probe (unload, or Home Assistant stops)."""
        self._probing = False
        self._cancel_probe_timer()
        await super().async_shutdown()

    async def async_check_now(self) -> None:
        """Probe and list the location now (the "Check now" button, the repair).

        One job, as a refresh: a location that hangs holds no second thread.
        """
        await self.async_refresh()
        self._retry_delay = PROBE_RETRY_FIRST
        if not self._probe_running:
            self._schedule_next_probe()

    async def async_probe(self) -> None:
        """Probe the location (no listing) and apply what changed.

        Back after an outage: a full refresh, so that its backups show. Gone:
        the state says so at once. Skipped while an operation or a refresh
        holds the location: they report what they find, and the probe must
        not queue behind them (or behind a share that hangs).
        """
        if self.manager.busy or self.runner.running:
            return
        self._probe_holds = True
        try:
            status = await self.runner.run(jobs.probe_location, self.location)
        except BackupOffloadError as err:
            self._apply_probe_failure(err)
            return
        finally:
            self._probe_holds = False
        if not self.data.available or _usable(status) != self.usable:
            await self.async_refresh()

    @callback
    def _apply_probe_failure(self, err: BackupOffloadError) -> None:
        """Show a location that went down, or is down for another reason now."""
        if (
            isinstance(err, LocationUnavailableError)
            and err.location_reason == "not_responding"
            and not self.runner.stuck
        ):
            # The probe did not get the location in time: something took it
            # after the check above. Busy, not down.
            return
        error = self.data.error
        if error is None or error.reason_code != err.reason_code:
            self.async_set_updated_data(self._unavailable(err))

    @callback
    def _schedule_probe(self, delay: float) -> None:
        self._cancel_probe_timer()
        if self._probing:
            self._probe_timer = async_call_later(self.hass, delay, self._probe_job)

    @callback
    def _cancel_probe_timer(self) -> None:
        if self._probe_timer is not None:
            self._probe_timer()
            self._probe_timer = None

    @callback
    def _schedule_next_probe(self) -> None:
        """Probe again: every PROBE_INTERVAL while usable, sooner while not."""
        if self.usable:
            self._retry_delay = PROBE_RETRY_FIRST
            self._schedule_probe(PROBE_INTERVAL)
            return
        delay = self._retry_delay
        self._retry_delay = min(delay * 2, PROBE_RETRY_MAX)
        self._schedule_probe(delay)

    @callback
    def _probe_sooner(self) -> None:
        """Start the back-off from its first step: the location just went down."""
        self._retry_delay = PROBE_RETRY_FIRST
        if not self._probe_running:
            # A probe that runs now schedules the next one when it ends.
            self._schedule_next_probe()

    @property
    def _probe_running(self) -> bool:
        return self._probe_task is not None and not self._probe_task.done()

    @callback
    def _async_probe_due(self, _now: datetime) -> None:
        self._probe_timer = None
        self._probe_task = self.config_entry.async_create_background_task(
            self.hass, self._async_scheduled_probe(), f"{self.name} probe"
        )

    async def _async_scheduled_probe(self) -> None:
        try:
            await self.async_probe()
        finally:
            self._schedule_next_probe()

    async def _async_update_data(self) -> LocationState:
        if self.runner.running and not self._probe_holds and self.data is not None:
            # An operation holds the location; it refreshes when it is done.
            # (A probe is over in a moment: the listing waits for it.)
            return self.data
        try:
            if self.manager.busy:
                # An operation holds the location between two of its jobs (a
                # backup that Home Assistant streams in): list only.
                snapshot = await self.runner.run(jobs.refresh, self.location)
            else:
                snapshot = await self._prepare()
        except BackupOffloadError as err:
            return self._unavailable(err)
        return self._available(snapshot)

    async def _prepare(self) -> LocationState:
        """List the idle location, and remove the stale temporary files there.

        At every idle refresh, not only the first: a leftover too young to
        go at setup goes a few minutes later, not at the next restart.
        """
        removed, snapshot = await self.runner.run(
            partial(jobs.prepare, stale_after=STALE_TEMP_AGE), self.location
        )
        if removed:
            LOGGER.info(
                "%s: removed stale temporary files: %s",
                self.config_entry.title,
                ", ".join(removed),
            )
        return snapshot

    @callback
    def async_update_listeners(self) -> None:
        """Update every entity, even when one of them fails.

        One entity that cannot write its state must not keep the others, the
        state sensor above all, at what they showed before (a sensor stuck
        at "creating" after the backup ended).
        """
        for update_callback, _ in list(self._listeners.values()):
            try:
                update_callback()
            except Exception:  # noqa: BLE001 - logged; the others go on
                LOGGER.exception(
                    "%s: updating an entity failed", self.config_entry.title
                )

    @callback
    def async_set_snapshot(self, snapshot: LocationState) -> None:
        """Apply the listing an operation returned."""
        self.async_set_updated_data(self._available(snapshot))

    @callback
    def async_set_unavailable(self, err: BackupOffloadError) -> None:
        """Apply an operation's finding that the location is down.

        The operation reports its failure (a warning, the action's error):
        the outage itself is logged as information, not as a second warning.
        """
        self.async_set_updated_data(self._unavailable(err, reported=True))

    def _available(self, snapshot: LocationState) -> LocationState:
        if self.data is not None and not self.data.available:
            LOGGER.info("%s is available again", self.config_entry.title)
        self._warn_future_dates(snapshot.backups)
        if snapshot.status is not None and snapshot.status.writable is False:
            # Mounted read-only: its backups can be listed and read, but none
            # can be written. The repair issue stays (a refresh must not clear
            # the one a refused backup raised while nothing has changed).
            if not self._known_read_only():
                LOGGER.warning(
                    "%s is mounted read-only: no backup can be written there",
                    self.config_entry.title,
                )
                self._probe_sooner()
            self._raise_issue(self._read_only_error())
        else:
            ir.async_delete_issue(self.hass, DOMAIN, self._issue_id)
        return snapshot

    def _warn_future_dates(self, backups: list[BackupInfo]) -> None:
        """Log each backup dated in the future once: retention ranks it as now."""
        now = dt_util.utcnow()
        for backup in backups:
            if backup.backup_id in self._future_warned or not in_future(backup, now):
                continue
            self._future_warned.add(backup.backup_id)
            LOGGER.warning(
                "%s: backup %s (%s) is dated %s, in the future: the clock of the"
                " machine that made it was wrong, or the file was planted;"
                " retention counts it as made now",
                self.config_entry.title,
                backup.name,
                backup.file,
                backup.date,
            )

    def _known_read_only(self) -> bool:
        """Return True when the last state already said "read-only"."""
        # None before the first refresh, whatever the base class's type says.
        data: LocationState | None = self.data
        if data is None:
            return False
        if data.status is not None:
            return data.status.writable is False
        return (
            isinstance(data.error, LocationUnavailableError)
            and data.error.location_reason == "not_writable"
        )

    def _unavailable(
        self, err: BackupOffloadError, *, reported: bool = False
    ) -> LocationState:
        # None before the first refresh, whatever the base class's type says.
        data: LocationState | None = self.data
        if data is None or data.available:
            # Once per outage, not at every refresh.
            LOGGER.log(
                logging.INFO if reported else logging.WARNING,
                "%s is unavailable: %s",
                self.config_entry.title,
                err,
            )
            self._probe_sooner()
        self._raise_issue(err)
        return LocationState(error=err)

    def _raise_issue(self, err: BackupOffloadError) -> None:
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            self._issue_id,
            is_fixable=True,
            severity=ir.IssueSeverity.ERROR,
            translation_key="location_unavailable",
            translation_placeholders={
                "location": self.config_entry.title,
                "path": str(self.location.path),
                "reason": err.reason_code,
                "error": str(err),
                "detail": err.placeholders.get("detail", str(err)),
            },
        )

    @property
    def _issue_id(self) -> str:
        return f"{ISSUE_PREFIX}{self.config_entry.entry_id}"


def _usable(status: LocationStatus | None) -> bool:
    """Return True for a location that passed its probe and is not read-only."""
    return status is not None and status.writable is not False
