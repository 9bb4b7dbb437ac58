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

from .coordinator import BackupOffloadConfigEntry
from .entity import BackupOffloadEntity
from .errors import LocationUnavailableError

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
        """Return True when the last probe passed."""
        return self.coordinator.data.available

    @property
    def extra_state_attributes(self) -> Mapping[str, Any]:
        """Return why the location is unavailable."""
        error = self.coordinator.data.error
        reason: str | None = None
        if isinstance(error, LocationUnavailableError):
            reason = error.location_reason
        elif error is not None:
            reason = error.reason
        return {"reason": reason, "error": str(error) if error else None}
