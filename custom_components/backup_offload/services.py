"""Actions of Backup Offload (registered once, they target a location)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any

from homeassistant.auth.permissions.const import POLICY_CONTROL
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import ServiceValidationError, Unauthorized, UnknownUser
from homeassistant.helpers import config_validation as cv
import voluptuous as vol

from .boundary import reported_error
from .const import CONF_INCLUDE_DATABASE, CONF_PASSWORD, DOMAIN
from .copying import async_copy
from .engine.errors import BackupOffloadError
from .engine.restore.checks import pattern_is_forbidden
from .engine.validation import exclude_problem, is_valid_backup_id, is_valid_glob
from .manager import LocationManager
from .models import BackupOffloadConfigEntry
from .restoring import async_restore

ATTR_CONFIG_ENTRY_ID = "config_entry_id"
ATTR_BACKUP_ID = "backup_id"
ATTR_NAME = "name"
ATTR_EXCLUDE = "exclude"
ATTR_RESTORE_DATABASE = "restore_database"
ATTR_PATHS = "paths"
ATTR_RESTART = "restart"
ATTR_SAFETY_BACKUP = "safety_backup"
ATTR_DRY_RUN = "dry_run"
ATTR_SOURCE = "source"
ATTR_DELETE_SOURCE = "delete_source"

SERVICE_CREATE = "create"
SERVICE_DELETE = "delete"
SERVICE_LIST = "list"
SERVICE_VERIFY = "verify"
SERVICE_PURGE = "purge"
SERVICE_RESTORE = "restore"
SERVICE_COPY = "copy"

_ENTRY: dict[vol.Marker, Any] = {vol.Required(ATTR_CONFIG_ENTRY_ID): cv.string}
_BACKUP: dict[vol.Marker, Any] = {
    **_ENTRY,
    vol.Required(ATTR_BACKUP_ID): cv.string,
}

SCHEMAS: dict[str, vol.Schema] = {
    SERVICE_CREATE: vol.Schema(
        {
            **_ENTRY,
            vol.Optional(ATTR_NAME): cv.string,
            vol.Optional(CONF_PASSWORD): cv.string,
            vol.Optional(CONF_INCLUDE_DATABASE): cv.boolean,
            vol.Optional(ATTR_EXCLUDE): vol.All(cv.ensure_list, [cv.string]),
        }
    ),
    SERVICE_DELETE: vol.Schema(_BACKUP),
    SERVICE_LIST: vol.Schema(_ENTRY),
    SERVICE_VERIFY: vol.Schema({**_BACKUP, vol.Optional(CONF_PASSWORD): cv.string}),
    SERVICE_PURGE: vol.Schema(
        {**_ENTRY, vol.Optional(ATTR_DRY_RUN, default=False): cv.boolean}
    ),
    SERVICE_RESTORE: vol.Schema(
        {
            **_BACKUP,
            vol.Optional(CONF_PASSWORD): cv.string,
            vol.Optional(ATTR_RESTORE_DATABASE, default=True): cv.boolean,
            vol.Optional(ATTR_PATHS): vol.All(cv.ensure_list, [cv.string]),
            vol.Optional(ATTR_RESTART, default=True): cv.boolean,
            vol.Optional(ATTR_SAFETY_BACKUP, default=True): cv.boolean,
            vol.Optional(ATTR_DRY_RUN, default=False): cv.boolean,
        }
    ),
    SERVICE_COPY: vol.Schema(
        {
            **_ENTRY,
            vol.Required(ATTR_SOURCE): cv.string,
            vol.Optional(ATTR_BACKUP_ID): cv.string,
            vol.Optional(ATTR_DELETE_SOURCE, default=False): cv.boolean,
        }
    ),
}

type Handler = Callable[[LocationManager, ServiceCall], Awaitable[dict[str, Any]]]


def _invalid(key: str, **placeholders: str) -> ServiceValidationError:
    return ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key=key,
        translation_placeholders=placeholders,
    )


def _manager(hass: HomeAssistant, call: ServiceCall) -> LocationManager:
    entry_id: str = call.data[ATTR_CONFIG_ENTRY_ID]
    entry: BackupOffloadConfigEntry | None = hass.config_entries.async_get_entry(
        entry_id
    )
    if entry is None or entry.domain != DOMAIN:
        raise _invalid("entry_not_found", entry_id=entry_id)
    if entry.state is not ConfigEntryState.LOADED:
        raise _invalid("entry_not_loaded", location=entry.title)
    return entry.runtime_data.manager


def _backup_id(call: ServiceCall) -> str:
    backup_id: str = call.data[ATTR_BACKUP_ID]
    if not is_valid_backup_id(backup_id):
        raise _invalid("invalid_backup_id", backup_id=backup_id)
    return backup_id


async def _create(manager: LocationManager, call: ServiceCall) -> dict[str, Any]:
    exclude: list[str] = call.data.get(ATTR_EXCLUDE, [])
    for pattern in exclude:
        if (problem := exclude_problem(pattern)) is not None:
            raise _invalid(problem[0], **problem[1])
    return await manager.async_create(
        name=call.data.get(ATTR_NAME),
        password=call.data.get(CONF_PASSWORD),
        include_database=call.data.get(CONF_INCLUDE_DATABASE),
        exclude=exclude,
    )


async def _delete(manager: LocationManager, call: ServiceCall) -> dict[str, Any]:
    return await manager.async_delete(_backup_id(call))


async def _list(manager: LocationManager, call: ServiceCall) -> dict[str, Any]:
    return await manager.async_list()


async def _verify(manager: LocationManager, call: ServiceCall) -> dict[str, Any]:
    return await manager.async_verify(_backup_id(call), call.data.get(CONF_PASSWORD))


async def _purge(manager: LocationManager, call: ServiceCall) -> dict[str, Any]:
    return await manager.async_purge(dry_run=call.data[ATTR_DRY_RUN])


def _restore_paths(call: ServiceCall) -> list[str] | None:
    """Return the paths of a partial restore, None for a full one."""
    if ATTR_PATHS not in call.data:
        return None
    paths: list[str] = [path.strip() for path in call.data[ATTR_PATHS]]
    if not paths:
        # An emptied field must not turn into a full restore with a restart.
        raise _invalid("restore_paths_empty")
    for path in paths:
        if not is_valid_glob(path):
            raise _invalid("invalid_restore_path", pattern=path)
        if pattern_is_forbidden(path):
            raise _invalid("restore_path_forbidden", pattern=path)
    return paths


async def _restore(manager: LocationManager, call: ServiceCall) -> dict[str, Any]:
    backup_id = _backup_id(call)
    paths = _restore_paths(call)
    return await async_restore(
        manager,
        backup_id=backup_id,
        password=call.data.get(CONF_PASSWORD),
        restore_database=call.data[ATTR_RESTORE_DATABASE],
        paths=paths,
        restart=call.data[ATTR_RESTART],
        safety_backup=call.data[ATTR_SAFETY_BACKUP],
        dry_run=call.data[ATTR_DRY_RUN],
    )


async def _copy(manager: LocationManager, call: ServiceCall) -> dict[str, Any]:
    backup_id = _backup_id(call) if ATTR_BACKUP_ID in call.data else None
    return await async_copy(
        manager,
        source=call.data[ATTR_SOURCE].strip(),
        backup_id=backup_id,
        delete_source=call.data[ATTR_DELETE_SOURCE],
    )


HANDLERS: dict[str, tuple[Handler, SupportsResponse]] = {
    SERVICE_CREATE: (_create, SupportsResponse.OPTIONAL),
    SERVICE_DELETE: (_delete, SupportsResponse.OPTIONAL),
    SERVICE_LIST: (_list, SupportsResponse.ONLY),
    SERVICE_VERIFY: (_verify, SupportsResponse.OPTIONAL),
    SERVICE_PURGE: (_purge, SupportsResponse.OPTIONAL),
    SERVICE_RESTORE: (_restore, SupportsResponse.OPTIONAL),
    SERVICE_COPY: (_copy, SupportsResponse.OPTIONAL),
}


def _admin_only(
    hass: HomeAssistant, handler: Handler
) -> Callable[[ServiceCall], Coroutine[Any, Any, ServiceResponse]]:
    """Wrap a handler: only administrators may back up or delete a house.

    Home Assistant's `async_register_admin_service` takes no response data in
    2025.4, so the check is done here the way it does it. The location's
    errors are translated here, once for every action.
    """

    @wraps(handler)
    async def admin_handler(call: ServiceCall) -> ServiceResponse:
        if call.context.user_id:
            user = await hass.auth.async_get_user(call.context.user_id)
            if user is None:
                raise UnknownUser(
                    context=call.context,
                    permission=POLICY_CONTROL,
                    user_id=call.context.user_id,
                )
            if not user.is_admin:
                raise Unauthorized(context=call.context, permission=POLICY_CONTROL)
        manager = _manager(hass, call)
        try:
            return await handler(manager, call)
        except BackupOffloadError as err:
            raise reported_error(err, manager.entry.title) from err

    return admin_handler


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the actions."""
    for service, (handler, supports_response) in HANDLERS.items():
        hass.services.async_register(
            DOMAIN,
            service,
            _admin_only(hass, handler),
            schema=SCHEMAS[service],
            supports_response=supports_response,
        )
