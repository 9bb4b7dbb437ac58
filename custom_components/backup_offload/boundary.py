"""The one place engine errors become Home Assistant errors.

The engine (and the location's lock and runner) raise typed errors
(`engine/errors.py`). Operations pass them on untouched, so that each
caller sees what went wrong: the actions and the button raise
`to_ha_error` once, and the backup agent's methods (`agent_errors`) raise
the backup component's own errors, which its backup page shows.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
import logging
from typing import TYPE_CHECKING, Any, Protocol, cast
from weakref import WeakSet

from homeassistant.components.backup import (
    BackupAgentError,
    BackupNotFound,
    agent as backup_agent,
)
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError

from .const import DOMAIN, LOGGER
from .engine.errors import (
    BackupNotFoundError,
    BackupOffloadError,
    LocationBusyError,
    LocationUnavailableError,
)

if TYPE_CHECKING:
    from homeassistant.components.backup.agent import (
        BackupAgentUnreachableError as _UnreachableBase,
    )

    from .coordinator import BackupOffloadCoordinator
else:
    # Older Home Assistant versions have only the plain agent error.
    _UnreachableBase = getattr(
        backup_agent, "BackupAgentUnreachableError", BackupAgentError
    )


def to_ha_error(err: BackupOffloadError, location: str) -> HomeAssistantError:
    """Return the translated error of an action on ``location``.

    The caller's input (a backup that is not there, a wrong password) is a
    ServiceValidationError, anything else a failure.
    """
    cls = ServiceValidationError if err.caller_input else HomeAssistantError
    return cls(
        translation_domain=DOMAIN,
        translation_key=err.translation_key,
        translation_placeholders={"location": location, **err.placeholders},
    )


# Home Assistant 2025.5 and older log every HomeAssistantError an action
# raises through the websocket API (an action called from Developer tools, a
# button pressed in the frontend) as "Unexpected exception", with its
# traceback; later versions, and every version for a ServiceValidationError,
# log its message as an error. A share that is not mounted is no bug: the
# failure is logged once, as a warning, and these records of it are dropped.
_WEBSOCKET_LOGGER = logging.getLogger(
    "homeassistant.components.websocket_api.http.connection"
)
_REPORTED: WeakSet[HomeAssistantError] = WeakSet()
"""Errors raised to a caller after a warning said what went wrong."""


class _ReportedFilter(logging.Filter):
    """Drops Home Assistant's log record of an error in ``_REPORTED``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return record.exc_info[1] not in _REPORTED
        # "[connection id] message" (2025.6 on) or "[connection id] Error
        # during service call to button.press: message" (2026): the error's
        # message at the end, as the answer has it.
        message = record.getMessage()
        return not any(message.endswith(f" {error}") for error in _REPORTED)


_FILTER = _ReportedFilter()


def reported_error(err: BackupOffloadError, location: str) -> HomeAssistantError:
    """Return the translated error of an action or a press, logged once.

    An operation that failed has logged its warning (``logged``); a refusal
    (busy) or the caller's mistake is logged here. Home Assistant's own
    record of the error (a traceback, on older releases) is dropped.
    """
    error = to_ha_error(err, location)
    if not err.logged:
        LOGGER.warning("%s: %s", location, error)
        err.logged = True
    # Idempotent: a filter is added once.
    _WEBSOCKET_LOGGER.addFilter(_FILTER)
    _REPORTED.add(error)
    return error


def translated_message(err: BackupOffloadError, location: str) -> str:
    """Return the message an action reports for ``err`` (events carry it)."""
    return str(to_ha_error(err, location))


class LocationUnreachableError(_UnreachableBase):
    """The location is down: Home Assistant's "unreachable", with the reason."""

    # The base class replaces every message with a generic one; the backup
    # page should say why (not mounted, not responding, ...). An empty one
    # makes HomeAssistantError use the message given.
    _message = ""


class AgentOfLocation(Protocol):
    """What `agent_errors` needs of a backup agent."""

    name: str

    @property
    def coordinator(self) -> BackupOffloadCoordinator:
        """Return the coordinator of the agent's location."""


def agent_error(
    err: BackupOffloadError, name: str, coordinator: BackupOffloadCoordinator
) -> BackupAgentError:
    """Return the backup component's error for ``err``; record a location down.

    A job that did not get the location in time waited for another
    operation (a backup an action runs): the location is busy, not down,
    unless the runner holds a job that hangs.
    """
    if isinstance(err, BackupNotFoundError):
        return BackupNotFound(f"{name}: {err}")
    if isinstance(err, LocationBusyError):
        return BackupAgentError(str(err))
    if not isinstance(err, LocationUnavailableError):
        return BackupAgentError(f"{name}: {err}")
    if err.location_reason == "not_responding" and not coordinator.runner.stuck:
        return BackupAgentError(
            f"{name} is busy with another operation; try again when it is done"
        )
    coordinator.async_set_unavailable(err)
    return LocationUnreachableError(f"{name} is unavailable: {err}")


def agent_errors[F: Callable[..., Coroutine[Any, Any, Any]]](method: F) -> F:
    """Make a backup agent's method raise the backup component's errors.

    For methods of an `AgentOfLocation`; the signature stays the method's.
    """

    @wraps(method)
    async def translated(agent: AgentOfLocation, /, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(agent, *args, **kwargs)
        except BackupOffloadError as err:
            raise agent_error(err, agent.name, agent.coordinator) from err

    return cast(F, translated)
