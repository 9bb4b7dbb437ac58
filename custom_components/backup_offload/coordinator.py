"""Periodic refresh of a location: is it usable, and which backups it holds.

A location that is down is data, not an error: the coordinator keeps
running and reports it, so the `connected` sensor can say "NAS disconnected"
and a repair issue can explain it, instead of Home Assistant retrying the
setup in a loop.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator
from homeassistant.util import dt as dt_util

from .const import (
    CONF_PATH,
    CONF_REQUIRE_MOUNT,
    DOMAIN,
    LOGGER,
    SCAN_INTERVAL,
    STALE_TEMP_AGE,
)
from .engine import jobs
from .engine.errors import BackupOffloadError, LocationUnavailableError
from .engine.jobs import LocationState
from .engine.metadata import BackupInfo
from .engine.retention import in_future

if TYPE_CHECKING:
    from .manager import LocationManager
    from .models import BackupOffloadConfigEntry


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

    async def _async_update_data(self) -> LocationState:
        if self.runner.running and self.data is not None:
            # An operation holds the location; it refreshes when it is done.
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
        """Apply an operation's finding that the location is down."""
        self.async_set_updated_data(self._unavailable(err))

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
            self._raise_issue(
                LocationUnavailableError(
                    f"{self.location.path}: mounted read-only",
                    "not_writable",
                    path=str(self.location.path),
                )
            )
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

    def _unavailable(self, err: BackupOffloadError) -> LocationState:
        if self.data is None or self.data.available:
            # Once per outage, not at every refresh.
            LOGGER.warning("%s is unavailable: %s", self.config_entry.title, err)
        self._raise_issue(err)
        return LocationState(error=err)

    def _raise_issue(self, err: BackupOffloadError) -> None:
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            self._issue_id,
            is_fixable=False,
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
        return f"location_unavailable_{self.config_entry.entry_id}"
