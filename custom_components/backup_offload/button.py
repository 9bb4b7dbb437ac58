"""Buttons of a location: create a backup now, check the location now."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from homeassistant.components.button import ButtonEntity, ButtonEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .boundary import reported_error
from .engine.errors import BackupOffloadError
from .entity import BackupOffloadEntity
from .models import BackupOffloadConfigEntry

# Not one press at a time per platform: a "Check now" must not wait behind a
# "Create backup" that runs for an hour. The location's own lock refuses a
# second backup (with a translated "busy").
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class BackupOffloadButtonDescription(ButtonEntityDescription):
    """A button of a location: what a press does, and whether it needs it up."""

    press_fn: Callable[[BackupOffloadEntity], Awaitable[None]]
    needs_location: bool = True


async def _create_backup(entity: BackupOffloadEntity) -> None:
    await entity.manager.async_create()


async def _check_now(entity: BackupOffloadEntity) -> None:
    await entity.coordinator.async_check_now()


BUTTONS: tuple[BackupOffloadButtonDescription, ...] = (
    BackupOffloadButtonDescription(
        key="create_backup", translation_key="create_backup", press_fn=_create_backup
    ),
    # Next to the `connected` sensor whose state it refreshes; pressable while
    # the location is down, which is when it is wanted.
    BackupOffloadButtonDescription(
        key="check_now",
        translation_key="check_now",
        entity_category=EntityCategory.DIAGNOSTIC,
        press_fn=_check_now,
        needs_location=False,
    ),
)
CREATE_BACKUP, CHECK_NOW = BUTTONS


async def async_setup_entry(
    hass: HomeAssistant,
    entry: BackupOffloadConfigEntry,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Add the buttons of a location."""
    async_add_entities(
        BackupOffloadButton(entry, description) for description in BUTTONS
    )


class BackupOffloadButton(BackupOffloadEntity, ButtonEntity):
    """Does what its description says; reports a failure once, as a warning."""

    entity_description: BackupOffloadButtonDescription

    def __init__(
        self,
        entry: BackupOffloadConfigEntry,
        description: BackupOffloadButtonDescription,
    ) -> None:
        """Set up the button of a location."""
        super().__init__(entry, description)
        self.needs_location = description.needs_location

    async def async_press(self) -> None:
        """Run the press; raise a translated error, logged once as a warning."""
        try:
            await self.entity_description.press_fn(self)
        except BackupOffloadError as err:
            raise reported_error(err, self.manager.entry.title) from err
