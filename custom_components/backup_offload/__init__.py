"""Backup Offload: Home Assistant backups on NAS shares and second disks."""

from __future__ import annotations

from dataclasses import dataclass

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.typing import ConfigType

from .const import DOMAIN

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


@dataclass(slots=True)
class BackupOffloadData:
    """What a loaded location keeps while it runs."""

    path: str


type BackupOffloadConfigEntry = ConfigEntry[BackupOffloadData]


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Set up the integration (actions are registered here)."""
    return True


async def async_setup_entry(
    hass: HomeAssistant, entry: BackupOffloadConfigEntry
) -> bool:
    """Set up one location."""
    entry.runtime_data = BackupOffloadData(path=entry.data["path"])
    return True


async def async_unload_entry(
    hass: HomeAssistant, entry: BackupOffloadConfigEntry
) -> bool:
    """Unload one location."""
    return True
