"""A button that creates a backup in the location now."""

from __future__ import annotations

from homeassistant.components.button import ButtonEntity, ButtonEntityDescription
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .boundary import to_ha_error
from .engine.errors import BackupOffloadError
from .entity import BackupOffloadEntity
from .models import BackupOffloadConfigEntry

# A press runs a whole backup; the location's own lock refuses a second one.
PARALLEL_UPDATES = 1

CREATE_BACKUP = ButtonEntityDescription(
    key="create_backup", translation_key="create_backup"
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: BackupOffloadConfigEntry,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Add the button of a location."""
    async_add_entities([BackupOffloadCreateButton(entry, CREATE_BACKUP)])


class BackupOffloadCreateButton(BackupOffloadEntity, ButtonEntity):
    """Creates a backup with the location's options."""

    async def async_press(self) -> None:
        """Create a backup."""
        try:
            await self.manager.async_create()
        except BackupOffloadError as err:
            raise to_ha_error(err, self.manager.entry.title) from err
