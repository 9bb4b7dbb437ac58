"""Fixtures shared by all tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.backup_offload.const import CONF_PATH, CONF_REQUIRE_MOUNT, DOMAIN

from .live_hass import Instance, started
from .loop_guard import LoopGuard, loop_guard


@pytest.fixture(autouse=True)
def event_loop_guard() -> Iterator[LoopGuard]:
    """Fail the test the moment a blocking call runs on the event loop.

    The call raises at once; and in case our code swallowed that error, the
    test also fails at teardown with every recorded call.
    """
    with loop_guard() as guard:
        yield guard
    if guard.violations:
        pytest.fail(
            "Blocking calls on the event loop:\n" + "\n".join(guard.violations),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load the integration from custom_components/."""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """Return a fresh Home Assistant config directory."""
    path = tmp_path / "config"
    path.mkdir()
    return path


@pytest.fixture
def location_dir(tmp_path: Path) -> Path:
    """Return a plain directory to use as a location (no mount required)."""
    path = tmp_path / "location"
    path.mkdir()
    return path


@pytest.fixture
def ha_config_dir(hass: HomeAssistant, config_dir: Path) -> Path:
    """Point Home Assistant at a fresh config directory with a little content.

    The test harness's default config directory lives inside site-packages;
    a backup test must never read or restore into it.
    """
    hass.config.config_dir = str(config_dir)
    (config_dir / "configuration.yaml").write_text("default_config:\n")
    (config_dir / "automations.yaml").write_text("[]\n")
    (config_dir / ".storage").mkdir()
    (config_dir / ".storage" / "core.config").write_text('{"data": {}}\n')
    return config_dir


@pytest.fixture
def entry_options() -> dict[str, Any]:
    """Return the options of the test location (override to change)."""
    return {}


@pytest.fixture
def mock_config_entry(
    location_dir: Path, entry_options: dict[str, Any]
) -> MockConfigEntry:
    """Return a config entry for the test location."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="NAS",
        unique_id=str(location_dir),
        data={CONF_PATH: str(location_dir), CONF_REQUIRE_MOUNT: False},
        options=entry_options,
    )


@pytest.fixture
async def init_integration(
    hass: HomeAssistant, ha_config_dir: Path, mock_config_entry: MockConfigEntry
) -> MockConfigEntry:
    """Set up the integration with the test location."""
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    return mock_config_entry


@pytest.fixture
def instance(tmp_path: Path, socket_enabled: None) -> Iterator[Instance]:
    """Start a real Home Assistant process (tests/live_hass.py); stop it after."""
    with started(tmp_path) as hass:
        yield hass
