"""The event-loop guard catches blocking calls on the loop, and only there."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import glob
import os
from pathlib import Path
import shutil
import tarfile
import time
from typing import Any

from homeassistant.core import HomeAssistant
import pytest

from .loop_guard import BlockingError, LoopGuard


async def _stat_on_loop(path: Path) -> None:
    os.stat(path)


def _blocking_calls(tmp: Path) -> dict[str, Callable[[], Any]]:
    file = tmp / "file"
    file.write_text("x")
    return {
        "open": lambda: open(file).close(),
        "os.stat": lambda: os.stat(file),
        "os.lstat": lambda: os.lstat(file),
        "os.statvfs": lambda: os.statvfs(tmp),
        "os.listdir": lambda: os.listdir(tmp),
        "os.scandir": lambda: os.scandir(tmp).close(),
        "os.walk": lambda: next(os.walk(tmp)),
        "os.mkdir": lambda: os.mkdir(tmp / "d"),
        "os.rename": lambda: os.rename(file, tmp / "f2"),
        "os.replace": lambda: os.replace(file, tmp / "f2"),
        "os.unlink": lambda: os.unlink(file),
        "os.rmdir": lambda: os.rmdir(tmp),
        "os.chmod": lambda: os.chmod(file, 0o600),
        "os.fsync": lambda: os.fsync(0),
        "os.path.exists": lambda: os.path.exists(file),
        "os.path.isdir": lambda: os.path.isdir(tmp),
        "os.path.isfile": lambda: os.path.isfile(file),
        "os.path.ismount": lambda: os.path.ismount(tmp),
        "Path.exists": file.exists,
        "Path.stat": file.stat,
        "Path.is_dir": tmp.is_dir,
        "Path.read_text": file.read_text,
        "Path.write_bytes": lambda: file.write_bytes(b"x"),
        "Path.iterdir": lambda: list(tmp.iterdir()),
        "Path.mkdir": lambda: (tmp / "d").mkdir(),
        "Path.unlink": file.unlink,
        "shutil.copy": lambda: shutil.copy(file, tmp / "c"),
        "shutil.move": lambda: shutil.move(file, tmp / "m"),
        "shutil.rmtree": lambda: shutil.rmtree(tmp),
        "shutil.disk_usage": lambda: shutil.disk_usage(tmp),
        "glob": lambda: glob.glob(str(tmp / "*")),
        "tarfile": lambda: tarfile.open(tmp / "x.tar", "w").close(),
        "time.sleep": lambda: time.sleep(0),
    }


BLOCKING_CALLS = (
    "open", "os.stat", "os.lstat", "os.statvfs", "os.listdir", "os.scandir",
    "os.walk", "os.mkdir", "os.rename", "os.replace", "os.unlink", "os.rmdir",
    "os.chmod", "os.fsync", "os.path.exists", "os.path.isdir", "os.path.isfile",
    "os.path.ismount", "Path.exists", "Path.stat", "Path.is_dir",
    "Path.read_text", "Path.write_bytes", "Path.iterdir", "Path.mkdir",
    "Path.unlink", "shutil.copy", "shutil.move", "shutil.rmtree",
    "shutil.disk_usage", "glob", "tarfile", "time.sleep",
)  # fmt: skip


def test_every_call_is_covered(tmp_path: Path) -> None:
    """The parametrization below names every call the helper builds."""
    assert set(_blocking_calls(tmp_path)) == set(BLOCKING_CALLS)


@pytest.mark.parametrize("name", BLOCKING_CALLS)
async def test_blocking_call_on_loop_fails(
    tmp_path: Path, name: str, event_loop_guard: LoopGuard
) -> None:
    """Each blocking call raises BlockingError when made on the loop."""
    call = await asyncio.get_running_loop().run_in_executor(
        None, lambda: _blocking_calls(tmp_path)[name]
    )
    with pytest.raises(BlockingError):
        call()
    assert len(event_loop_guard.violations) >= 1
    event_loop_guard.violations.clear()


async def test_swallowed_blocking_call_is_still_recorded(
    tmp_path: Path, event_loop_guard: LoopGuard
) -> None:
    """A coroutine that calls os.stat on the loop and hides the error is caught."""

    async def sloppy() -> None:
        try:
            os.stat(tmp_path)
        except Exception:
            pass

    await sloppy()
    assert event_loop_guard.violations
    assert event_loop_guard.violations[0].startswith("os.stat")
    event_loop_guard.violations.clear()


async def test_blocking_call_in_hass_fails(
    hass: HomeAssistant, tmp_path: Path, event_loop_guard: LoopGuard
) -> None:
    """The guard is active inside Home Assistant's own test instance."""
    with pytest.raises(BlockingError):
        await hass.async_create_task(_stat_on_loop(tmp_path))
    event_loop_guard.violations.clear()


async def test_blocking_call_in_executor_passes(tmp_path: Path) -> None:
    """The same calls are fine in an executor thread."""
    loop = asyncio.get_running_loop()
    calls = await loop.run_in_executor(None, _blocking_calls, tmp_path)
    for name in ("open", "os.stat", "os.statvfs", "Path.read_text", "tarfile"):
        await loop.run_in_executor(None, calls[name])


def test_blocking_call_without_loop_passes(tmp_path: Path) -> None:
    """Synchronous tests (the engine's) are not affected."""
    calls = _blocking_calls(tmp_path)
    calls["os.stat"]()
    calls["open"]()
