"""Backup Offload: Home Assistant backups on NAS shares and second disks."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import config_validation as cv, instance_id
from homeassistant.helpers.typing import ConfigType
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN, PROBE_TIMEOUT
from .coordinator import (
    BackupOffloadConfigEntry,
    BackupOffloadCoordinator,
    BackupOffloadData,
)
from .manager import LocationManager
from .restorer import async_report_restore_result
from .runner import LocationRunner
from .services import async_setup_services

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)

PLATFORMS = [Platform.BINARY_SENSOR, Platform.BUTTON, Platform.SENSOR]

# Listeners of Home Assistant's backup system (backup.py): each loaded
# location is a backup agent, so they are told when one comes or goes.
DATA_BACKUP_AGENT_LISTENERS: HassKey[list[Callable[[], None]]] = HassKey(
    f"{DOMAIN}_backup_agent_listeners"
)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the actions; report the result of a restore we staged."""
    async_setup_services(hass)
    await async_report_restore_result(hass)
    return True


async def async_setup_entry(
    hass: HomeAssistant, entry: BackupOffloadConfigEntry
) -> bool:
    """Set up one location.

    A location that is down still loads: its `connected` sensor and a repair
    issue say so, which is what a user wants to see on a dashboard instead of
    a setup retry loop.
    """
    runner = LocationRunner(hass, entry.title, PROBE_TIMEOUT)
    coordinator = BackupOffloadCoordinator(hass, entry, runner)
    manager = LocationManager(
        hass, entry, coordinator, runner, await instance_id.async_get(hass)
    )
    await coordinator.async_config_entry_first_refresh()
    entry.runtime_data = BackupOffloadData(coordinator=coordinator, manager=manager)
    # Fires when the entry becomes loaded and when its unload starts.
    entry.async_on_unload(
        entry.async_on_state_change(partial(_async_notify_backup_agents, hass))
    )
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    # Options are read when an operation starts: changing them needs no
    # reload, which would cut a running backup short.
    return True


async def async_unload_entry(
    hass: HomeAssistant, entry: BackupOffloadConfigEntry
) -> bool:
    """Unload one location."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


@callback
def _async_notify_backup_agents(hass: HomeAssistant) -> None:
    """Tell Home Assistant's backup system that the agents changed."""
    for listener in hass.data.get(DATA_BACKUP_AGENT_LISTENERS, []):
        listener()
