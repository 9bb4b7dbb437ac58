"""Buttons of a location: create a backup now, check the location now."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import logging
from weakref import WeakSet

from homeassistant.components.button import ButtonEntity, ButtonEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .boundary import to_ha_error
from .const import LOGGER
from .engine.errors import BackupOffloadError, LocationBusyError
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

# Home Assistant 2025.5 and older log every HomeAssistantError an action
# raises through the websocket API (a button pressed in the frontend) as
# "Unexpected exception", with its traceback; later versions, and every
# version for a ServiceValidationError, log its message as an error. A
# location that is not mounted is no bug: the press's failure is logged as
# one warning, and these records of it are dropped.
_WEBSOCKET_LOGGER = logging.getLogger(
    "homeassistant.components.websocket_api.http.connection"
)
_REPORTED: WeakSet[HomeAssistantError] = WeakSet()
"""Errors of presses that have been logged as a warning."""


class _ReportedFilter(logging.Filter):
    """Drops Home Assistant's log record of an error in ``_REPORTED``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return record.exc_info[1] not in _REPORTED
        # "[connection id] message": the error's message, as the answer has it.
        message = record.getMessage()
        return not any(message.endswith(f"] {error}") for error in _REPORTED)


_FILTER = _ReportedFilter()
_FILTERING: WeakSet[BackupOffloadButton] = WeakSet()
"""The buttons that may raise an error in ``_REPORTED``: while there are
any, the filter is installed."""


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

    async def async_added_to_hass(self) -> None:
        """Start filtering Home Assistant's traceback of a press that failed."""
        await super().async_added_to_hass()
        _FILTERING.add(self)
        _WEBSOCKET_LOGGER.addFilter(_FILTER)

    async def async_will_remove_from_hass(self) -> None:
        """Stop filtering once no button of ours is left."""
        await super().async_will_remove_from_hass()
        _FILTERING.discard(self)
        if not _FILTERING:
            _WEBSOCKET_LOGGER.removeFilter(_FILTER)

    async def async_press(self) -> None:
        """Run the press; raise a translated error, logged once as a warning."""
        try:
            await self.entity_description.press_fn(self)
        except BackupOffloadError as err:
            raise self._reported(err) from err

    def _reported(self, err: BackupOffloadError) -> HomeAssistantError:
        """Return the error of a failed press, logged as one warning line.

        The manager has logged the failure of an operation that started; a
        refusal (busy) and the caller's mistakes are logged here.
        """
        error = to_ha_error(err, self.manager.entry.title)
        if isinstance(err, LocationBusyError) or err.caller_input:
            LOGGER.warning("%s: %s", self.manager.entry.title, error)
        _REPORTED.add(error)
        return error
