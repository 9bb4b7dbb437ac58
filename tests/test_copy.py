"""The copy action with Home Assistant's real backup component.

Backups are made by Home Assistant's own local agent (``backup.local``) and
by this integration, and copied into locations on real mounts. The
Supervisor's agent (``hassio.local``) is stood in for by ``StandInAgent``, a
backup agent of Home Assistant's interface whose stream the test controls:
the only thing mocked, because there is no Supervisor here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import dataclasses
import hashlib
import os
from pathlib import Path
import signal
import threading
from typing import Any

from homeassistant.components.backup import (
    AgentBackup,
    BackupAgent,
    BackupNotFound,
)
from homeassistant.components.backup.const import DATA_MANAGER
from homeassistant.core import Event, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
)

from custom_components.backup_offload import copying
from custom_components.backup_offload.const import EVENT_BACKUP_COPIED
from custom_components.backup_offload.engine import transfer
from custom_components.backup_offload.engine.metadata import TEMP_PREFIX

from .common import (
    agent_id,
    call,
    in_executor,
    run,
    setup_backup_component,
    setup_location,
    wait_until,
    ws,
)
from .engine.helpers import backup_bytes
from .mounts import fuse_passthrough, lazy_unmount, tmpfs, unmount

MiB = 1 << 20
SUPERVISOR = "hassio.local"


# --- helpers ------------------------------------------------------------------


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def files(hass: HomeAssistant, path: Path) -> list[str]:
    """List a directory (in the executor)."""
    return await run(hass, _files, path)


def _archives(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix == ".tar")


async def archives(hass: HomeAssistant, path: Path) -> list[Path]:
    """Return the backup archives in a directory (in the executor)."""
    return await run(hass, _archives, path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _temporary(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def _flip_byte(path: Path, offset: int) -> None:
    """Change one byte of a file in place (someone else writing to it)."""
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


def _write_config_blob(config_dir: Path, size: int) -> None:
    """Put incompressible bytes into the configuration (a backup of a few MiB)."""
    (config_dir / "www").mkdir(exist_ok=True)
    with (config_dir / "www" / "blob.bin").open("wb") as file:
        file.write(hashlib.shake_256(b"copy test").digest(size))


def agent_backup_of(data: bytes, backup_id: str, name: str) -> AgentBackup:
    """Return the metadata of a stand-in backup, as an agent lists it."""
    return AgentBackup(
        addons=[],
        backup_id=backup_id,
        date="2026-01-02T03:04:05+01:00",
        database_included=True,
        extra_metadata={},
        folders=[],
        homeassistant_included=True,
        homeassistant_version="2025.4.4",
        name=name,
        protected=False,
        size=len(data),
    )


class StandInAgent(BackupAgent):
    """Stands in for the Supervisor's agent: Home Assistant's agent interface.

    Backups are bytes in memory; ``on_chunk`` runs before each chunk (with
    its offset), ``on_end`` once the last chunk was taken, ``fail_after``
    breaks the stream there, ``pause`` waits before each chunk (``hang``
    forever); ``fail_open`` and ``fail_delete`` make the download and the
    delete fail.
    """

    domain = "hassio"
    name = "Supervisor (stand-in)"
    unique_id = "local"

    def __init__(self) -> None:
        """Start without backups."""
        super().__init__()
        self.backups: dict[str, tuple[AgentBackup, bytes]] = {}
        self.deleted: list[str] = []
        self.calls: list[str] = []
        self.chunk = MiB
        self.fail_after: int | None = None
        self.fail_open = False
        self.fail_delete = False
        self.pause = 0.0
        self.hang = False
        self.on_end: Callable[[], Any] | None = None
        self.on_chunk: Callable[[int], Any] | None = None
        self.closed = False

    def add(self, data: bytes, backup_id: str, name: str = "Supervisor") -> None:
        """Hold a backup."""
        self.backups[backup_id] = (agent_backup_of(data, backup_id, name), data)

    async def async_download_backup(
        self, backup_id: str, **kwargs: Any
    ) -> AsyncIterator[bytes]:
        """Stream a backup in ``chunk`` pieces."""
        self.calls.append("download")
        if backup_id not in self.backups:
            raise BackupNotFound(backup_id)
        if self.fail_open:
            raise HomeAssistantError("Supervisor answered 500")
        return self._chunks(self.backups[backup_id][1])

    async def _chunks(self, data: bytes) -> AsyncIterator[bytes]:
        try:
            for offset in range(0, len(data), self.chunk):
                if self.fail_after is not None and offset >= self.fail_after:
                    raise ConnectionResetError("the Supervisor went away")
                if self.hang:
                    await asyncio.Event().wait()
                await asyncio.sleep(self.pause)
                if self.on_chunk is not None:
                    await self.on_chunk(offset)
                yield data[offset : offset + self.chunk]
            if self.on_end is not None:
                await self.on_end()
        finally:
            self.closed = True

    async def async_upload_backup(self, **kwargs: Any) -> None:
        """Not used by a copy from here."""
        raise NotImplementedError

    async def async_delete_backup(self, backup_id: str, **kwargs: Any) -> None:
        """Forget a backup."""
        self.calls.append("delete")
        if self.fail_delete:
            raise HomeAssistantError("Supervisor refused to delete")
        self.backups.pop(backup_id)
        self.deleted.append(backup_id)

    async def async_list_backups(self, **kwargs: Any) -> list[AgentBackup]:
        """List the backups held."""
        self.calls.append("list")
        return [backup for backup, _ in self.backups.values()]

    async def async_get_backup(self, backup_id: str, **kwargs: Any) -> AgentBackup:
        """Return one backup held."""
        self.calls.append("get")
        if backup_id not in self.backups:
            raise BackupNotFound(backup_id)
        return self.backups[backup_id][0]


@pytest.fixture
async def nas(
    hass: HomeAssistant, ha_config_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[MockConfigEntry, Path]]:
    """A location on a real tmpfs mount (mount required), and the backup component."""
    mount_point = tmp_path / "nas"
    async with in_executor(hass, tmpfs(mount_point, size="64m")):
        entry = await setup_location(hass, mount_point, title="NAS")
        await setup_backup_component(hass)
        yield entry, mount_point
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()


@pytest.fixture
def supervisor(hass: HomeAssistant, nas: tuple[MockConfigEntry, Path]) -> StandInAgent:
    """The Supervisor's agent, stood in for, in Home Assistant's backup manager."""
    agent = StandInAgent()
    hass.data[DATA_MANAGER].backup_agents[agent.agent_id] = agent
    return agent


async def _generate_local(hass: HomeAssistant, client: Any, name: str) -> str:
    """Make a backup with Home Assistant's own local agent; return its id."""
    result = await ws(
        client, type="backup/generate", agent_ids=["backup.local"], name=name
    )
    await hass.async_block_till_done()
    return str(result["backup_job_id"])


