"""A hung location costs at most one thread, and recovers by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import threading

from homeassistant.core import HomeAssistant
import pytest

from custom_components.backup_offload.engine.errors import LocationUnavailableError
from custom_components.backup_offload.runner import LocationRunner

from .common import WAIT_LIMIT, wait_until

# Short, so that the test of a hung probe is quick.
PROBE_TIMEOUT = 0.2


class Share:
    """A stand-in for a share: calls block while it is hung."""

    def __init__(self) -> None:
        self.awake = threading.Event()
        self.awake.set()
        self.calls = 0
        self.lock = threading.Lock()

    def probe(self) -> str:
        with self.lock:
            self.calls += 1
        self.awake.wait(timeout=30)
        return "ok"

    def operation(self, checked: Callable[[], None]) -> str:
        self.probe()
        checked()
        return "done"


async def test_hung_probe_reports_not_responding(hass: HomeAssistant) -> None:
    """The first call times out; later calls fail at once without a thread."""
    share = Share()
    runner = LocationRunner(hass, "NAS", probe_timeout=PROBE_TIMEOUT)
    assert await runner.run(share.probe) == "ok"

    share.awake.clear()
    with pytest.raises(LocationUnavailableError) as err:
        await runner.run(share.probe)
    assert err.value.location_reason == "not_responding"
    assert runner.stuck
    for _ in range(5):
        with pytest.raises(LocationUnavailableError):
            await runner.run(share.probe)
        with pytest.raises(LocationUnavailableError):
            await runner.run_checked(share.operation)
    # One probe reached the share while it hung, not six or eleven.
    assert share.calls == 2

    share.awake.set()
    await wait_until(lambda: not runner.stuck)
    await hass.async_block_till_done()
    assert await runner.run_checked(share.operation) == "done"
    assert not runner.running


async def test_operation_only_its_probe_is_timed(hass: HomeAssistant) -> None:
    """Once its probe passed, an operation may take longer than the timeout."""
    runner = LocationRunner(hass, "NAS", probe_timeout=PROBE_TIMEOUT)
    probed, release = threading.Event(), threading.Event()

    def slow(checked: Callable[[], None]) -> str:
        checked()
        probed.set()
        release.wait(timeout=WAIT_LIMIT)
        return "slow but fine"

    task = hass.async_create_task(runner.run_checked(slow))
    assert await hass.async_add_executor_job(probed.wait, WAIT_LIMIT)
    # Several probe timeouts later the operation still runs, not timed out.
    await asyncio.sleep(3 * PROBE_TIMEOUT)
    assert runner.running
    assert not runner.stuck
    assert not task.done()
    release.set()
    assert await task == "slow but fine"


async def test_errors_pass_through(hass: HomeAssistant) -> None:
    """An error of the job reaches the caller; the runner stays usable."""
    runner = LocationRunner(hass, "NAS", probe_timeout=1)

    def broken() -> None:
        raise LocationUnavailableError("gone", "not_found")

    with pytest.raises(LocationUnavailableError) as err:
        await runner.run(broken)
    assert err.value.location_reason == "not_found"
    assert not runner.stuck
    assert await runner.run(lambda: 42) == 42
