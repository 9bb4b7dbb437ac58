"""The overdue alarm: a location whose newest backup of ours is too old.

The alarm counts from the newest backup that this Home Assistant made in the
location (by the actions, the button or Home Assistant's backup page: every
one carries this instance's id). A timer is set at exactly the deadline, so
the alarm goes off then, not at the next refresh; a new backup moves it.

What the alarm counts from is kept in a small store, not only in memory: a
location that is down lists no backups, and after a restart while the NAS is
down the alarm must still know when the last backup was made, or it would
stay quiet for exactly as long as the outage that it should report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.event import async_track_point_in_utc_time
from homeassistant.helpers.singleton import singleton
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .const import (
    CONF_OVERDUE_HOURS,
    DEFAULT_OVERDUE_HOURS,
    DOMAIN,
    EVENT_BACKUP_OVERDUE,
    LOGGER,
)
from .engine.retention import in_future
from .models import DATA_OVERDUE_STORE

if TYPE_CHECKING:
    from .coordinator import BackupOffloadCoordinator
    from .engine.jobs import LocationState
    from .manager import LocationManager
    from .models import BackupOffloadConfigEntry

STORAGE_KEY = f"{DOMAIN}.overdue"
STORAGE_VERSION = 1
# Written a little later than changed: one write for a burst of refreshes.
SAVE_DELAY = 10.0

ISSUE_OVERDUE = "backup_overdue"
ISSUE_OVERDUE_NEVER = "backup_overdue_never"


@dataclass(slots=True)
class Reference:
    """What the alarm counts from, and whether it fired for it."""

    time: datetime
    backup: bool
    """True: the newest backup of ours; False: when the watch began (none yet)."""
    alerted: bool = False
    """The event of this episode has fired (once per episode, restarts too)."""

    def as_dict(self) -> dict[str, Any]:
        """Return the stored form."""
        return {
            "time": self.time.isoformat(),
            "backup": self.backup,
            "alerted": self.alerted,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference | None:
        """Return the stored reference, or None if it cannot be read."""
        time = dt_util.parse_datetime(str(data.get("time")))
        if time is None or time.tzinfo is None:
            return None
        return cls(time, bool(data.get("backup")), bool(data.get("alerted")))


class OverdueStore:
    """Each location's reference, by entry id, kept across restarts."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Set up the store (`async_get_store` loads it)."""
        self._store: Store[dict[str, dict[str, Any]]] = Store(
            hass, STORAGE_VERSION, STORAGE_KEY, private=True
        )
        self._data: dict[str, dict[str, Any]] = {}

    async def async_load(self) -> None:
        """Read what was stored (in the executor, as Store does)."""
        self._data = await self._store.async_load() or {}

    def get(self, entry_id: str) -> Reference | None:
        """Return a location's stored reference."""
        data = self._data.get(entry_id)
        return Reference.from_dict(data) if isinstance(data, dict) else None

    @callback
    def async_set(self, entry_id: str, reference: Reference) -> None:
        """Remember a location's reference."""
        if self._data.get(entry_id) == (stored := reference.as_dict()):
            return
        self._data[entry_id] = stored
        self._store.async_delay_save(lambda: self._data, SAVE_DELAY)

    @callback
    def async_remove(self, entry_id: str) -> None:
        """Forget a location that was removed."""
        if self._data.pop(entry_id, None) is not None:
            self._store.async_delay_save(lambda: self._data, SAVE_DELAY)


@singleton(DATA_OVERDUE_STORE, async_=True)
async def async_get_store(hass: HomeAssistant) -> OverdueStore:
    """Return the loaded store, shared by every location."""
    store = OverdueStore(hass)
    await store.async_load()
    return store


def newest_own_backup(data: LocationState, instance_id: str) -> datetime | None:
    """Return the date of the newest backup this instance made, if listed.

    A backup dated in the future does not count: its date would hold the
    alarm off until then (a board that booted without a clock, or a file
    planted on the share; the instance id is in every backup.json).
    """
    now = dt_util.utcnow()
    dates = (
        dt_util.parse_datetime(backup.date)
        for backup in data.backups
        if backup.instance_id == instance_id and not in_future(backup, now)
    )
    return max((date for date in dates if date is not None), default=None)


def _format(time: datetime) -> str:
    """Return a date as a repair issue shows it (local time)."""
    return dt_util.as_local(time).strftime("%Y-%m-%d %H:%M")


