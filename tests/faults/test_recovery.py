"""A share that goes away and comes back, seen without any action called.

The probe runs on its own schedule (``PROBE_INTERVAL`` while the location is
usable, a back-off from ``PROBE_RETRY_FIRST`` to ``PROBE_RETRY_MAX`` while it
is not): an unmount shows as disconnected within a minute, a remount as
connected within half a minute, with the backups listed again. "Check now"
(a button, and the repair issue's fix) does the same at once. A press on a
location that is not mounted answers with the translated error and logs one
warning line, without a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import logging
import os
from pathlib import Path
import time
from typing import Any
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.repairs import repairs_flow_manager
from homeassistant.components.websocket_api.http import WebSocketAdapter
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.translation import async_get_translations
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from custom_components.backup_offload.const import (
    DOMAIN,
    PROBE_INTERVAL,
    PROBE_RETRY_MAX,
    PROBE_TIMEOUT,
    OperationState,
)
from tests.common import in_executor, run
from tests.mounts import read_only

from .conftest import Share, SshfsShare
from .helpers import (
    attributes,
    call,
    repair_issue,
    setup_location,
    state,
    threads_in_our_code,
)

# The measured seconds, for the record (pytest --log-cli-level=INFO shows them).
_LOGGER = logging.getLogger(__name__)
CONNECTED = "binary_sensor.nas_connected"
_WEBSOCKET_LOGGER = logging.getLogger(
    "homeassistant.components.websocket_api.http.connection"
)
# What the issue asks for, in seconds, with no action called.
OFF_WITHIN = 60.0
ON_WITHIN = 30.0


def _connected(hass: HomeAssistant, expected: str) -> Callable[[], bool]:
    return lambda: state(hass, CONNECTED) == expected


async def _step_until(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    condition: Callable[[], bool],
    limit: float,
) -> float:
    """Advance the clock a second at a time until ``condition()``; return seconds.

    Each step lets every job it started finish (a probe, a listing) before
    the next: the result is the schedule's time, not the machine's.
    """
    elapsed = 0.0
    while not condition():
        assert elapsed < limit, f"not reached within {limit} s of schedule"
        freezer.tick(1)
        elapsed += 1
        async_fire_time_changed(hass)
        await hass.async_block_till_done(wait_background_tasks=True)
    return elapsed


async def _quiet(hass: HomeAssistant, freezer: FrozenDateTimeFactory) -> None:
    """Let the first probes after setup pass (the clock starts anywhere)."""
    for _ in range(int(PROBE_INTERVAL) + 1):
        freezer.tick(1)
        async_fire_time_changed(hass)
        await hass.async_block_till_done(wait_background_tasks=True)


async def test_unmount_and_remount_seen_without_an_action(
    hass: HomeAssistant,
    ha_config_dir: Path,
    share: Share,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Unmounted: off within 60 s; mounted again: on within 30 s, backups listed.

    In schedule seconds (the clock stepped by a second), from any point of
    the schedule: the share goes away right after a probe, the worst case,
    and comes back at every step of the back-off.
    """
    entry = await setup_location(hass, share.path)
    await call(hass, "create", entry, name="kept")
    await _quiet(hass, freezer)
    assert state(hass, CONNECTED) == "on"

    await run(hass, share.unmount)
    off_after = await _step_until(hass, freezer, _connected(hass, "off"), OFF_WITHIN)
    assert off_after <= PROBE_INTERVAL
    assert attributes(hass, CONNECTED)["reason"] == "not_a_mount"
    assert state(hass, "sensor.nas_backups") == STATE_UNAVAILABLE
    assert state(hass, "button.nas_create_backup") == STATE_UNAVAILABLE
    assert repair_issue(hass, entry) is not None

    # Back after 0 s, 7 s, 2 min into the outage: the back-off has grown to
    # its maximum by then, and the return still shows within 30 s.
    recoveries = []
    for down_for in (0, 7, 120):
        for _ in range(down_for):
            freezer.tick(1)
            async_fire_time_changed(hass)
            await hass.async_block_till_done(wait_background_tasks=True)
        await run(hass, share.mount)
        on_after = await _step_until(hass, freezer, _connected(hass, "on"), ON_WITHIN)
        recoveries.append(on_after)
        assert state(hass, "sensor.nas_backups") == "1"
        assert repair_issue(hass, entry) is None
        await run(hass, share.unmount)
        await _step_until(hass, freezer, _connected(hass, "off"), OFF_WITHIN)
    assert max(recoveries) <= PROBE_RETRY_MAX, recoveries
    _LOGGER.info("schedule: off after %.0f s, on after %s s", off_after, recoveries)
    await hass.config_entries.async_unload(entry.entry_id)


