"""Keep Home Assistant's event loop responsive while the engine works.

A Python thread that does per-file work (walking the config directory,
building tar headers) holds the GIL; when the event loop wakes up it waits
for the GIL until the holder is asked to let go, which CPython does after
the "switch interval" (5 ms by default), and with several busy threads the
loop can lose that race more than once. While an engine operation runs,
``responsive()`` lowers the interval to ``SWITCH_INTERVAL`` so the loop gets
the GIL back within about a millisecond; the previous value is restored
when the last running operation ends. The heavy parts (compression,
decompression, hashing, encryption, file I/O) run in C with the GIL
released and are not slowed by it.

The engine's own helper threads (compression, decompression) run at a
lower CPU priority (``lower_priority``), and so does the calling thread for
the duration when the process may raise it back afterwards (root, as Home
Assistant runs in its container): on a machine with two cores the event
loop then wins the CPU whenever it wakes up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
import functools
import os
import sys
import threading
from typing import Final

SWITCH_INTERVAL: Final = 0.001
"""Seconds a thread may hold the GIL while another one waits (CPython: 5 ms)."""

NICE_INCREMENT: Final = 5
"""How much lower the engine's threads run than the rest of Home Assistant."""

_lock = threading.Lock()
_active = 0
_saved = 0.0


def lower_priority() -> None:
    """Lower the calling thread's CPU priority for good (Linux; else nothing).

    For threads the engine starts and ends itself.
    """
    _renice(NICE_INCREMENT)


def _renice(increment: int) -> int | None:
    """Change this thread's nice value; return the old one (None: not done)."""
    try:
        tid = threading.get_native_id()
        old = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, max(-20, min(19, old + increment)))
    except (AttributeError, OSError):  # not Linux, or not allowed
        return None
    return old


@contextmanager
def _lowered_thread() -> Iterator[None]:
    """Run this (executor) thread at a lower priority, if it can be undone."""
    old = _renice(NICE_INCREMENT) if os.geteuid() == 0 else None
    try:
        yield
    finally:
        if old is not None:
            with suppress(OSError):  # root may always; still, never fail for it
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), old)


@contextmanager
def responsive() -> Iterator[None]:
    """Lower the GIL switch interval for the duration (nests, thread-safe)."""
    global _active, _saved  # noqa: PLW0603 - one process-wide setting
    with _lock:
        if _active == 0:
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved, SWITCH_INTERVAL))
        _active += 1
    try:
        with _lowered_thread():
            yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                sys.setswitchinterval(_saved)


def responsive_call[**P, R](func: Callable[P, R]) -> Callable[P, R]:
    """Decorate an engine entry point to run under ``responsive()``."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with responsive():
            return func(*args, **kwargs)

    return wrapper