async def copy(
    hass: HomeAssistant, entry: MockConfigEntry, source: str, **data: Any
) -> dict[str, Any]:
    """Call the copy action; return its response."""
    return await call(hass, "copy", entry, source=source, **data)


def states_of(hass: HomeAssistant, entity_id: str) -> list[tuple[str, Any]]:
    """Record the states (and progress) an entity goes through from now on."""
    seen: list[tuple[str, Any]] = []

    def changed(event: Event[Any]) -> None:
        state = event.data["new_state"]
        if state is not None and event.data["entity_id"] == entity_id:
            seen.append((state.state, state.attributes.get("progress")))

    hass.bus.async_listen("state_changed", changed)
    return seen


# --- from Home Assistant's local agent -----------------------------------------


async def test_copy_then_move_from_local(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    ha_config_dir: Path,
    hass_ws_client: Any,
) -> None:
    """A local backup is copied (both keep it), another one moved (only here).

    The copy is the local file byte for byte, under its backup_id, with its
    sidecar; the state sensor shows ``copying`` with its progress; the event
    fires; Home Assistant's backup page lists the backup in both places
    until the source copy is deleted.
    """
    entry, mount_point = nas
    await run(hass, _write_config_blob, ha_config_dir, 3 * MiB)
    client = await hass_ws_client(hass)
    kept = await _generate_local(hass, client, "Kept")
    moved = await _generate_local(hass, client, "Moved")
    local = {p.name: p for p in await archives(hass, ha_config_dir / "backups")}
    copied_events = async_capture_events(hass, EVENT_BACKUP_COPIED)
    shown = states_of(hass, "sensor.nas_state")

    response = await copy(hass, entry, "backup.local", backup_id=kept)
    assert response["source"] == "backup.local"
    assert response["already_present"] == []
    assert response["deleted_from_source"] == []
    assert response["failed"] == []
    [done] = response["copied"]
    assert done["backup"]["backup_id"] == kept
    assert done["backup"]["name"] == "Kept"
    assert done["seconds"] >= 0
    [archive] = await archives(hass, mount_point)
    assert done["backup"]["file"] == archive.name
    assert done["bytes"] == (await run(hass, archive.stat)).st_size > 3 * MiB
    [original] = [p for p in local.values() if kept in await run(hass, _backup_id, p)]
    assert await run(hass, archive.read_bytes) == await run(hass, original.read_bytes)
    digest = await run(hass, _sha256, archive)
    assert done["sha256"] == digest
    sidecar = archive.with_name(archive.name + ".sha256")
    assert await run(hass, sidecar.read_text) == f"{digest}  {archive.name}\n"
    assert await run(hass, original.exists)
    assert shown[0] == ("copying", 0)
    assert ("copying", 100) in shown
    assert shown[-1] == ("idle", None)
    [event] = copied_events
    assert event.data == {
        "config_entry_id": entry.entry_id,
        "location": "NAS",
        "backup_id": kept,
        "name": "Kept",
        "source": "backup.local",
        "bytes": done["bytes"],
        "seconds": done["seconds"],
        "sha256": digest,
        "deleted_from_source": False,
    }
    info = await ws(client, type="backup/info")
    by_id = {b["backup_id"]: b for b in info["backups"]}
    assert set(by_id[kept]["agents"]) == {"backup.local", agent_id(entry)}

    response = await copy(
        hass, entry, "backup.local", backup_id=moved, delete_source=True
    )
    assert [c["backup"]["backup_id"] for c in response["copied"]] == [moved]
    assert response["deleted_from_source"] == [moved]
    assert copied_events[-1].data["deleted_from_source"] is True
    remaining = await archives(hass, ha_config_dir / "backups")
    assert [await run(hass, _backup_id, p) for p in remaining] == [kept]
    info = await ws(client, type="backup/info")
    by_id = {b["backup_id"]: b for b in info["backups"]}
    assert set(by_id[moved]["agents"]) == {agent_id(entry)}
    assert set(by_id[kept]["agents"]) == {"backup.local", agent_id(entry)}
    assert len(await files(hass, mount_point)) == 4
    assert hass.states.get("sensor.nas_backups").state == "2"


