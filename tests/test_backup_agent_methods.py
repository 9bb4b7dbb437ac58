"""The backup agent's methods directly: failures, limits and edge cases.

What the backup component itself exercises is in test_backup_agent.py;
here are the cases that are hard to reach through it: a full disk in the
middle of an upload, a stream that breaks, a file that is not a backup, a
busy or hung location, progress reports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
import errno
from pathlib import Path
import subprocess
import threading
from typing import Any

from homeassistant.components.backup import (
    AgentBackup,
    BackupAgentError,
    BackupNotFound,
)
from homeassistant.components.backup.agent import BackupAgentUnreachableError
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.backup_offload import DATA_BACKUP_AGENT_LISTENERS
from custom_components.backup_offload.backup import (
    BackupOffloadAgent,
    LocationUnreachableError,
    async_get_backup_agents,
    async_register_backup_agents_listener,
    to_agent_backup,
)
from custom_components.backup_offload.const import (
    CONF_PATH,
    CONF_REQUIRE_MOUNT,
    DOMAIN,
)
from custom_components.backup_offload.engine.metadata import TEMP_PREFIX, BackupInfo

from .common import in_executor, run, wait_until
from .engine.helpers import backup_bytes
from .mounts import fuse_passthrough, tmpfs

MiB = 1 << 20


def agent_backup(backup_id: str = "c0ffee01", size: int = 0) -> AgentBackup:
    """Return the metadata Home Assistant passes with an upload."""
    return AgentBackup(
        addons=[],
        backup_id=backup_id,
        date="2026-01-02T03:04:05+01:00",
        database_included=True,
        extra_metadata={},
        folders=[],
        homeassistant_included=True,
        homeassistant_version="2025.4.4",
        name="Uploaded",
        protected=False,
        size=size,
    )


def stream_of(
    data: bytes,
    chunk: int = 64 * 1024,
    fail_after: int | None = None,
    closed: list[bool] | None = None,
) -> Callable[[], Coroutine[Any, Any, AsyncIterator[bytes]]]:
    """Return an ``open_stream`` that yields ``data`` (and may break).

    ``closed`` gets True when the stream is closed or exhausted.
    """

    async def chunks() -> AsyncIterator[bytes]:
        try:
            for offset in range(0, len(data), chunk):
                if fail_after is not None and offset >= fail_after:
                    raise RuntimeError("the stream broke")
                yield data[offset : offset + chunk]
        finally:
            if closed is not None:
                closed.append(True)

    async def open_stream() -> AsyncIterator[bytes]:
        return chunks()

    return open_stream


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def files(hass: HomeAssistant, path: Path) -> list[str]:
    """List a directory (in the executor)."""
    return await run(hass, _files, path)


@pytest.fixture
def agent(hass: HomeAssistant, init_integration: MockConfigEntry) -> BackupOffloadAgent:
    """Return the agent of the test location."""
    return BackupOffloadAgent(hass, init_integration)


async def _read_all(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_upload_download_delete(
    hass: HomeAssistant, agent: BackupOffloadAgent, location_dir: Path
) -> None:
    """A round trip; progress is reported per written batch of small chunks."""
    data = await run(hass, backup_bytes, "c0ffee01", "Uploaded", 3 * MiB)
    progress: list[int] = []
    shown: list[tuple[str, int]] = []

    def on_progress(*, bytes_uploaded: int, **kwargs: Any) -> None:
        progress.append(bytes_uploaded)
        state = hass.states.get("sensor.nas_state")
        shown.append((state.state, state.attributes["progress"]))

    await agent.async_upload_backup(
        open_stream=stream_of(data),
        backup=agent_backup(size=len(data)),
        on_progress=on_progress,
    )
    # 64 KiB chunks are written in batches of 1 MiB, then the rest.
    assert progress == [MiB, 2 * MiB, 3 * MiB, len(data)]
    # The state sensor follows, in percent of the backup's size.
    assert shown == [
        ("creating", MiB * 100 // len(data)),
        ("creating", 2 * MiB * 100 // len(data)),
        ("creating", 3 * MiB * 100 // len(data)),
        ("creating", 100),
    ]
    state = hass.states.get("sensor.nas_state")
    assert state.state == "idle"
    assert "progress" not in state.attributes
    names = await files(hass, location_dir)
    assert names == [
        "Uploaded_2026-01-02_03.04_c0ffee01.tar",
        "Uploaded_2026-01-02_03.04_c0ffee01.tar.sha256",
    ]
    # Hidden, private while written; published as it was written.
    mode = (await run(hass, (location_dir / names[0]).stat)).st_mode
    assert mode & 0o777 == 0o600

    backup = await agent.async_get_backup("c0ffee01")
    assert backup.size == len(data)
    assert backup.name == "Uploaded"
    assert [b.backup_id for b in await agent.async_list_backups()] == ["c0ffee01"]
    assert hass.states.get("sensor.nas_backups").state == "1"

    assert await _read_all(await agent.async_download_backup("c0ffee01")) == data

    # A download that stops early closes the file.
    stream = await agent.async_download_backup("c0ffee01")
    assert len(await anext(stream)) == MiB
    await stream.aclose()  # type: ignore[attr-defined]

    await agent.async_delete_backup("c0ffee01")
    assert await files(hass, location_dir) == []
    assert hass.states.get("sensor.nas_backups").state == "0"


async def test_upload_without_progress(
    hass: HomeAssistant, agent: BackupOffloadAgent, location_dir: Path
) -> None:
    """Home Assistant 2025.4 passes no ``on_progress``."""
    data = await run(hass, backup_bytes, "c0ffee02", "Small", 1024)
    await agent.async_upload_backup(
        open_stream=stream_of(data, chunk=MiB), backup=agent_backup("c0ffee02")
    )
    assert len(await files(hass, location_dir)) == 2


@pytest.mark.parametrize(
    ("data", "backup_id", "message"),
    [
        (b"not a tar" * 1000, "c0ffee01", "not a complete Home Assistant backup"),
        # Exactly one batch: nothing is left over for a last write.
        (b"x" * MiB, "c0ffee01", "not a complete Home Assistant backup"),
        (None, "0ther1d0", "has id c0ffee01, expected 0ther1d0"),
    ],
)
async def test_upload_of_something_else(
    hass: HomeAssistant,
    agent: BackupOffloadAgent,
    location_dir: Path,
    data: bytes | None,
    backup_id: str,
    message: str,
) -> None:
    """Only a Home Assistant backup with the announced id is kept."""
    if data is None:
        data = await run(hass, backup_bytes)
    with pytest.raises(BackupAgentError, match=message) as err:
        await agent.async_upload_backup(
            open_stream=stream_of(data), backup=agent_backup(backup_id)
        )
    assert not isinstance(err.value, BackupNotFound)
    assert await files(hass, location_dir) == []


async def test_upload_stream_breaks(
    hass: HomeAssistant, agent: BackupOffloadAgent, location_dir: Path
) -> None:
    """Home Assistant's own stream error passes through; nothing is left."""
    data = await run(hass, backup_bytes, "c0ffee01", "Broken", 2 * MiB)
    with pytest.raises(RuntimeError, match="the stream broke"):
        await agent.async_upload_backup(
            open_stream=stream_of(data, fail_after=MiB + 1),
            backup=agent_backup(size=len(data)),
        )
    assert await files(hass, location_dir) == []


