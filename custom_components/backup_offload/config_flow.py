"""Config flow of Backup Offload: add, reconfigure and tune a location."""

from __future__ import annotations

from functools import partial
from typing import Any

from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.const import CONF_NAME
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
import voluptuous as vol

from .const import (
    CONF_COMPRESS,
    CONF_EXCLUDE,
    CONF_INCLUDE_DATABASE,
    CONF_KEEP_COUNT,
    CONF_KEEP_DAILY,
    CONF_KEEP_DAYS,
    CONF_KEEP_MONTHLY,
    CONF_KEEP_WEEKLY,
    CONF_KEEP_YEARLY,
    CONF_OVERDUE_HOURS,
    CONF_PASSWORD,
    CONF_PATH,
    CONF_REQUIRE_MOUNT,
    DEFAULT_COMPRESS,
    DEFAULT_INCLUDE_DATABASE,
    DEFAULT_KEEP_COUNT,
    DEFAULT_KEEP_DAYS,
    DEFAULT_KEEP_GENERATIONS,
    DEFAULT_OVERDUE_HOURS,
    DEFAULT_REQUIRE_MOUNT,
    DOMAIN,
    LOGGER,
    PROBE_TIMEOUT,
)
from .engine.location import LocationConfigError, LocationStatus, validate_location
from .engine.validation import exclude_problem
from .models import DATA_VALIDATING
from .runner import async_run_once

_COUNT = NumberSelector(
    NumberSelectorConfig(min=0, max=10000, step=1, mode=NumberSelectorMode.BOX)
)
_HOURS = NumberSelector(
    NumberSelectorConfig(
        min=0,
        max=10000,
        step=1,
        mode=NumberSelectorMode.BOX,
        unit_of_measurement="h",
    )
)
# The number boxes: the form returns floats, the options keep whole numbers.
_WHOLE_NUMBERS = (
    CONF_KEEP_COUNT,
    CONF_KEEP_DAYS,
    CONF_KEEP_DAILY,
    CONF_KEEP_WEEKLY,
    CONF_KEEP_MONTHLY,
    CONF_KEEP_YEARLY,
    CONF_OVERDUE_HOURS,
)


def _location_schema(defaults: dict[str, Any], *, with_name: bool) -> vol.Schema:
    fields: dict[Any, Any] = {}
    if with_name:
        fields[vol.Required(CONF_NAME, default=defaults.get(CONF_NAME, ""))] = (
            TextSelector()
        )
    fields[vol.Required(CONF_PATH, default=defaults.get(CONF_PATH, ""))] = (
        TextSelector()
    )
    fields[
        vol.Required(
            CONF_REQUIRE_MOUNT,
            default=defaults.get(CONF_REQUIRE_MOUNT, DEFAULT_REQUIRE_MOUNT),
        )
    ] = BooleanSelector()
    return vol.Schema(fields)


class BackupOffloadConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a location."""

    VERSION = 1

    def __init__(self) -> None:
        """Start with nothing checked."""
        self._title = ""
        self._data: dict[str, Any] = {}
        self._file_system = ""

    async def _async_validate(
        self, user_input: dict[str, Any]
    ) -> tuple[LocationStatus | None, dict[str, str]]:
        """Check the location in one executor job; return the probe's status.

        A share that does not answer within ``PROBE_TIMEOUT`` is reported as
        not responding; its check keeps its thread until the share answers
        or fails, and a new submission of the same path waits for that
        check instead of starting another.
        """
        key = (user_input[CONF_PATH], user_input[CONF_REQUIRE_MOUNT])
        job = await async_run_once(
            self.hass,
            self.hass.data.setdefault(DATA_VALIDATING, {}),
            key,
            partial(
                validate_location,
                key[0],
                require_mount=key[1],
                config_dir=self.hass.config.config_dir,
            ),
            PROBE_TIMEOUT,
        )
        if job is None:
            return None, {CONF_PATH: "not_responding"}
        try:
            status = job.result()
        except LocationConfigError as err:
            return None, {CONF_PATH: err.reason}
        except Exception:  # noqa: BLE001 - the flow shows "unknown", the log has it
            LOGGER.exception("Unexpected error while checking a location")
            return None, {"base": "unknown"}
        return status, {}

    async def _async_accept(
        self, status: LocationStatus, user_input: dict[str, Any]
    ) -> ConfigFlowResult:
        """Remember the checked location; ask first when it is in memory."""
        self._file_system = str(status.file_system)
        self._data = {
            CONF_PATH: status.path,
            CONF_REQUIRE_MOUNT: user_input[CONF_REQUIRE_MOUNT],
        }
        if status.in_ram:
            return await self.async_step_in_ram()
        return self._async_finish()

    async def async_step_in_ram(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Warn that backups in a RAM disk vanish at the next boot."""
        if user_input is not None:
            return self._async_finish()
        return self.async_show_form(
            step_id="in_ram",
            description_placeholders={
                "path": self._data[CONF_PATH],
                "file_system": self._file_system,
            },
        )

    @callback
    def _async_finish(self) -> ConfigFlowResult:
        """Add the location, or change the one being reconfigured."""
        if self.source == SOURCE_RECONFIGURE:
            return self.async_update_reload_and_abort(
                self._get_reconfigure_entry(),
                unique_id=self._data[CONF_PATH],
                data_updates=self._data,
            )
        return self.async_create_entry(title=self._title, data=self._data)

    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a name and a path, and check the path."""
        errors: dict[str, str] = {}
        if user_input is not None:
            status, errors = await self._async_validate(user_input)
            if status is not None:
                await self.async_set_unique_id(status.path)
                self._abort_if_unique_id_configured()
                self._title = user_input[CONF_NAME].strip() or status.path
                return await self._async_accept(status, user_input)
        return self.async_show_form(
            step_id="user",
            data_schema=_location_schema(user_input or {}, with_name=True),
            errors=errors,
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Move a location to another path or change the mount requirement."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            status, errors = await self._async_validate(user_input)
            if status is not None:
                await self.async_set_unique_id(status.path)
                if status.path != entry.unique_id:
                    self._abort_if_unique_id_configured()
                return await self._async_accept(status, user_input)
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=_location_schema(
                user_input or dict(entry.data), with_name=False
            ),
            errors=errors,
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        """Return the options flow."""
        return BackupOffloadOptionsFlow()


def _options_schema(options: dict[str, Any]) -> vol.Schema:
    """Return the options form, filled with ``options``."""

    def number(key: str, default: int) -> vol.Required:
        return vol.Required(key, default=options.get(key, default))

    return vol.Schema(
        {
            vol.Optional(
                CONF_PASSWORD,
                description={"suggested_value": options.get(CONF_PASSWORD)},
            ): TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD)),
            number(CONF_KEEP_COUNT, DEFAULT_KEEP_COUNT): _COUNT,
            number(CONF_KEEP_DAYS, DEFAULT_KEEP_DAYS): _COUNT,
            number(CONF_KEEP_DAILY, DEFAULT_KEEP_GENERATIONS): _COUNT,
            number(CONF_KEEP_WEEKLY, DEFAULT_KEEP_GENERATIONS): _COUNT,
            number(CONF_KEEP_MONTHLY, DEFAULT_KEEP_GENERATIONS): _COUNT,
            number(CONF_KEEP_YEARLY, DEFAULT_KEEP_GENERATIONS): _COUNT,
            vol.Required(
                CONF_INCLUDE_DATABASE,
                default=options.get(CONF_INCLUDE_DATABASE, DEFAULT_INCLUDE_DATABASE),
            ): BooleanSelector(),
            vol.Optional(
                CONF_EXCLUDE,
                description={"suggested_value": options.get(CONF_EXCLUDE, [])},
            ): TextSelector(TextSelectorConfig(multiple=True)),
            vol.Required(
                CONF_COMPRESS,
                default=options.get(CONF_COMPRESS, DEFAULT_COMPRESS),
            ): BooleanSelector(),
            number(CONF_OVERDUE_HOURS, DEFAULT_OVERDUE_HOURS): _HOURS,
        }
    )


class BackupOffloadOptionsFlow(OptionsFlow):
    """Encryption, retention and what goes into a backup."""

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show and check the options."""
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {}
        if user_input is not None:
            user_input[CONF_EXCLUDE] = [
                pattern.strip() for pattern in user_input.get(CONF_EXCLUDE, [])
            ]
            problem = next(
                filter(None, map(exclude_problem, user_input[CONF_EXCLUDE])), None
            )
            if problem is not None:
                errors[CONF_EXCLUDE], placeholders = problem
            else:
                for key in _WHOLE_NUMBERS:
                    user_input[key] = int(user_input[key])
                return self.async_create_entry(data=user_input)
        options = user_input or dict(self.config_entry.options)
        schema = _options_schema(options)
        return self.async_show_form(
            step_id="init",
            data_schema=schema,
            errors=errors,
            description_placeholders=placeholders,
        )