def _backup_id(path: Path) -> str:
    """Return the backup_id Home Assistant's local agent reads from an archive."""
    from homeassistant.components.backup.util import read_backup

    return read_backup(path).backup_id


async def test_sync_copies_only_what_is_missing(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    hass_ws_client: Any,
) -> None:
    """Without a backup_id, every local backup the location lacks is copied."""
    entry, mount_point = nas
    client = await hass_ws_client(hass)
    first = await _generate_local(hass, client, "First")
    await copy(hass, entry, "backup.local", backup_id=first)
    second = await _generate_local(hass, client, "Second")
    third = await _generate_local(hass, client, "Third")

    response = await copy(hass, entry, "backup.local")
    assert {c["backup"]["backup_id"] for c in response["copied"]} == {second, third}
    assert response["already_present"] == [first]
    assert response["failed"] == []
    assert len(await archives(hass, mount_point)) == 3

    # Nothing missing any more: a second sync copies nothing.
    response = await copy(hass, entry, "backup.local")
    assert response["copied"] == []
    assert set(response["already_present"]) == {first, second, third}
    assert response["deleted_from_source"] == []


async def test_move_frees_the_source_of_what_is_already_here(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    ha_config_dir: Path,
    hass_ws_client: Any,
) -> None:
    """A nightly move also deletes the local copy of a backup made to both.

    Home Assistant's automatic backups often go to its own storage and to
    the location at once: the move compares the two byte for byte and
    deletes the source's.
    """
    entry, mount_point = nas
    client = await hass_ws_client(hass)
    both = await ws(
        client,
        type="backup/generate",
        agent_ids=["backup.local", agent_id(entry)],
        name="Both",
    )
    await hass.async_block_till_done()
    both_id = str(both["backup_job_id"])
    only_local = await _generate_local(hass, client, "Only local")
    copied_events = async_capture_events(hass, EVENT_BACKUP_COPIED)

    response = await copy(hass, entry, "backup.local", delete_source=True)
    assert [c["backup"]["backup_id"] for c in response["copied"]] == [only_local]
    assert response["already_present"] == [both_id]
    assert set(response["deleted_from_source"]) == {both_id, only_local}
    assert response["failed"] == []
    # An event for the copy only: the other one was not copied now.
    assert [e.data["backup_id"] for e in copied_events] == [only_local]
    assert await archives(hass, ha_config_dir / "backups") == []
    assert len(await archives(hass, mount_point)) == 2


