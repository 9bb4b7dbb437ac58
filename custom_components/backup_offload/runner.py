"""Run a location's executor jobs so that a hung share cannot pile up threads.

A network share that stops answering blocks every thread that touches it,
for as long as the kernel waits (forever, on a hard NFS mount). Each location
therefore runs its jobs one at a time, and a job whose probe does not answer
within the timeout reports the location as not responding and is left to
finish on its own. Until it does, every further job of that location fails
at once with "not responding" instead of starting another thread
(DESIGN.md, principle 3). The runner belongs to the location's manager,
which outlives reloads of its entry: a reload does not bring a fresh runner
that would start another thread on the hung share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from homeassistant.core import HomeAssistant

from .errors import LocationUnavailableError


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

    async def run[T](self, target: Callable[..., T], *args: Any) -> T:
        """Run a short job (a probe, a listing) with the probe timeout."""
        return await self._run(target, args, checked_kwarg=False)

    async def run_checked[T](self, target: Callable[..., T], *args: Any) -> T:
        """Run an operation: only its probe is timed, not the work after it.

        ``target`` gets a ``checked`` keyword argument to call once its probe
        has passed; a backup may then take as long as it takes.
        """
        return await self._run(target, args, checked_kwarg=True)

    async def _run[T](
        self, target: Callable[..., T], args: tuple[Any, ...], *, checked_kwarg: bool
    ) -> T:
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
            checked = asyncio.Event()
            loop = self._hass.loop

            def report_checked() -> None:
                loop.call_soon_threadsafe(checked.set)

            job: asyncio.Future[T]
            if checked_kwarg:
                job = self._hass.async_add_executor_job(
                    _call_with_checked, target, args, report_checked
                )
            else:
                job = self._hass.async_add_executor_job(target, *args)
                job.add_done_callback(lambda _: checked.set())
            job.add_done_callback(_retrieve_exception)
            waiter = asyncio.ensure_future(checked.wait())
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


def _call_with_checked[T](
    target: Callable[..., T], args: tuple[Any, ...], checked: Callable[[], None]
) -> T:
    return target(*args, checked=checked)


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    """Mark the exception of an abandoned job as seen (no asyncio warning)."""
    if not future.cancelled():
        future.exception()
