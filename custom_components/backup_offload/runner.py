"""Run a location's executor jobs so that a hung share cannot pile up threads.

A network share that stops answering blocks every thread that touches it,
for as long as the kernel waits (forever, on a hard NFS mount). Each location
therefore runs its jobs one at a time, and a job whose probe does not answer
within the timeout reports the location as not responding and is left to
finish on its own. Until it does, every further job of that location fails
at once with "not responding" instead of starting another thread
(docs/architecture.md, "A hung share holds one thread"). The runner belongs
to the location's manager, which outlives reloads of its entry: a reload does
not bring a fresh runner that would start another thread on the hung share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from homeassistant.core import HomeAssistant

from .engine.errors import LocationUnavailableError


class LocationRunner:
    """Runs the executor jobs of one location, one at a time."""

    def __init__(self, hass: HomeAssistant, name: str, probe_timeout: float) -> None:
        """Set up the runner of one location."""
        self._hass = hass
        # The location's name in errors: its entry's title, as of the last load.
        self.name = name
        self._timeout = probe_timeout
        self._lock = asyncio.Lock()
        self._stuck: asyncio.Future[Any] | None = None

    @property
    def running(self) -> bool:
        """Return True while a job of this location runs."""
        return self._lock.locked()

    @property
    def stuck(self) -> bool:
        """Return True while a job that timed out still blocks a thread."""
        return self._stuck is not None and not self._stuck.done()

    def _not_responding(self) -> LocationUnavailableError:
        return LocationUnavailableError(
            f"{self.name} is not responding", "not_responding", path=self.name
        )

    async def run[T, *Ts](self, target: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run a short job (a probe, a listing) with the probe timeout."""
        return await self._run(lambda report: target(*args), checked=False)

    async def run_checked[T, *Ts](
        self, target: Callable[[*Ts, Callable[[], None]], T], *args: *Ts
    ) -> T:
        """Run an operation: only its probe is timed, not the work after it.

        ``target`` gets, after ``args``, a function to call once its probe
        has passed (``checked``); a backup may then take as long as it takes.
        """
        return await self._run(lambda report: target(*args, report), checked=True)

    async def _run[T](
        self, call: Callable[[Callable[[], None]], T], *, checked: bool
    ) -> T:
        """Run ``call(report_checked)`` in the executor, one job at a time."""
        if self.stuck:
            raise self._not_responding()
        try:
            async with asyncio.timeout(self._timeout):
                await self._lock.acquire()
        except TimeoutError:
            raise self._not_responding() from None
        try:
            if self.stuck:
                raise self._not_responding()
            passed = asyncio.Event()
            loop = self._hass.loop

            def report_checked() -> None:
                loop.call_soon_threadsafe(passed.set)

            job = self._hass.async_add_executor_job(call, report_checked)
            if not checked:
                job.add_done_callback(lambda _: passed.set())
            job.add_done_callback(_retrieve_exception)
            waiter = asyncio.ensure_future(passed.wait())
            pending: set[asyncio.Future[Any]] = {job, waiter}
            done, _ = await asyncio.wait(
                pending,
                timeout=self._timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiter.cancel()
            if not done:
                self._stuck = job
                raise self._not_responding()
            return await job
        finally:
            self._lock.release()


async def async_run_once[K, T](
    hass: HomeAssistant,
    pending: dict[K, asyncio.Future[T]],
    key: K,
    target: Callable[[], T],
    patience: float,
) -> asyncio.Future[T] | None:
    """Run ``target`` in the executor, one at a time per ``key``; wait ``patience`` s.

    Returns the finished job, or None when it did not finish in time: it
    keeps its thread until the share answers or fails, and another call with
    the same key waits for that job instead of starting another. For checks
    outside a location's runner (the config flow's check of a new path).
    """
    if (job := pending.get(key)) is None:
        job = pending[key] = hass.async_add_executor_job(target)
        job.add_done_callback(partial(_forget, pending, key))
    # Wait without cancelling: the thread cannot be stopped anyway.
    done, _ = await asyncio.wait((job,), timeout=patience)
    return job if done else None


def _forget[K, T](
    pending: dict[K, asyncio.Future[T]], key: K, job: asyncio.Future[T]
) -> None:
    """Drop a finished job; its error was seen, or nobody waits any more."""
    pending.pop(key, None)
    _retrieve_exception(job)


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    """Mark the exception of an abandoned job as seen (no asyncio warning)."""
    if not future.cancelled():
        future.exception()
