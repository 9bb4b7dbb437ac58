"""Backup Offload: Home Assistant backups on NAS shares and second disks."""

from __future__ import annotations

import asyncio
from functools import partial

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import config_validation as cv, instance_id
from homeassistant.helpers.typing import ConfigType

from .const import DOMAIN, LOGGER, PROBE_TIMEOUT, UNLOAD_TIMEOUT
from .coordinator import BackupOffloadCoordinator
from .manager import LocationManager, location_key
from .models import (
    DATA_BACKUP_AGENT_LISTENERS,
    DATA_LOCATIONS,
    BackupOffloadConfigEntry,
    BackupOffloadData,
)
from .overdue import async_forget, async_start_watcher
from .restoring import async_report_restore_result
from .runner import LocationRunner
from .services import async_setup_services

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)

PLATFORMS = [Platform.BINARY_SENSOR, Platform.BUTTON, Platform.SENSOR]


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
    manager = _async_get_manager(hass, entry, await instance_id.async_get(hass))
    coordinator = BackupOffloadCoordinator(hass, entry, manager)
    manager.attach(entry, coordinator)
    await coordinator.async_config_entry_first_refresh()
    # Before the entities: they read the alarm the watcher has just checked.
    overdue = await async_start_watcher(hass, entry, coordinator, manager)
    entry.runtime_data = BackupOffloadData(
        coordinator=coordinator, manager=manager, overdue=overdue
    )
    # Fires when the entry becomes loaded and when its unload starts.
    entry.async_on_unload(
        entry.async_on_state_change(partial(_async_notify_backup_agents, hass))
    )
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    # Options are read when an operation starts: changing them needs no
    # reload, which would cut a running backup short.
    return True


@callback
def _async_get_manager(
    hass: HomeAssistant, entry: BackupOffloadConfigEntry, instance: str
) -> LocationManager:
    """Return the location's manager: the one of an earlier load, or a new one."""
    managers = hass.data.setdefault(DATA_LOCATIONS, {})
    key = location_key(entry)
    if (manager := managers.get(key)) is None:
        runner = LocationRunner(hass, entry.title, PROBE_TIMEOUT)
        manager = managers[key] = LocationManager(hass, runner, instance)
    return manager


async def async_unload_entry(
    hass: HomeAssistant, entry: BackupOffloadConfigEntry
) -> bool:
    """Unload one location, once its running operation has ended.

    The wait is bounded: a backup may take an hour, and one on a share that
    hangs may never end. An operation that outlasts the wait goes on (it is
    not cut short: a restore half done is worse than one that finishes), and
    the location's manager, which the next load takes over, keeps it the
    only one on the location and shows it on the state sensor.
    """
    await _async_wait_for_operation(entry.runtime_data.manager)
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_remove_entry(
    hass: HomeAssistant, entry: BackupOffloadConfigEntry
) -> None:
    """Forget what the removed location's overdue alarm remembered."""
    await async_forget(hass, entry.entry_id)


async def _async_wait_for_operation(manager: LocationManager) -> None:
    """Wait up to UNLOAD_TIMEOUT for the location's running operation to end."""
    if not manager.busy:
        return
    title, state = manager.entry.title, manager.state.value
    LOGGER.info("%s: waiting for the running operation (%s) to end", title, state)
    try:
        async with asyncio.timeout(UNLOAD_TIMEOUT):
            await manager.async_wait_idle()
    except TimeoutError:
        LOGGER.warning(
            "%s: the running operation (%s) goes on in the background; the"
            " location stays busy until it ends",
            title,
            state,
        )


@callback
def _async_notify_backup_agents(hass: HomeAssistant) -> None:
    """Tell Home Assistant's backup system that the agents changed."""
    for listener in hass.data.get(DATA_BACKUP_AGENT_LISTENERS, []):
        listener()