async def test_read_only_and_writable_again_seen_by_the_probe(
    hass: HomeAssistant,
    ha_config_dir: Path,
    share: Share,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Remounted read-only: off within 30 s; writable again: on within 20 s."""
    assert await async_setup_component(hass, "repairs", {})
    entry = await setup_location(hass, share.path)
    await _quiet(hass, freezer)
    async with in_executor(hass, read_only(share.path, bind=True)):
        off_after = await _step_until(
            hass, freezer, _connected(hass, "off"), PROBE_INTERVAL
        )
        assert attributes(hass, CONNECTED)["reason"] == "not_writable"
        issue = repair_issue(hass, entry)
        assert issue is not None
        flows = repairs_flow_manager(hass)
        assert flows is not None
        result: Any = await flows.async_init(DOMAIN, data={"issue_id": issue.issue_id})
        assert "read-only" in result["description_placeholders"]["error"]
        result = await flows.async_configure(result["flow_id"], {})
        assert result["errors"] == {"base": "still_unavailable"}
    on_after = await _step_until(hass, freezer, _connected(hass, "on"), PROBE_RETRY_MAX)
    assert repair_issue(hass, entry) is None
    _LOGGER.info("read-only: off after %.0f s, on after %.0f s", off_after, on_after)
    await hass.config_entries.async_unload(entry.entry_id)


async def test_real_time_with_short_intervals(
    hass: HomeAssistant, ha_config_dir: Path, share: Share
) -> None:
    """The same on the real clock, the intervals scaled down 30 times.

    Seconds measured with time.monotonic from the unmount (mount) to the
    sensor's state; nothing steps the clock. RECOVERY_SCALE=1 measures the
    default intervals themselves (about two and a half minutes).
    """
    scale = float(os.environ.get("RECOVERY_SCALE", "30"))
    with (
        patch(f"{_COORDINATOR}.PROBE_INTERVAL", PROBE_INTERVAL / scale),
        patch(f"{_COORDINATOR}.PROBE_RETRY_FIRST", 5 / scale),
        patch(f"{_COORDINATOR}.PROBE_RETRY_MAX", PROBE_RETRY_MAX / scale),
    ):
        entry = await setup_location(hass, share.path)
        await call(hass, "create", entry, name="kept")

        await run(hass, share.unmount)
        off_after = await _real_until(hass, _connected(hass, "off"), OFF_WITHIN / scale)
        await asyncio.sleep(5 * PROBE_RETRY_MAX / scale)  # well into the back-off
        await run(hass, share.mount)
        on_after = await _real_until(hass, _connected(hass, "on"), ON_WITHIN / scale)
        assert state(hass, "sensor.nas_backups") == "1"
        _LOGGER.info("real: off after %.3f s, on after %.3f s", off_after, on_after)
        await hass.config_entries.async_unload(entry.entry_id)


_COORDINATOR = "custom_components.backup_offload.coordinator"


async def _real_until(
    hass: HomeAssistant, condition: Callable[[], bool], limit: float
) -> float:
    """Wait on the real clock until ``condition()``; return the seconds taken."""
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < limit, f"not reached within {limit:.2f} s"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def test_hung_share_probed_with_one_thread(
    hass: HomeAssistant,
    ha_config_dir: Path,
    sshfs_share: SshfsShare,
) -> None:
    """A frozen server: off after the probe timeout; the probes add no thread.

    Real time, short intervals and timeout: the probes keep coming while one
    thread hangs on the share, and each fails at once; the server answers
    again and the location is back without an action.
    """
    timeout = 1.0
    with (
        patch("custom_components.backup_offload.PROBE_TIMEOUT", timeout),
        patch(f"{_COORDINATOR}.PROBE_INTERVAL", 0.5),
        patch(f"{_COORDINATOR}.PROBE_RETRY_FIRST", 0.1),
        patch(f"{_COORDINATOR}.PROBE_RETRY_MAX", 0.3),
    ):
        entry = await setup_location(hass, sshfs_share.path)
        runner = entry.runtime_data.coordinator.runner
        await run(hass, sshfs_share.server.stop)
        off_after = await _real_until(hass, _connected(hass, "off"), 0.5 + timeout + 1)
        assert attributes(hass, CONNECTED)["reason"] == "not_responding"
        assert runner.stuck
        # Many probes later, still the one thread that hangs.
        for _ in range(10):
            await asyncio.sleep(0.3)
            assert len(threads_in_our_code()) == 1, threads_in_our_code()
        await run(hass, sshfs_share.server.resume)
        on_after = await _real_until(hass, _connected(hass, "on"), 5.0)
        assert not runner.stuck
        _LOGGER.info("hung: off after %.3f s, on after %.3f s", off_after, on_after)
        await hass.config_entries.async_unload(entry.entry_id)


async def test_check_now_button(
    hass: HomeAssistant, ha_config_dir: Path, share: Share
) -> None:
    """The button probes and lists at once, and can be pressed while down."""
    entry = await setup_location(hass, share.path)
    await call(hass, "create", entry, name="kept")

    await run(hass, share.unmount)
    assert state(hass, CONNECTED) == "on"  # nothing has looked yet
    await _press(hass, "button.nas_check_now")
    assert state(hass, CONNECTED) == "off"
    assert state(hass, "button.nas_check_now") != STATE_UNAVAILABLE
    assert repair_issue(hass, entry) is not None

    await run(hass, share.mount)
    await _press(hass, "button.nas_check_now")
    assert state(hass, CONNECTED) == "on"
    assert state(hass, "sensor.nas_backups") == "1"
    assert repair_issue(hass, entry) is None
    assert entry.runtime_data.coordinator.problem() is None
    await hass.config_entries.async_unload(entry.entry_id)


async def _press(hass: HomeAssistant, entity_id: str) -> None:
    await hass.services.async_call(
        "button", "press", {"entity_id": entity_id}, blocking=True
    )


async def test_fix_flow(hass: HomeAssistant, ha_config_dir: Path, share: Share) -> None:
    """The repair checks the location: still down, it says why; back, it closes."""
    assert await async_setup_component(hass, "repairs", {})
    entry = await setup_location(hass, share.path)
    await run(hass, share.unmount)
    await entry.runtime_data.coordinator.async_refresh()
    issue = repair_issue(hass, entry)
    assert issue is not None
    assert issue.is_fixable

    flows = repairs_flow_manager(hass)
    assert flows is not None
    result: Any = await flows.async_init(DOMAIN, data={"issue_id": issue.issue_id})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "confirm"
    assert result["errors"] == {}
    # What is wrong, where and what to do, each once.
    texts = await async_get_translations(hass, "en", "issues", [DOMAIN])
    description = texts[
        f"component.{DOMAIN}.issues.location_unavailable.fix_flow.step.confirm"
        ".description"
    ].format(**result["description_placeholders"])
    assert description.startswith(
        f"Location NAS is unavailable: nothing is mounted at {share.path}."
        " Mount the share or disk; nothing was written.\n\n"
    )
    assert description.count(str(share.path)) == 1

    # Still down: the form again, with the error and what is wrong now.
    result = await flows.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "still_unavailable"}
    assert "nothing is mounted at" in result["description_placeholders"]["error"]
    assert repair_issue(hass, entry) is not None

    # Back: the check lists it, the issue is gone, the flow ends.
    await run(hass, share.mount)
    result = await flows.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert repair_issue(hass, entry) is None
    assert state(hass, CONNECTED) == "on"
    await hass.config_entries.async_unload(entry.entry_id)


async def test_fix_flow_of_an_unloaded_location(
    hass: HomeAssistant, ha_config_dir: Path, share: Share
) -> None:
    """A location that is not loaded any more: the flow aborts, translated."""
    assert await async_setup_component(hass, "repairs", {})
    entry = await setup_location(hass, share.path)
    await run(hass, share.unmount)
    await entry.runtime_data.coordinator.async_refresh()
    issue = repair_issue(hass, entry)
    assert issue is not None
    await hass.config_entries.async_unload(entry.entry_id)
    flows = repairs_flow_manager(hass)
    assert flows is not None
    result: Any = await flows.async_init(DOMAIN, data={"issue_id": issue.issue_id})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "not_loaded"


async def _press_over_websocket(
    hass: HomeAssistant, hass_ws_client: Any, entity_id: str
) -> dict[str, Any]:
    """Press a button as the frontend does; return the websocket's answer."""
    client = await hass_ws_client(hass)
    await client.send_json_auto_id(
        {
            "type": "call_service",
            "domain": "button",
            "service": "press",
            "target": {"entity_id": entity_id},
        }
    )
    answer: dict[str, Any] = await client.receive_json()
    await hass.async_block_till_done()
    return answer


async def test_press_while_unmounted_logs_one_warning(
    hass: HomeAssistant,
    ha_config_dir: Path,
    share: Share,
    hass_ws_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A press before anything noticed the unmount: toast, one warning, no trace."""
    assert await async_setup_component(hass, "websocket_api", {})
    entry = await setup_location(hass, share.path)
    await run(hass, share.unmount)
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        answer = await _press_over_websocket(
            hass, hass_ws_client, "button.nas_create_backup"
        )

    assert not answer["success"]
    error = answer["error"]
    assert error["code"] == "home_assistant_error"
    assert error["translation_domain"] == DOMAIN
    assert error["translation_key"] == "location_not_a_mount"
    assert "nothing is mounted at" in error["message"]
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in records] == ["WARNING"], [
        (r.levelname, r.name, r.getMessage()) for r in records
    ]
    assert "NAS: creating failed" in records[0].getMessage()
    assert not any(r.exc_info for r in caplog.records if r.levelno > logging.DEBUG)
    assert state(hass, CONNECTED) == "off"
    await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize(
    ("service", "warning"),
    [("create", "NAS: creating failed"), ("list", "NAS: Location NAS is unavailable")],
)
async def test_action_while_unmounted_logs_one_warning(
    hass: HomeAssistant,
    ha_config_dir: Path,
    share: Share,
    hass_ws_client: Any,
    caplog: pytest.LogCaptureFixture,
    service: str,
    warning: str,
) -> None:
    """An action from Developer tools on a share that is gone: one warning."""
    assert await async_setup_component(hass, "websocket_api", {})
    entry = await setup_location(hass, share.path)
    await run(hass, share.unmount)
    caplog.clear()
    client = await hass_ws_client(hass)
    with caplog.at_level(logging.DEBUG):
        await client.send_json_auto_id(
            {
                "type": "call_service",
                "domain": DOMAIN,
                "service": service,
                "service_data": {"config_entry_id": entry.entry_id},
                "return_response": True,
            }
        )
        answer: dict[str, Any] = await client.receive_json()
        await hass.async_block_till_done()

    assert not answer["success"]
    assert answer["error"]["translation_key"] == "location_not_a_mount"
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in records] == ["WARNING"], [
        (r.levelname, r.name, r.getMessage()) for r in records
    ]
    assert records[0].getMessage().startswith(warning)
    assert not any(r.exc_info for r in caplog.records if r.levelno > logging.DEBUG)
    await hass.config_entries.async_unload(entry.entry_id)


async def test_press_while_busy_logs_one_warning(
    hass: HomeAssistant,
    ha_config_dir: Path,
    share: Share,
    hass_ws_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second press while a backup runs: refused, one warning, no trace."""
    assert await async_setup_component(hass, "websocket_api", {})
    entry = await setup_location(hass, share.path)
    manager = entry.runtime_data.manager
    caplog.clear()
    async with manager.operation(OperationState.CREATING):
        answer = await _press_over_websocket(
            hass, hass_ws_client, "button.nas_create_backup"
        )
    assert answer["error"]["translation_key"] == "busy"
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in records] == ["WARNING"], [
        (r.levelname, r.name, r.getMessage()) for r in records
    ]
    assert not any(r.exc_info for r in records)
    await hass.config_entries.async_unload(entry.entry_id)


def test_defaults_meet_the_targets() -> None:
    """What the defaults guarantee, whatever the machine.

    Gone: seen at the next probe, at most PROBE_INTERVAL later; a share that
    hangs takes PROBE_TIMEOUT more to fail. Back: seen at the next probe of
    the back-off, at most PROBE_RETRY_MAX later, which leaves the rest of the
    30 s for the probe and the listing.
    """
    assert PROBE_INTERVAL + PROBE_TIMEOUT <= OFF_WITHIN
    assert PROBE_RETRY_MAX + PROBE_TIMEOUT / 2 <= ON_WITHIN


async def test_message_only_record_of_a_press_dropped(
    hass: HomeAssistant,
    ha_config_dir: Path,
    share: Share,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Later Home Assistant versions log the message alone: dropped as well.

    They log ``connection.logger.error(err)`` through the websocket's logger
    adapter ("[connection id] message"); that call is made here as they
    make it, with the error of a real press.
    """
    entry = await setup_location(hass, share.path)
    await run(hass, share.unmount)
    with pytest.raises(HomeAssistantError) as err:
        await _press(hass, "button.nas_create_backup")
    caplog.clear()
    connection_logger = WebSocketAdapter(_WEBSOCKET_LOGGER, {"connid": 1234})
    connection_logger.error(err.value)
    connection_logger.error("something else")
    assert [r.getMessage() for r in caplog.records] == ["[1234] something else"]
    await hass.config_entries.async_unload(entry.entry_id)