async def test_move_keeps_a_source_that_only_shares_the_id(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    supervisor: StandInAgent,
) -> None:
    """A backup here with the same id but other bytes: the source keeps its own."""
    entry, mount_point = nas
    first = await run(hass, backup_bytes, "d1ffe4e5", "Same id", 64 * 1024)
    supervisor.add(first, "d1ffe4e5")
    await copy(hass, entry, SUPERVISOR, backup_id="d1ffe4e5")
    other = await run(hass, backup_bytes, "d1ffe4e5", "Same id", 64 * 1024)
    assert other != first
    supervisor.add(other, "d1ffe4e5")

    response = await copy(hass, entry, SUPERVISOR, delete_source=True)
    assert response["copied"] == []
    assert response["already_present"] == ["d1ffe4e5"]
    assert response["deleted_from_source"] == []
    [failure] = response["failed"]
    assert failure["backup_id"] == "d1ffe4e5"
    assert failure["stage"] == "delete_source"
    assert failure["reason"] == "copy_mismatch"
    assert supervisor.deleted == []
    [archive] = await archives(hass, mount_point)
    assert await run(hass, archive.read_bytes) == first

    # A source that cannot be read for the comparison keeps its backup too.
    supervisor.fail_open = True
    response = await copy(hass, entry, SUPERVISOR, delete_source=True)
    [failure] = response["failed"]
    assert (failure["stage"], failure["reason"]) == (
        "delete_source",
        "copy_source_failed",
    )
    assert supervisor.deleted == []


async def test_copy_encrypted_as_is(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    ha_config_dir: Path,
    hass_ws_client: Any,
) -> None:
    """An encrypted backup is copied byte for byte, without its password."""
    entry, mount_point = nas
    client = await hass_ws_client(hass)
    result = await ws(
        client,
        type="backup/generate",
        agent_ids=["backup.local"],
        name="Secret",
        password="s3cret",
    )
    await hass.async_block_till_done()
    backup_id = result["backup_job_id"]
    response = await copy(hass, entry, "backup.local", backup_id=backup_id)
    assert response["copied"][0]["backup"]["protected"] is True
    [original] = await archives(hass, ha_config_dir / "backups")
    [archive] = await archives(hass, mount_point)
    assert await run(hass, archive.read_bytes) == await run(hass, original.read_bytes)


# --- between two locations ------------------------------------------------------


