"""Config flow of Backup Offload."""

from __future__ import annotations

from homeassistant.config_entries import ConfigFlow

from .const import DOMAIN


class BackupOffloadConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a location."""

    VERSION = 1
