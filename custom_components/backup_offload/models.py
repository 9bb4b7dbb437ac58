"""What a loaded location keeps, and the typed keys of ``hass.data``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from homeassistant.config_entries import ConfigEntry
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN

if TYPE_CHECKING:
    from .coordinator import BackupOffloadCoordinator
    from .engine.location import LocationStatus
    from .manager import Failure, LocationManager
    from .overdue import OverdueStore, OverdueWatcher


@dataclass(slots=True)
class BackupOffloadData:
    """What a loaded location keeps while it runs (the entry's runtime_data)."""

    coordinator: BackupOffloadCoordinator
    manager: LocationManager
    overdue: OverdueWatcher


type BackupOffloadConfigEntry = ConfigEntry[BackupOffloadData]

DATA_LOCATIONS: HassKey[dict[str, LocationManager]] = HassKey(f"{DOMAIN}_locations")
"""Location path -> its manager, which outlives reloads of its entry."""
DATA_RESTORING: HassKey[str] = HassKey(f"{DOMAIN}_restoring")
"""Title of the location whose restore runs; every location is busy meanwhile."""
DATA_RESTORE_FAILURES: HassKey[dict[str, Failure]] = HassKey(
    f"{DOMAIN}_restore_failures"
)
"""Entry id -> the failure of a restore at startup, for that location's
``last_failure`` once it is set up."""
DATA_BACKUP_AGENT_LISTENERS: HassKey[list[Callable[[], None]]] = HassKey(
    f"{DOMAIN}_backup_agent_listeners"
)
"""Home Assistant's backup system, told when a location (agent) comes or goes."""
DATA_VALIDATING: HassKey[dict[tuple[str, bool], asyncio.Future[LocationStatus]]] = (
    HassKey(f"{DOMAIN}_validating")
)
"""Checks of a path still running in the executor (config flow), by (path,
require mount): a share that hangs holds one thread, however often the user
submits it."""
DATA_OVERDUE_STORE: HassKey[OverdueStore] = HassKey(f"{DOMAIN}_overdue_store")
"""What each location's overdue alarm counts from, kept across restarts."""
