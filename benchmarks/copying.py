"""The copy action against ``cp``: a backup of the local agent into a location.

Runs Home Assistant's own test harness (``async_test_home_assistant``, as the
loop benchmark does) with its ``backup`` integration, whose local agent
holds one backup of a few hundred MB in ``config/backups``. For each target
mount (a tmpfs, an ext4 file system on a loop device) and each round, it
times the ``copy`` action (stream, write, fsync, read back, compare, publish)
and ``cp`` of the same file to the same mount, alone, with a ``sync`` of the
copy, and with ``sha256sum`` of both files after that (the shell's version
of the copy's checks; it reads the copy from the page cache, ours from the
file system), side by side; each copy is removed before the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import contextlib
import hashlib
import io
import json
from pathlib import Path
import shutil
import subprocess
import tarfile
import time
from typing import Any

from .harness import add_location, running_hass

BACKUP_ID = "c0pyc0py"
# The shell's equivalents of what the copy does ($1 the source, $2 the copy):
# write, make durable, hash what was sent and what was stored.
CP = 'cp "$1" "$2"'
SYNC = 'sync -f "$2"'
SUMS = 'sha256sum "$1" "$2" >/dev/null'
_CHUNK = 1 << 20


def make_backup(path: Path, payload: int) -> Path:
    """Write a Home Assistant backup whose inner archive holds ``payload`` random bytes.

    Uncompressed and incompressible: the copy moves bytes, what they are does
    not matter. Cached: made once per size.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    inner = path.with_name(path.name + ".inner")
    blob = tarfile.TarInfo("data/blob.bin")
    blob.size = payload
    with tarfile.open(inner, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(blob, _Random(payload))
    metadata = {
        "compressed": False,
        "date": "2026-01-02T03:04:05+00:00",
        "homeassistant": {"exclude_database": False, "version": "2025.4.4"},
        "name": "Copy benchmark",
        "protected": False,
        "slug": BACKUP_ID,
        "type": "partial",
        "version": 2,
        "addons": [],
        "folders": [],
        "extra": {"instance_id": "bench", "with_automatic_settings": False},
    }
    meta = json.dumps(metadata).encode()
    info = tarfile.TarInfo("./backup.json")
    info.size = len(meta)
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(meta))
        tar.add(inner, "./homeassistant.tar")
    inner.unlink()
    partial.rename(path)
    return path


class _Random(io.RawIOBase):
    """``size`` pseudo-random bytes, made as they are read (no big buffer)."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._counter = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        out = bytearray()
        while len(out) < size:
            self._counter += 1
            out += hashlib.shake_256(self._counter.to_bytes(8)).digest(_CHUNK)
        self._left -= size
        return bytes(out[:size])


@contextlib.contextmanager
def loop_ext4(target: Path, image: Path, size_mb: int) -> Iterator[Path]:
    """Mount a fresh ext4 image of ``size_mb`` MB on ``target`` (loop device)."""
    target.mkdir(parents=True, exist_ok=True)
    image.unlink(missing_ok=True)
    with image.open("wb") as file:
        file.truncate(size_mb << 20)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0", str(image)], check=True
    )
    subprocess.run(["mount", "-o", "loop", str(image), str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)
        image.unlink(missing_ok=True)


def _timed_command(*command: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def _clear(path: Path) -> None:
    for child in path.iterdir():
        if child.name == "lost+found":
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def run_copy(
    config_dir: Path, backup: Path, targets: dict[str, Path], repeat: int
) -> dict[str, Any]:
    """Time the copy action and ``cp`` into each target; return the runs by label.

    ``backup`` is placed in ``config_dir/backups`` (Home Assistant's local
    agent); ``targets`` maps a label to a mounted, empty directory.
    """
    local = config_dir / "backups" / backup.name
    local.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(backup, local)
    size = local.stat().st_size
    results = asyncio.run(_measure(config_dir, local, size, targets, repeat))
    for rows in results.values():
        for row in rows.values():
            row["seconds"] = sorted(row["runs"])[len(row["runs"]) // 2]
            row["mb_s"] = round(size / 1e6 / row["seconds"], 1)
    return {"bytes": size, "targets": results}


async def _measure(
    config_dir: Path, local: Path, size: int, targets: dict[str, Path], repeat: int
) -> dict[str, dict[str, Any]]:
    """Run the rounds in Home Assistant; file work in its executor (loop guard)."""
    from custom_components.backup_offload.const import DOMAIN

    results: dict[str, dict[str, Any]] = {}

    def record(label: str, tool: str, seconds: float) -> None:
        row = results.setdefault(label, {}).setdefault(tool, {"runs": []})
        row["runs"].append(round(seconds, 3))

    async with running_hass(config_dir) as hass:
        for label, target in targets.items():
            entry = await add_location(hass, label, target)
            for _ in range(repeat):
                start = time.perf_counter()
                response = await hass.services.async_call(
                    DOMAIN,
                    "copy",
                    {
                        "config_entry_id": entry.entry_id,
                        "source": "backup.local",
                        "backup_id": BACKUP_ID,
                    },
                    blocking=True,
                    return_response=True,
                )
                record(label, "ours (copy action)", time.perf_counter() - start)
                assert response is not None, response
                assert response["copied"][0]["bytes"] == size, response
                await hass.services.async_call(
                    DOMAIN,
                    "delete",
                    {"config_entry_id": entry.entry_id, "backup_id": BACKUP_ID},
                    blocking=True,
                )
                copied = f"{target}/{local.name}"
                for tool, command in (
                    ("cp", ("cp", str(local), str(target))),
                    (
                        "cp + sync",
                        ("sh", "-c", f"{CP} && {SYNC}", "sh", str(local), copied),
                    ),
                    (
                        "cp + sync + sha256sum of both",
                        (
                            "sh",
                            "-c",
                            f"{CP} && {SYNC} && {SUMS}",
                            "sh",
                            str(local),
                            copied,
                        ),
                    ),
                ):
                    seconds = await hass.async_add_executor_job(
                        _timed_command, *command
                    )
                    record(label, tool, seconds)
                    await hass.async_add_executor_job(_clear, target)
            assert await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_block_till_done()
    return results
