"""Config flow of Backup Offload: add, reconfigure and tune a location."""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import Any

from homeassistant.config_entries import (
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
from homeassistant.util.hass_dict import HassKey
import voluptuous as vol

from .const import (
    CONF_COMPRESS,
    CONF_EXCLUDE,
    CONF_INCLUDE_DATABASE,
    CONF_KEEP_COUNT,
    CONF_KEEP_DAYS,
    CONF_PASSWORD,
    CONF_PATH,
    CONF_REQUIRE_MOUNT,
    DEFAULT_COMPRESS,
    DEFAULT_INCLUDE_DATABASE,
    DEFAULT_KEEP_COUNT,
    DEFAULT_KEEP_DAYS,
    DEFAULT_REQUIRE_MOUNT,
    DOMAIN,
    LOGGER,
    PROBE_TIMEOUT,
)
from .location import LocationConfigError, validate_location
from .validation import is_valid_glob

# Checks of a path still running in the executor, by (path, require mount):
# a share that hangs holds one thread, however often the user submits it.
_VALIDATING: HassKey[dict[tuple[str, bool], asyncio.Future[str]]] = HassKey(
    f"{DOMAIN}_validating"
)

_COUNT = NumberSelector(
    NumberSelectorConfig(min=0, max=10000, step=1, mode=NumberSelectorMode.BOX)
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


def _forget(
    validating: dict[tuple[str, bool], asyncio.Future[str]],
    key: tuple[str, bool],
    job: asyncio.Future[str],
) -> None:
    """Drop a finished check; its error was shown, or nobody waits any more."""
    validating.pop(key, None)
    with contextlib.suppress(asyncio.CancelledError):
        job.exception()  # retrieved: a late failure is not logged as lost


class BackupOffloadConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a location."""

    VERSION = 1

    async def _async_validate(
        self, user_input: dict[str, Any]
    ) -> tuple[str | None, dict[str, str]]:
        """Check the location in one executor job; return its real path.

        A share that does not answer within ``PROBE_TIMEOUT`` is reported as
        not responding; its check keeps its thread until the share answers
        or fails, and a new submission of the same path waits for that
        check instead of starting another.
        """
        key = (user_input[CONF_PATH], user_input[CONF_REQUIRE_MOUNT])
        validating = self.hass.data.setdefault(_VALIDATING, {})
        if (job := validating.get(key)) is None:
            job = validating[key] = self.hass.async_add_executor_job(
                partial(
                    validate_location,
                    key[0],
                    require_mount=key[1],
                    config_dir=self.hass.config.config_dir,
                )
            )
            job.add_done_callback(partial(_forget, validating, key))
        # Wait without cancelling: the thread cannot be stopped anyway.
        done, _ = await asyncio.wait((job,), timeout=PROBE_TIMEOUT)
        if not done:
            return None, {CONF_PATH: "not_responding"}
        try:
            real_path = job.result()
        except LocationConfigError as err:
            return None, {CONF_PATH: err.reason}
        except Exception:  # noqa: BLE001 - the flow shows "unknown", the log has it
            LOGGER.exception("Unexpected error while checking a location")
            return None, {"base": "unknown"}
        return real_path, {}

    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a name and a path, and check the path."""
        errors: dict[str, str] = {}
        if user_input is not None:
            real_path, errors = await self._async_validate(user_input)
            if real_path is not None:
                await self.async_set_unique_id(real_path)
                self._abort_if_unique_id_configured()
                return self.async_create_entry(
                    title=user_input[CONF_NAME].strip() or real_path,
                    data={
                        CONF_PATH: real_path,
                        CONF_REQUIRE_MOUNT: user_input[CONF_REQUIRE_MOUNT],
                    },
                )
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
            real_path, errors = await self._async_validate(user_input)
            if real_path is not None:
                await self.async_set_unique_id(real_path)
                if real_path != entry.unique_id:
                    self._abort_if_unique_id_configured()
                return self.async_update_reload_and_abort(
                    entry,
                    unique_id=real_path,
                    data_updates={
                        CONF_PATH: real_path,
                        CONF_REQUIRE_MOUNT: user_input[CONF_REQUIRE_MOUNT],
                    },
                )
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


class BackupOffloadOptionsFlow(OptionsFlow):
    """Encryption, retention and what goes into a backup."""

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show and check the options."""
        errors: dict[str, str] = {}
        if user_input is not None:
            user_input[CONF_EXCLUDE] = [
                pattern.strip() for pattern in user_input.get(CONF_EXCLUDE, [])
            ]
            if not all(is_valid_glob(pattern) for pattern in user_input[CONF_EXCLUDE]):
                errors[CONF_EXCLUDE] = "invalid_glob"
            else:
                user_input[CONF_KEEP_COUNT] = int(user_input[CONF_KEEP_COUNT])
                user_input[CONF_KEEP_DAYS] = int(user_input[CONF_KEEP_DAYS])
                return self.async_create_entry(data=user_input)
        options = user_input or dict(self.config_entry.options)
        schema = vol.Schema(
            {
                vol.Optional(
                    CONF_PASSWORD,
                    description={"suggested_value": options.get(CONF_PASSWORD)},
                ): TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD)),
                vol.Required(
                    CONF_KEEP_COUNT,
                    default=options.get(CONF_KEEP_COUNT, DEFAULT_KEEP_COUNT),
                ): _COUNT,
                vol.Required(
                    CONF_KEEP_DAYS,
                    default=options.get(CONF_KEEP_DAYS, DEFAULT_KEEP_DAYS),
                ): _COUNT,
                vol.Required(
                    CONF_INCLUDE_DATABASE,
                    default=options.get(
                        CONF_INCLUDE_DATABASE, DEFAULT_INCLUDE_DATABASE
                    ),
                ): BooleanSelector(),
                vol.Optional(
                    CONF_EXCLUDE,
                    description={"suggested_value": options.get(CONF_EXCLUDE, [])},
                ): TextSelector(TextSelectorConfig(multiple=True)),
                vol.Required(
                    CONF_COMPRESS,
                    default=options.get(CONF_COMPRESS, DEFAULT_COMPRESS),
                ): BooleanSelector(),
            }
        )
        return self.async_show_form(step_id="init", data_schema=schema, errors=errors)