class OverdueWatcher:
    """Watches one location: on when its newest backup is older than allowed."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: BackupOffloadConfigEntry,
        coordinator: BackupOffloadCoordinator,
        manager: LocationManager,
        store: OverdueStore,
    ) -> None:
        """Set up the watcher of one load of a location (`async_start` starts it)."""
        self.hass = hass
        self.entry = entry
        self.coordinator = coordinator
        self.manager = manager
        self.store = store
        self.reference = store.get(entry.entry_id)
        self.overdue = False
        self._cancel_timer: CALLBACK_TYPE | None = None

    @property
    def hours(self) -> int:
        """Return the allowed age in hours (0: the alarm is off)."""
        return int(self.entry.options.get(CONF_OVERDUE_HOURS, DEFAULT_OVERDUE_HOURS))

    @property
    def deadline(self) -> datetime | None:
        """Return when the alarm goes off (None while it is off)."""
        if not self.hours or self.reference is None:
            return None
        return self.reference.time + timedelta(hours=self.hours)

    @property
    def last_backup(self) -> datetime | None:
        """Return the date of the newest backup of ours the alarm knows of."""
        reference = self.reference
        return reference.time if reference is not None and reference.backup else None

    @callback
    def async_start(self) -> None:
        """Check now, then on every refresh and option change, and at the deadline.

        Called before the entities are added: the coordinator calls its
        listeners in order, so the entities read the alarm after it was
        checked.
        """
        self.entry.async_on_unload(
            self.coordinator.async_add_listener(self._async_check)
        )
        self.entry.async_on_unload(
            self.entry.add_update_listener(self._async_options_updated)
        )
        self.entry.async_on_unload(self._async_stop)
        self._async_check()

    async def _async_options_updated(
        self, hass: HomeAssistant, entry: BackupOffloadConfigEntry
    ) -> None:
        """Apply a new allowed age at once (options change without a reload)."""
        self._async_update()

    @callback
    def _async_stop(self) -> None:
        """Stop watching: no timer, no repair issue of an alarm nobody checks."""
        self._cancel()
        ir.async_delete_issue(self.hass, DOMAIN, self._issue_id)

    @callback
    def _async_check(self) -> None:
        """Follow the listing: a new backup moves the deadline."""
        self._follow(self.coordinator.data)
        self._evaluate()

    @callback
    def _async_update(self, _now: datetime | None = None) -> None:
        """Check again and show it: the deadline passed or the option changed."""
        # The watcher is the coordinator's first listener: it checks, then
        # the entities show the result.
        self.coordinator.async_update_listeners()

    def _follow(self, data: LocationState) -> None:
        """Take the newest backup of ours from a listing.

        A location that is down lists nothing: the alarm goes on counting
        from the last backup it knew of. One that lists none of ours keeps
        the reference too (the backups were deleted: counting from the last
        one known still says how long there has been none). With none known
        at all, it counts from now: a backup that never comes is overdue too.
        """
        newest = newest_own_backup(data, self.manager.instance_id)
        if newest is not None and (
            self.reference is None
            or not self.reference.backup
            or newest != self.reference.time
        ):
            self._set_reference(Reference(newest, backup=True))
        elif self.reference is None:
            self._set_reference(Reference(dt_util.utcnow(), backup=False))

    def _set_reference(self, reference: Reference) -> None:
        self.reference = reference
        self.store.async_set(self.entry.entry_id, reference)

    def _evaluate(self) -> None:
        """Set the alarm and the timer from the reference and the option."""
        self._cancel()
        reference, deadline = self.reference, self.deadline
        if reference is None or deadline is None:
            self._clear()
            return
        if dt_util.utcnow() < deadline:
            self._clear()
            self._cancel_timer = async_track_point_in_utc_time(
                self.hass, self._async_update, deadline
            )
            return
        self._raise(reference, deadline)

    def _cancel(self) -> None:
        if self._cancel_timer is not None:
            self._cancel_timer()
            self._cancel_timer = None

    def _raise(self, reference: Reference, deadline: datetime) -> None:
        """Turn the alarm on: the repair issue, and the event once per episode."""
        self.overdue = True
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            self._issue_id,
            is_fixable=False,
            is_persistent=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_OVERDUE if reference.backup else ISSUE_OVERDUE_NEVER,
            translation_placeholders={
                "location": self.entry.title,
                "since": _format(reference.time),
                "hours": str(self.hours),
            },
        )
        if reference.alerted:
            return
        LOGGER.warning(
            "%s: no backup since %s, overdue since %s",
            self.entry.title,
            reference.time.isoformat(),
            deadline.isoformat(),
        )
        self._set_reference(Reference(reference.time, reference.backup, alerted=True))
        self.manager.fire(
            EVENT_BACKUP_OVERDUE,
            last_backup=self.last_backup.isoformat() if self.last_backup else None,
            overdue_since=deadline.isoformat(),
            overdue_hours=self.hours,
        )

    def _clear(self) -> None:
        """Turn the alarm off; the next time it goes on is a new episode."""
        self.overdue = False
        ir.async_delete_issue(self.hass, DOMAIN, self._issue_id)
        if self.reference is not None and self.reference.alerted:
            self._set_reference(Reference(self.reference.time, self.reference.backup))

    @property
    def _issue_id(self) -> str:
        return f"{ISSUE_OVERDUE}_{self.entry.entry_id}"


async def async_start_watcher(
    hass: HomeAssistant,
    entry: BackupOffloadConfigEntry,
    coordinator: BackupOffloadCoordinator,
    manager: LocationManager,
) -> OverdueWatcher:
    """Start the overdue alarm of a location; its unload stops it."""
    watcher = OverdueWatcher(
        hass, entry, coordinator, manager, await async_get_store(hass)
    )
    watcher.async_start()
    return watcher


async def async_forget(hass: HomeAssistant, entry_id: str) -> None:
    """Forget a removed location's reference."""
    (await async_get_store(hass)).async_remove(entry_id)