async def test_move_between_locations(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    ha_config_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backup of one location is moved into another, one thread per location."""
    entry, mount_point = nas
    disk_path = tmp_path / "disk"
    await run(hass, disk_path.mkdir)
    disk = await setup_location(hass, disk_path, title="Disk", require_mount=False)
    await run(hass, _write_config_blob, ha_config_dir, 3 * MiB)
    created = await call(hass, "create", entry, name="On the NAS")
    backup_id = created["backup"]["backup_id"]
    original = await run(hass, (mount_point / created["backup"]["file"]).read_bytes)
    threads = _count_threads(
        monkeypatch,
        source=("open_backup", "read_chunk", "close_download"),
        target=("start_upload", "write_chunk", "finish_upload", "abort_upload"),
    )

    response = await copy(
        hass, disk, agent_id(entry), backup_id=backup_id, delete_source=True
    )
    assert [c["backup"]["backup_id"] for c in response["copied"]] == [backup_id]
    assert response["deleted_from_source"] == [backup_id]
    [archive] = await archives(hass, disk_path)
    assert await run(hass, archive.read_bytes) == original
    assert await files(hass, mount_point) == []
    assert hass.states.get("sensor.nas_backups").state == "0"
    assert hass.states.get("sensor.disk_backups").state == "1"
    assert threads == {"source": 1, "target": 1}

    # A location cannot copy from itself.
    with pytest.raises(ServiceValidationError) as err:
        await copy(hass, disk, agent_id(disk))
    assert err.value.translation_key == "copy_same_location"


def _count_threads(
    monkeypatch: pytest.MonkeyPatch,
    *,
    source: tuple[str, ...],
    target: tuple[str, ...],
) -> dict[str, int]:
    """Record the most jobs each side ran at once (each job holds a thread)."""
    peak = {"source": 0, "target": 0}
    active = {"source": 0, "target": 0}
    lock = threading.Lock()

    def counted(side: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                active[side] += 1
                peak[side] = max(peak[side], active[side])
            try:
                return func(*args, **kwargs)
            finally:
                with lock:
                    active[side] -= 1

        return wrapper

    for side, names in (("source", source), ("target", target)):
        for name in names:
            monkeypatch.setattr(transfer, name, counted(side, getattr(transfer, name)))
    return peak


# --- the Supervisor, stood in for ---------------------------------------------


async def test_copy_from_supervisor(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    supervisor: StandInAgent,
) -> None:
    """A streaming agent's backup is moved; a slow stream holds no thread.

    Between two chunks of a source that takes its time, no job of the
    location runs: the location's thread is not held while the source is
    waited for.
    """
    entry, mount_point = nas
    data = await run(hass, backup_bytes, "5e1ec7ed", "Supervisor", 3 * MiB)
    supervisor.add(data, "5e1ec7ed")
    supervisor.pause = 0.05
    runner = entry.runtime_data.coordinator.runner
    between: list[bool] = []

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.01)
            between.append(runner.running)

    watcher = asyncio.create_task(watch())
    response = await copy(hass, entry, SUPERVISOR, delete_source=True)
    watcher.cancel()
    assert [c["backup"]["backup_id"] for c in response["copied"]] == ["5e1ec7ed"]
    assert supervisor.deleted == ["5e1ec7ed"]
    assert supervisor.closed
    [archive] = await archives(hass, mount_point)
    assert await run(hass, archive.read_bytes) == data
    # Mostly idle while the source pauses: the thread is not held.
    assert between.count(False) > between.count(True)


async def test_read_back_differs(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    supervisor: StandInAgent,
) -> None:
    """A copy whose read-back differs counts as failed: nothing deleted or left.

    The stored file is changed after it was written (someone else writing
    to the share): read back, it no longer hashes to what the source sent.
    """
    entry, mount_point = nas
    data = await run(hass, backup_bytes, "5e1ec7ed", "Supervisor", 4 * MiB)
    supervisor.add(data, "5e1ec7ed")

    async def corrupt() -> None:
        [temp] = await run(hass, _temporary, mount_point)
        # Well inside the first MiB, written long before this last chunk.
        await run(hass, _flip_byte, temp, 512 * 1024)

    supervisor.on_end = corrupt
    with pytest.raises(HomeAssistantError) as err:
        await copy(hass, entry, SUPERVISOR, backup_id="5e1ec7ed", delete_source=True)
    assert err.value.translation_key == "copy_mismatch"
    assert "does not match" in str(err.value)
    assert await files(hass, mount_point) == []
    assert supervisor.deleted == []
    assert "5e1ec7ed" in supervisor.backups

    # In a sync, the failure is listed and the others are copied.
    supervisor.add(await run(hass, backup_bytes, "0a0b0c0d", "Other", MiB), "0a0b0c0d")
    corrupted: list[bool] = []

    async def corrupt_once() -> None:
        if not corrupted:
            corrupted.append(True)
            await corrupt()

    supervisor.on_end = corrupt_once
    response = await copy(hass, entry, SUPERVISOR, delete_source=True)
    [failure] = response["failed"]
    assert failure["backup_id"] == "5e1ec7ed"
    assert failure["stage"] == "copy"
    assert failure["reason"] == "copy_mismatch"
    assert [c["backup"]["backup_id"] for c in response["copied"]] == ["0a0b0c0d"]
    assert supervisor.deleted == ["0a0b0c0d"]
    assert len(await archives(hass, mount_point)) == 1
    assert await run(hass, _temporary, mount_point) == []


async def test_source_fails_mid_stream(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    supervisor: StandInAgent,
) -> None:
    """A source that breaks mid-stream leaves no temporary file; it keeps its backup."""
    entry, mount_point = nas
    data = await run(hass, backup_bytes, "5e1ec7ed", "Supervisor", 4 * MiB)
    supervisor.add(data, "5e1ec7ed")
    supervisor.fail_after = 2 * MiB
    with pytest.raises(HomeAssistantError) as err:
        await copy(hass, entry, SUPERVISOR, backup_id="5e1ec7ed", delete_source=True)
    assert err.value.translation_key == "copy_source_failed"
    assert "the Supervisor went away" in str(err.value)
    assert await files(hass, mount_point) == []
    assert supervisor.closed
    assert supervisor.deleted == []
    state = hass.states.get("sensor.nas_state")
    assert state.state == "idle"
    assert "progress" not in state.attributes


async def test_source_stops_sending(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    supervisor: StandInAgent,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A source that hangs fails the copy after the stall timeout; nothing is left."""
    monkeypatch.setattr(copying, "SOURCE_STALL_TIMEOUT", 0.2)
    entry, mount_point = nas
    supervisor.add(await run(hass, backup_bytes, "5e1ec7ed", "S", MiB), "5e1ec7ed")
    supervisor.hang = True
    with pytest.raises(HomeAssistantError, match=r"nothing received for 0\.2 s"):
        await copy(hass, entry, SUPERVISOR, backup_id="5e1ec7ed")
    assert await files(hass, mount_point) == []
    assert not entry.runtime_data.manager.busy


async def test_sizes_unknown_and_full_target(
    hass: HomeAssistant,
    ha_config_dir: Path,
    tmp_path: Path,
) -> None:
    """A backup too big for the target is refused before the source is read.

    With its size unknown (0) it is written until the share is full, and
    then nothing is left behind either.
    """
    mount_point = tmp_path / "small"
    async with in_executor(hass, tmpfs(mount_point, size="4m")):
        entry = await setup_location(hass, mount_point, title="Small")
        await setup_backup_component(hass)
        agent = StandInAgent()
        hass.data[DATA_MANAGER].backup_agents[agent.agent_id] = agent
        agent.add(await run(hass, backup_bytes, "b16b16b1", "Big", 6 * MiB), "b16b16b1")

        with pytest.raises(HomeAssistantError) as err:
            await copy(hass, entry, SUPERVISOR, backup_id="b16b16b1")
        assert err.value.translation_key == "insufficient_space"
        assert "download" not in agent.calls

        backup, data = agent.backups["b16b16b1"]
        agent.backups["b16b16b1"] = (dataclasses.replace(backup, size=0), data)
        with pytest.raises(HomeAssistantError) as err:
            await copy(hass, entry, SUPERVISOR, backup_id="b16b16b1")
        assert err.value.translation_key == "insufficient_space"
        assert await files(hass, mount_point) == []
        assert agent.deleted == []
        await hass.config_entries.async_unload(entry.entry_id)


# --- the caller's mistakes, and a target that is down ------------------------


async def test_refused_before_anything_is_touched(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    supervisor: StandInAgent,
) -> None:
    """Unknown source, unknown backup, invalid id: translated, nothing written."""
    entry, mount_point = nas
    with pytest.raises(ServiceValidationError) as err:
        await copy(hass, entry, "nowhere.local")
    assert err.value.translation_key == "copy_unknown_source"
    assert "backup.local" in str(err.value)
    assert SUPERVISOR in str(err.value)

    with pytest.raises(ServiceValidationError) as err:
        await copy(hass, entry, SUPERVISOR, backup_id="deadbeef")
    assert err.value.translation_key == "copy_not_in_source"
    assert "deadbeef" in str(err.value)

    with pytest.raises(ServiceValidationError) as err:
        await copy(hass, entry, SUPERVISOR, backup_id="../etc")
    assert err.value.translation_key == "invalid_backup_id"
    assert await files(hass, mount_point) == []


async def test_target_down_leaves_source_alone(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    supervisor: StandInAgent,
) -> None:
    """A target not mounted fails as in the other actions; the source is idle."""
    entry, mount_point = nas
    supervisor.add(await run(hass, backup_bytes, "5e1ec7ed", "S", MiB), "5e1ec7ed")
    await run(hass, unmount, mount_point)
    with pytest.raises(HomeAssistantError) as err:
        await copy(hass, entry, SUPERVISOR, delete_source=True)
    assert err.value.translation_key == "location_not_a_mount"
    assert supervisor.calls == []
    assert await files(hass, mount_point) == []


async def test_source_down(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    supervisor: StandInAgent,
) -> None:
    """A source that cannot list fails clearly; the target gets nothing."""
    entry, mount_point = nas

    async def broken(**kwargs: Any) -> list[AgentBackup]:
        raise BackupAgentUnreachable

    supervisor.async_list_backups = broken  # type: ignore[method-assign]
    with pytest.raises(HomeAssistantError) as err:
        await copy(hass, entry, SUPERVISOR)
    assert err.value.translation_key == "copy_source_failed"
    assert "unreachable" in str(err.value)
    assert await files(hass, mount_point) == []


class BackupAgentUnreachable(Exception):  # noqa: N818 - as an agent raises it
    """A source agent's "unreachable"."""

    def __str__(self) -> str:
        return "The backup agent is unreachable."


async def test_without_backup_component(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Without Home Assistant's backup system, no source is known."""
    with pytest.raises(ServiceValidationError) as err:
        await copy(hass, init_integration, "backup.local")
    assert err.value.translation_key == "copy_unknown_source"


async def test_source_refuses_download_or_delete(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    supervisor: StandInAgent,
) -> None:
    """A download that cannot start fails; a delete that fails keeps the copy."""
    entry, mount_point = nas
    supervisor.add(await run(hass, backup_bytes, "5e1ec7ed", "S", MiB), "5e1ec7ed")
    supervisor.fail_open = True
    with pytest.raises(HomeAssistantError, match="Supervisor answered 500") as err:
        await copy(hass, entry, SUPERVISOR, backup_id="5e1ec7ed")
    assert err.value.translation_key == "copy_source_failed"
    assert await files(hass, mount_point) == []

    supervisor.fail_open = False
    supervisor.fail_delete = True
    copied = async_capture_events(hass, EVENT_BACKUP_COPIED)
    response = await copy(
        hass, entry, SUPERVISOR, backup_id="5e1ec7ed", delete_source=True
    )
    assert [c["backup"]["backup_id"] for c in response["copied"]] == ["5e1ec7ed"]
    assert response["deleted_from_source"] == []
    [failure] = response["failed"]
    assert failure["stage"] == "delete_source"
    assert failure["reason"] == "copy_source_failed"
    assert "Supervisor refused to delete" in failure["error"]
    assert copied[0].data["deleted_from_source"] is False
    assert "5e1ec7ed" in supervisor.backups
    assert len(await archives(hass, mount_point)) == 1


async def test_target_goes_down_during_a_sync(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    supervisor: StandInAgent,
) -> None:
    """The share goes away mid-sync: the sync stops with that error at once.

    The backup being copied is not deleted from the source, and the next
    one is not even opened.
    """
    entry, mount_point = nas
    supervisor.add(await run(hass, backup_bytes, "0000000a", "A", MiB), "0000000a")
    supervisor.add(await run(hass, backup_bytes, "0000000b", "B", MiB), "0000000b")

    async def share_gone() -> None:
        await run(hass, lazy_unmount, mount_point)

    supervisor.on_end = share_gone
    with pytest.raises(HomeAssistantError) as err:
        await copy(hass, entry, SUPERVISOR, delete_source=True)
    assert err.value.translation_key == "location_not_a_mount"
    assert supervisor.calls.count("download") == 1
    assert supervisor.deleted == []
    assert await files(hass, mount_point) == []


async def test_local_file_gone(
    hass: HomeAssistant,
    nas: tuple[MockConfigEntry, Path],
    ha_config_dir: Path,
    hass_ws_client: Any,
) -> None:
    """A local backup removed behind Home Assistant's back fails at the source."""
    entry, mount_point = nas
    client = await hass_ws_client(hass)
    await _generate_local(hass, client, "Gone")
    [archive] = await archives(hass, ha_config_dir / "backups")
    await run(hass, archive.unlink)
    response = await copy(hass, entry, "backup.local")
    [failure] = response["failed"]
    assert failure["reason"] == "copy_source_failed"
    assert "ENOENT" in failure["error"]
    assert response["copied"] == []
    assert await files(hass, mount_point) == []


async def test_target_hangs_mid_copy(
    hass: HomeAssistant,
    ha_config_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A share that stops answering mid-copy: "not responding", source untouched.

    The share is a FUSE passthrough whose daemon is stopped (SIGSTOP) while
    the source sends: the location's next write hangs (each batch is a job
    timed as a whole), the copy fails within the probe timeout instead of
    waiting for the share, and the backup is not deleted from the source.
    Once the share answers again, the job that was left running removes the
    copy instead of publishing it.
    """
    mount_point = tmp_path / "nas"
    async with in_executor(hass, fuse_passthrough(mount_point)) as daemon:
        entry = await setup_location(hass, mount_point, title="NAS")
        await setup_backup_component(hass)
        agent = StandInAgent()
        hass.data[DATA_MANAGER].backup_agents[agent.agent_id] = agent
        data = await run(hass, backup_bytes, "5e1ec7ed", "S", 3 * MiB)
        agent.add(data, "5e1ec7ed")
        runner = entry.runtime_data.coordinator.runner

        async def share_hangs(offset: int) -> None:
            # Two MiB were handed over: the next batch's write reaches the share.
            if offset == 2 * MiB:
                monkeypatch.setattr(runner, "_timeout", 0.5)
                await run(hass, os.kill, daemon.pid, signal.SIGSTOP)

        agent.on_chunk = share_hangs
        try:
            with pytest.raises(HomeAssistantError) as err:
                await copy(hass, entry, SUPERVISOR, delete_source=True)
            assert err.value.translation_key == "location_not_responding"
            assert agent.deleted == []
            assert not entry.runtime_data.manager.busy
        finally:
            await run(hass, os.kill, daemon.pid, signal.SIGCONT)
        # The job left running on the share sees the copy was given up, and
        # removes it instead of publishing it.
        await wait_until(lambda: not runner.stuck)
        assert await files(hass, mount_point) == []
        await hass.config_entries.async_unload(entry.entry_id)
