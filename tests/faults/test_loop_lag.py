"""The fault tests' loop monitor sees a stalled loop (it must be able to fail)."""

from __future__ import annotations

import asyncio
import time

from homeassistant.core import HomeAssistant

from .helpers import LoopLag


async def test_loop_lag_counts_a_busy_loop(hass: HomeAssistant) -> None:
    """30 ms of work on the loop is counted, not explained away."""
    async with LoopLag() as lag:
        await asyncio.sleep(0.02)
        lag.phase = "busy"
        end = time.monotonic() + 0.030
        while time.monotonic() < end:  # work on the loop thread
            pass
        await asyncio.sleep(0.02)
    assert lag.beats > 0
    assert lag.worst >= 0.020, lag.report()
    assert any(beat[0] == "busy" for beat in lag.late), lag.report()