async def test_upload_stream_cannot_open(
    hass: HomeAssistant, agent: BackupOffloadAgent, location_dir: Path
) -> None:
    """A stream that cannot be opened, or one without ``aclose``: no leftovers."""

    async def cannot_open() -> AsyncIterator[bytes]:
        raise RuntimeError("no stream")

    with pytest.raises(RuntimeError, match="no stream"):
        await agent.async_upload_backup(open_stream=cannot_open, backup=agent_backup())

    class Plain:
        def __aiter__(self) -> Plain:
            return self

        async def __anext__(self) -> bytes:
            raise RuntimeError("plain broke")

    async def open_plain() -> AsyncIterator[bytes]:
        return Plain()

    with pytest.raises(RuntimeError, match="plain broke"):
        await agent.async_upload_backup(open_stream=open_plain, backup=agent_backup())
    assert await files(hass, location_dir) == []


async def test_upload_duplicate_id(
    hass: HomeAssistant, agent: BackupOffloadAgent, location_dir: Path
) -> None:
    """A second backup with the same id is refused before a byte is written."""
    data = await run(hass, backup_bytes)
    await agent.async_upload_backup(open_stream=stream_of(data), backup=agent_backup())
    before = await files(hass, location_dir)

    async def never_opened() -> AsyncIterator[bytes]:
        raise AssertionError("the stream must not be opened")

    with pytest.raises(BackupAgentError, match="already exists"):
        await agent.async_upload_backup(open_stream=never_opened, backup=agent_backup())
    assert await files(hass, location_dir) == before


