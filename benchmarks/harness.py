"""A Home Assistant for the benchmarks that run inside one (loop, copy).

The test harness's instance, with the backup component and our locations,
stopped at the end: the harness leaves its instance and its import executor
running (the test fixture stops them), and a second instance in the same
process would otherwise find the first one still there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from pytest_homeassistant_custom_component.common import MockConfigEntry


@contextlib.asynccontextmanager
async def running_hass(config_dir: Path) -> AsyncIterator[HomeAssistant]:
    """Yield a started Home Assistant with its backup component; stop it after."""
    from homeassistant import loader
    from homeassistant.setup import async_setup_component
    from pytest_homeassistant_custom_component.common import async_test_home_assistant

    async with async_test_home_assistant(config_dir=str(config_dir)) as hass:
        hass.data.pop(loader.DATA_CUSTOM_COMPONENTS, None)  # allow ours
        with contextlib.suppress(ImportError):
            from homeassistant.helpers.backup import async_initialize_backup

            async_initialize_backup(hass)
        assert await async_setup_component(hass, "backup", {})
        await hass.async_block_till_done()
        yield hass
        await hass.async_block_till_done()
        # It forgets a stopped instance a loop iteration later.
        await hass.async_stop(force=True)
        await asyncio.sleep(0)
    executor = getattr(hass, "import_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)


async def add_location(hass: HomeAssistant, label: str, path: Path) -> MockConfigEntry:
    """Add and set up a location ``bench-<label>`` at the mount point ``path``."""
    from pytest_homeassistant_custom_component.common import MockConfigEntry

    from custom_components.backup_offload.const import (
        CONF_PATH,
        CONF_REQUIRE_MOUNT,
        DOMAIN,
    )

    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"bench-{label}",
        unique_id=str(path),
        data={CONF_PATH: str(path), CONF_REQUIRE_MOUNT: True},
        options={},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry
