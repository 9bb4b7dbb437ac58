"""Base entity of Backup Offload: one device per location."""

from __future__ import annotations

from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity
from homeassistant.util import slugify

from .const import CONF_PATH, DOMAIN
from .coordinator import BackupOffloadCoordinator
from .models import BackupOffloadConfigEntry


def _leaves_a_slug(name: str) -> bool:
    """Return True when ``name`` leaves something in an entity id."""
    # slugify turns an empty result into "unknown": test the name with a word.
    return slugify(f"{name} x") != "x"


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
        # Entity ids are the device name and the entity name. A name of only
        # emoji or punctuation leaves nothing ("sensor.state"): the ids then
        # start with the integration and the path. Names shown stay the user's.
        self._object_id_prefix = (
            None if _leaves_a_slug(entry.title) else f"{DOMAIN} {entry.data[CONF_PATH]}"
        )

    @property
    def suggested_object_id(self) -> str | None:
        """Return the entity name, after the prefix the device name needs."""
        name = super().suggested_object_id
        if self._object_id_prefix is None:
            return name
        return " ".join(filter(None, (self._object_id_prefix, name)))

    @property
    def available(self) -> bool:
        """Return whether the entity has something to show."""
        return super().available and (
            not self.needs_location or self.coordinator.data.available
        )
