"""Backup Offload: Home Assistant backups on NAS shares and second disks."""

from __future__ import annotations

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import config_validation as cv, instance_id
from homeassistant.helpers.typing import ConfigType

from .const import DOMAIN, PROBE_TIMEOUT
from .coordinator import (
    BackupOffloadConfigEntry,
    BackupOffloadCoordinator,
    BackupOffloadData,
)
from .manager import LocationManager
from .runner import LocationRunner
from .services import async_setup_services

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)

PLATFORMS = [Platform.BINARY_SENSOR, Platform.BUTTON, Platform.SENSOR]


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the actions once for all locations."""
    async_setup_services(hass)
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
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    # Options are read when an operation starts: changing them needs no
    # reload, which would cut a running backup short.
    return True


async def async_unload_entry(
    hass: HomeAssistant, entry: BackupOffloadConfigEntry
) -> bool:
    """Unload one location."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
