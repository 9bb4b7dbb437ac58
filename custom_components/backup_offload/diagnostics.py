"""Diagnostics of a location (the password is redacted)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_PASSWORD
from .manager import backup_to_dict
from .models import BackupOffloadConfigEntry

TO_REDACT = {CONF_PASSWORD}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: BackupOffloadConfigEntry
) -> dict[str, Any]:
    """Return what support needs to see about a location."""
    coordinator = entry.runtime_data.coordinator
    manager = entry.runtime_data.manager
    data = coordinator.data
    failure = manager.last_failure
    return {
        "entry": {
            "title": entry.title,
            "data": dict(entry.data),
            "options": async_redact_data(dict(entry.options), TO_REDACT),
        },
        "state": manager.state.value,
        "progress": manager.progress,
        "runner": {"running": manager.runner.running, "stuck": manager.runner.stuck},
        "last_failure": (
            {
                "time": failure.time.isoformat(),
                "operation": failure.operation.value,
                "error": failure.error,
            }
            if failure
            else None
        ),
        "location": {
            "available": data.available,
            "status": asdict(data.status) if data.status else None,
            "error": str(data.error) if data.error else None,
            "backups": [backup_to_dict(b, manager.instance_id) for b in data.backups],
            "invalid": data.invalid,
        },
    }
