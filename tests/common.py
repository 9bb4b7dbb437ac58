"""Helpers for async tests: blocking set-up work goes to the executor too.

The event-loop guard applies to test code as well, so a test that mounts a
file system or writes a fixture file from a coroutine does it through these.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.backup_offload.const import CONF_PATH, CONF_REQUIRE_MOUNT, DOMAIN


@asynccontextmanager
async def in_executor[T](
    hass: HomeAssistant, manager: AbstractContextManager[T]
) -> AsyncIterator[T]:
    """Enter and exit a blocking context manager in the executor."""
    value = await hass.async_add_executor_job(manager.__enter__)
    try:
        yield value
    finally:
        await hass.async_add_executor_job(manager.__exit__, None, None, None)


async def run[T](hass: HomeAssistant, func: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in the executor."""
    return await hass.async_add_executor_job(func, *args)


async def setup_location(
    hass: HomeAssistant,
    path: Path,
    *,
    title: str = "NAS",
    require_mount: bool = True,
    options: dict[str, Any] | None = None,
) -> MockConfigEntry:
    """Add a location at ``path`` and set it up."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=title,
        unique_id=str(path),
        data={CONF_PATH: str(path), CONF_REQUIRE_MOUNT: require_mount},
        options=options or {},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def call(
    hass: HomeAssistant, service: str, entry: MockConfigEntry, **data: Any
) -> dict[str, Any]:
    """Call an action of a location, wait for it and return its response."""
    response = await hass.services.async_call(
        DOMAIN,
        service,
        {"config_entry_id": entry.entry_id, **data},
        blocking=True,
        return_response=True,
    )
    assert response is not None
    return dict(response)


async def setup_backup_component(hass: HomeAssistant) -> None:
    """Set up Home Assistant's backup component as a running instance has it."""
    try:
        # 2025.4 needs its backup data initialised first (done at bootstrap);
        # the helper is gone in 2026.
        from homeassistant.helpers.backup import (  # type: ignore[attr-defined,unused-ignore]
            async_initialize_backup,
        )
    except ImportError:
        pass
    else:
        async_initialize_backup(hass)
    assert await async_setup_component(hass, "backup", {})
    await hass.async_block_till_done()


def agent_id(entry: MockConfigEntry) -> str:
    """Return the backup agent id of a location."""
    return f"{DOMAIN}.{entry.entry_id}"


async def ws(client: Any, **message: Any) -> Any:
    """Send one websocket command; return its result (it must succeed)."""
    await client.send_json_auto_id(message)
    response = await client.receive_json()
    assert response["success"], response
    return response["result"]


WAIT_LIMIT = 30.0
"""Seconds ``wait_until`` waits before it fails the test."""


async def wait_until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition()`` holds; fail after WAIT_LIMIT s.

    A state that never comes fails the test with a message instead of
    spinning until the suite's own timeout.
    """
    try:
        async with asyncio.timeout(WAIT_LIMIT):
            # Polled: what it waits for is state, not an event to wait on.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(
            f"not reached within {WAIT_LIMIT} s: {condition}"
        ) from None