async def test_upload_while_an_action_runs(
    hass: HomeAssistant, agent: BackupOffloadAgent, init_integration: MockConfigEntry
) -> None:
    """Upload and delete do not start while an action holds the location."""
    data = await run(hass, backup_bytes)
    await agent.async_upload_backup(open_stream=stream_of(data), backup=agent_backup())
    manager = init_integration.runtime_data.manager
    async with manager._lock:
        with pytest.raises(BackupAgentError, match="NAS is busy"):
            await agent.async_upload_backup(
                open_stream=stream_of(b""), backup=agent_backup("0ther1d0")
            )
        with pytest.raises(BackupAgentError, match="NAS") as err:
            await agent.async_delete_backup("c0ffee01")
        assert not isinstance(err.value, BackupNotFound)
    await agent.async_delete_backup("c0ffee01")


async def test_not_found(hass: HomeAssistant, agent: BackupOffloadAgent) -> None:
    """Each method says BackupNotFound for an id the location does not have."""
    with pytest.raises(BackupNotFound):
        await agent.async_get_backup("deadbeef")
    with pytest.raises(BackupNotFound):
        await agent.async_delete_backup("deadbeef")
    with pytest.raises(BackupNotFound):
        await agent.async_download_backup("deadbeef")


async def test_location_gone(
    hass: HomeAssistant, agent: BackupOffloadAgent, location_dir: Path
) -> None:
    """A location that is down is Home Assistant's "unreachable" everywhere."""
    data = await run(hass, backup_bytes)
    await agent.async_upload_backup(open_stream=stream_of(data), backup=agent_backup())
    moved = location_dir.with_name("moved")
    await run(hass, location_dir.rename, moved)

    for call in (
        agent.async_list_backups(),
        agent.async_get_backup("c0ffee01"),
        agent.async_delete_backup("c0ffee01"),
        agent.async_download_backup("c0ffee01"),
        agent.async_upload_backup(open_stream=stream_of(data), backup=agent_backup()),
    ):
        with pytest.raises(BackupAgentUnreachableError) as err:
            await call
        assert isinstance(err.value, LocationUnreachableError)
        assert str(err.value).startswith("NAS is unavailable: ")
        assert "ENOENT" in str(err.value)
    assert hass.states.get("binary_sensor.nas_connected").state == "off"
    assert len(await files(hass, moved)) == 2


