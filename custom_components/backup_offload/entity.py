"""Base entity of Backup Offload: one device per location."""

from __future__ import annotations

from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN
from .coordinator import BackupOffloadConfigEntry, BackupOffloadCoordinator


class BackupOffloadEntity(CoordinatorEntity[BackupOffloadCoordinator]):
    """An entity of one location."""

    _attr_has_entity_name = True
    # Entities that show what is in the location are unavailable while it is
    # down; the ones that say *that* it is down stay available.
    needs_location = True

    def __init__(
        self, entry: BackupOffloadConfigEntry, description: EntityDescription
    ) -> None:
        """Set up the entity for a location."""
        super().__init__(entry.runtime_data.coordinator)
        self.entity_description = description
        self.manager = entry.runtime_data.manager
        self._attr_unique_id = f"{entry.entry_id}_{description.key}"
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, entry.entry_id)},
            name=entry.title,
            manufacturer="Backup Offload",
            model="Backup location",
            entry_type=DeviceEntryType.SERVICE,
        )

    @property
    def available(self) -> bool:
        """Return whether the entity has something to show."""
        return super().available and (
            not self.needs_location or self.coordinator.data.available
        )
