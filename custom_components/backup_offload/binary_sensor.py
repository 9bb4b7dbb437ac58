"""Connectivity of a location: mounted, reachable and usable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .entity import BackupOffloadEntity
from .models import BackupOffloadConfigEntry

PARALLEL_UPDATES = 0

CONNECTED = BinarySensorEntityDescription(
    key="connected",
    translation_key="connected",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
    entity_category=EntityCategory.DIAGNOSTIC,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: BackupOffloadConfigEntry,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Add the connectivity sensor of a location."""
    async_add_entities([BackupOffloadConnected(entry, CONNECTED)])


class BackupOffloadConnected(BackupOffloadEntity, BinarySensorEntity):
    """On while the location is usable; says why when it is not."""

    needs_location = False

    @property
    def is_on(self) -> bool:
        """Return True when the last probe passed and backups can be written."""
        data = self.coordinator.data
        return data.status is not None and data.status.writable is not False

    @property
    def extra_state_attributes(self) -> Mapping[str, Any] | None:
        """Return why the location is unusable; nothing while it is usable.

        An attribute that does not apply is left out: the more-info dialog
        would show it as "Unknown".
        """
        data = self.coordinator.data
        if (error := data.error) is not None:
            return {"reason": error.reason_code, "error": str(error)}
        if data.status is not None and data.status.writable is False:
            return {"reason": "not_writable", "error": "mounted read-only"}
        return None