async def test_read_only_location_on_delete(
    hass: HomeAssistant,
    agent: BackupOffloadAgent,
    location_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listing works but the delete's own probe (for writing) fails."""
    data = await run(hass, backup_bytes)
    await agent.async_upload_backup(open_stream=stream_of(data), backup=agent_backup())

    def read_only(path: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    # Root ignores permissions: the write test itself fails instead.
    monkeypatch.setattr(
        "custom_components.backup_offload.engine.location._write_test", read_only
    )
    with pytest.raises(BackupAgentUnreachableError, match="EROFS"):
        await agent.async_delete_backup("c0ffee01")
    assert len(await files(hass, location_dir)) == 2
    assert hass.states.get("sensor.nas_last_failure").state != "unknown"


async def test_full_disk_in_the_middle(
    hass: HomeAssistant, ha_config_dir: Path, tmp_path: Path
) -> None:
    """ENOSPC while writing: a BackupAgentError, and no partial file.

    The size Home Assistant announces is an estimate (0 here), so the probe
    lets the upload start and the disk fills up in the middle.
    """
    mount_point = tmp_path / "nas"
    data = await run(hass, backup_bytes, "c0ffee01", "Big", 3 * MiB)
    async with in_executor(hass, tmpfs(mount_point, size="1m")):
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="NAS",
            data={CONF_PATH: str(mount_point), CONF_REQUIRE_MOUNT: True},
        )
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        agent = BackupOffloadAgent(hass, entry)
        closed: list[bool] = []
        with pytest.raises(BackupAgentError, match="Not enough space") as err:
            await agent.async_upload_backup(
                open_stream=stream_of(data, closed=closed), backup=agent_backup()
            )
        assert not isinstance(err.value, BackupAgentUnreachableError)
        assert await files(hass, mount_point) == []
        # Home Assistant's stream is closed at once (it holds a file).
        assert closed == [True]

        # With the real size, the probe refuses before anything is written.
        with pytest.raises(BackupAgentError, match="bytes free") as err:
            await agent.async_upload_backup(
                open_stream=stream_of(data), backup=agent_backup(size=len(data))
            )
        assert await files(hass, mount_point) == []
        # A full disk is not an unavailable location.
        assert hass.states.get("binary_sensor.nas_connected").state == "on"
        await hass.config_entries.async_unload(entry.entry_id)


def short_timeout(entry: MockConfigEntry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the probe timeout short, so a busy or hung location shows quickly.

    Only for the part of a test that needs it: on a loaded machine, a real
    probe (a write test with fsync) may take longer than that.
    """
    runner = entry.runtime_data.coordinator.runner
    monkeypatch.setattr(runner, "_timeout", 0.3)


async def test_busy_location(
    hass: HomeAssistant,
    agent: BackupOffloadAgent,
    init_integration: MockConfigEntry,
    location_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While another job holds the location for long, the agent says "busy".

    The listing comes from the last probe then; a busy location is not a
    location that is down.
    """
    data = await run(hass, backup_bytes)
    await agent.async_upload_backup(open_stream=stream_of(data), backup=agent_backup())
    runner = init_integration.runtime_data.coordinator.runner
    short_timeout(init_integration, monkeypatch)
    release = threading.Event()

    def long_operation(checked: Callable[[], None]) -> None:
        checked()  # its probe passed: a long backup, not a hung share
        release.wait(10)

    holder = hass.async_create_task(runner.run_checked(long_operation))
    await wait_until(lambda: runner.running)
    try:
        assert [b.backup_id for b in await agent.async_list_backups()] == ["c0ffee01"]
        assert (await agent.async_get_backup("c0ffee01")).backup_id == "c0ffee01"
        with pytest.raises(BackupAgentError, match="busy") as err:
            await agent.async_download_backup("c0ffee01")
        assert not isinstance(err.value, BackupAgentUnreachableError)
        with pytest.raises(BackupAgentError, match="busy"):
            await agent.async_delete_backup("c0ffee01")
    finally:
        release.set()
        await holder
    assert len(await files(hass, location_dir)) == 2


async def test_hung_location(
    hass: HomeAssistant,
    agent: BackupOffloadAgent,
    init_integration: MockConfigEntry,
    location_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job that hangs makes the location unreachable for the agent.

    An upload that breaks then cannot clean up (that would need another
    thread on the hung share): it says so, and the leftover hidden file is
    removed at the next start.
    """
    runner = init_integration.runtime_data.coordinator.runner
    release = threading.Event()

    def hang() -> None:
        release.wait(10)

    data = await run(hass, backup_bytes, "c0ffee01", "Hung", 2 * MiB)

    async def hanging_stream() -> AsyncIterator[bytes]:
        yield data[:MiB]
        short_timeout(init_integration, monkeypatch)
        with pytest.raises(Exception, match="not responding"):
            await runner.run(hang)
        raise RuntimeError("the stream broke")

    async def open_stream() -> AsyncIterator[bytes]:
        return hanging_stream()

    try:
        with pytest.raises(RuntimeError, match="the stream broke"):
            await agent.async_upload_backup(
                open_stream=open_stream, backup=agent_backup()
            )
        assert "leftover temporary files are removed at the next start" in caplog.text
        with pytest.raises(BackupAgentUnreachableError, match="not responding"):
            await agent.async_list_backups()
        assert hass.states.get("binary_sensor.nas_connected").state == "off"
    finally:
        release.set()
    await hass.async_block_till_done()
    [leftover] = await files(hass, location_dir)
    assert leftover.startswith(TEMP_PREFIX)


def _killed(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


async def test_share_gone_during_download(
    hass: HomeAssistant, ha_config_dir: Path, tmp_path: Path
) -> None:
    """The share's connection dies while a backup is sent: the location is down.

    A read error during Home Assistant's download is "unreachable", as for
    any other operation, and the `connected` sensor goes off with the reason.
    """
    mount_point = tmp_path / "nas"
    data = await run(hass, backup_bytes, "c0ffee01", "Big", 8 * MiB)
    async with in_executor(hass, fuse_passthrough(mount_point)) as daemon:
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="NAS",
            data={CONF_PATH: str(mount_point), CONF_REQUIRE_MOUNT: True},
        )
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        agent = BackupOffloadAgent(hass, entry)
        await agent.async_upload_backup(
            open_stream=stream_of(data), backup=agent_backup()
        )
        stream = await agent.async_download_backup("c0ffee01")
        assert len(await anext(stream)) == MiB
        # Like a share whose sshfs or rclone process died: ENOTCONN.
        await run(hass, _killed, daemon)
        with pytest.raises(LocationUnreachableError, match="NAS is unavailable"):
            await _read_all(stream)
        state = hass.states.get("binary_sensor.nas_connected")
        assert state.state == "off"
        assert state.attributes["reason"] == "unreachable"
        assert "not connected" in state.attributes["error"]
        await hass.config_entries.async_unload(entry.entry_id)


async def test_unloaded_location(
    hass: HomeAssistant, agent: BackupOffloadAgent, init_integration: MockConfigEntry
) -> None:
    """An agent whose location was unloaded meanwhile says so."""
    await hass.config_entries.async_unload(init_integration.entry_id)
    with pytest.raises(BackupAgentUnreachableError, match="NAS is not loaded"):
        await agent.async_list_backups()


async def test_platform_functions(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Agents per loaded location; listeners are told, and can leave."""
    [agent] = await async_get_backup_agents(hass)
    assert agent.agent_id == f"{DOMAIN}.{init_integration.entry_id}"
    calls: list[None] = []
    remove = async_register_backup_agents_listener(
        hass, listener=lambda: calls.append(None)
    )
    await hass.config_entries.async_reload(init_integration.entry_id)
    await hass.async_block_till_done()
    assert len(calls) == 2  # unloaded, loaded
    remove()
    assert hass.data[DATA_BACKUP_AGENT_LISTENERS] == []
    await hass.config_entries.async_unload(init_integration.entry_id)
    assert len(calls) == 2
    assert await async_get_backup_agents(hass) == []


def _info(**changes: Any) -> BackupInfo:
    values: dict[str, Any] = {
        "backup_id": "abc",
        "name": "A",
        "date": "2026-01-02T03:04:05+00:00",
        "size": 10,
        "protected": True,
        "compressed": True,
        "database_included": False,
        "homeassistant_version": "2025.4.4",
        "file": "a.tar",
        "instance_id": "me",
        "made_by_us": True,
        "extra": {
            "instance_id": "me",
            "with_automatic_settings": True,
            "backup_offload": {"version": 1},
        },
    }
    return BackupInfo(**(values | changes))


def test_to_agent_backup() -> None:
    """Home Assistant gets the string and boolean extras it knows how to read."""
    backup = to_agent_backup(_info())
    assert backup.as_dict() == {
        "addons": [],
        "backup_id": "abc",
        "date": "2026-01-02T03:04:05+00:00",
        "database_included": False,
        "extra_metadata": {"instance_id": "me", "with_automatic_settings": True},
        "folders": [],
        "homeassistant_included": True,
        "homeassistant_version": "2025.4.4",
        "name": "A",
        "protected": True,
        "size": 10,
    }
    foreign = to_agent_backup(_info(homeassistant_version=None, extra={}))
    assert foreign.homeassistant_included is False
    assert foreign.extra_metadata == {}


async def test_duplicate_ids_are_no_backup(
    hass: HomeAssistant, agent: BackupOffloadAgent, location_dir: Path
) -> None:
    """Two archives with one id (a copy, or one planted): neither is offered.

    Which one would Home Assistant download and restore for that id? Neither:
    both are listed as invalid, with the reason, until one is removed.
    """
    data = await run(hass, backup_bytes)
    await agent.async_upload_backup(open_stream=stream_of(data), backup=agent_backup())
    await run(hass, (location_dir / "copy.tar").write_bytes, data)
    assert await agent.async_list_backups() == []
    with pytest.raises(BackupNotFound):
        await agent.async_get_backup("c0ffee01")
    with pytest.raises(BackupNotFound):
        await agent.async_download_backup("c0ffee01")
    listing = await hass.services.async_call(
        "backup_offload",
        "list",
        {"config_entry_id": agent.unique_id},
        blocking=True,
        return_response=True,
    )
    assert listing is not None
    invalid = listing["invalid"]
    assert isinstance(invalid, dict)
    archives = [
        name for name in await files(hass, location_dir) if name.endswith(".tar")
    ]
    assert sorted(invalid) == archives
    assert all("also in" in str(reason) for reason in invalid.values())
    await run(hass, (location_dir / "copy.tar").unlink)
    assert [b.backup_id for b in await agent.async_list_backups()] == ["c0ffee01"]
