"""Each location as a backup agent of Home Assistant's own backup system.

With it a location appears under Settings → System → Backups, Home
Assistant's automatic backups can be stored there, and its backups can be
restored from Home Assistant's own UI. The agent works on the same files as
the actions, through the same executor jobs and the same runner (one stuck
thread at most per hung share), and probes the location first.

Home Assistant's backup page shows whatever an agent raises: every failure
of the location leaves here as one of the backup component's own errors
(`boundary.agent_errors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
import contextlib
import dataclasses
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from homeassistant.components.backup import (
    AgentBackup,
    BackupAgent,
    BackupNotFound,
    const as backup_const,
)
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback

from .boundary import LocationUnreachableError, agent_errors
from .const import CONF_PASSWORD, DOMAIN, LOGGER, OperationState
from .engine import jobs, transfer as agent_files
from .engine.errors import BackupOffloadError
from .models import DATA_BACKUP_AGENT_LISTENERS

if TYPE_CHECKING:
    from .coordinator import BackupOffloadCoordinator
    from .engine.metadata import BackupInfo
    from .models import BackupOffloadConfigEntry, BackupOffloadData

# AgentBackup's fields differ between Home Assistant versions: pass only the
# ones the installed version declares.
_AGENT_BACKUP_FIELDS: Final = frozenset(
    field.name for field in dataclasses.fields(AgentBackup)
)


async def async_get_backup_agents(
    hass: HomeAssistant, **kwargs: Any
) -> list[BackupAgent]:
    """Return one agent per loaded location."""
    return [
        BackupOffloadAgent(hass, entry)
        for entry in hass.config_entries.async_loaded_entries(DOMAIN)
    ]


@callback
def async_register_backup_agents_listener(
    hass: HomeAssistant, *, listener: Callable[[], None], **kwargs: Any
) -> Callable[[], None]:
    """Call ``listener`` when a location is loaded or unloaded (``__init__.py``)."""
    listeners = hass.data.setdefault(DATA_BACKUP_AGENT_LISTENERS, [])
    listeners.append(listener)

    @callback
    def remove_listener() -> None:
        listeners.remove(listener)

    return remove_listener


def to_agent_backup(info: BackupInfo) -> AgentBackup:
    """Return a listed backup as Home Assistant's backup system sees it.

    ``extra_metadata`` keeps the string and boolean values of backup.json's
    ``extra`` (Home Assistant's type): ``instance_id`` and
    ``with_automatic_settings`` there let Home Assistant recognise its
    automatic backups and apply its retention to them.
    """
    values: dict[str, Any] = {
        "addons": [],
        "backup_id": info.backup_id,
        "date": info.date,
        "database_included": info.database_included,
        "extra_metadata": {
            key: value
            for key, value in info.extra.items()
            if isinstance(value, str | bool)
        },
        "folders": [],
        "homeassistant_included": info.homeassistant_version is not None,
        "homeassistant_version": info.homeassistant_version,
        "name": info.name,
        "protected": info.protected,
        "size": info.size,
    }
    return AgentBackup(
        **{key: value for key, value in values.items() if key in _AGENT_BACKUP_FIELDS}
    )


async def _close(stream: AsyncIterator[bytes]) -> None:
    """Close Home Assistant's stream now (it holds a file), not when collected."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


class BackupOffloadAgent(BackupAgent):
    """One location as a backup agent: the entry id is its unique part."""

    domain = DOMAIN

    def __init__(self, hass: HomeAssistant, entry: BackupOffloadConfigEntry) -> None:
        """Set up the agent of one loaded location."""
        super().__init__()
        self._hass = hass
        self._entry = entry
        self.name = entry.title
        self.unique_id = entry.entry_id

    def _data(self) -> BackupOffloadData:
        """Return the location's runtime data; the location must be loaded.

        Home Assistant reloads the agents a moment after an unload, so a call
        can still reach an agent whose location is gone.
        """
        if self._entry.state is not ConfigEntryState.LOADED:
            raise LocationUnreachableError(f"{self.name} is not loaded")
        return self._entry.runtime_data

    @property
    def coordinator(self) -> BackupOffloadCoordinator:
        """Return the coordinator of the location (as last loaded)."""
        return self._entry.runtime_data.coordinator

    async def _backups(self, data: BackupOffloadData) -> list[BackupInfo]:
        """Probe and list the location (the listing the actions use)."""
        coordinator = data.coordinator
        cached = coordinator.data
        if coordinator.runner.running and cached is not None and cached.available:
            # An operation holds the location, maybe for minutes, and probed
            # it when it started: its listing is current, and waiting for it
            # would only time out.
            return cached.backups
        snapshot = await coordinator.runner.run(jobs.refresh, coordinator.location)
        coordinator.async_set_snapshot(snapshot)
        return snapshot.backups

    @agent_errors
    async def async_list_backups(self, **kwargs: Any) -> list[AgentBackup]:
        """List every valid backup in the location, newest first."""
        return [to_agent_backup(info) for info in await self._backups(self._data())]

    @agent_errors
    async def async_get_backup(self, backup_id: str, **kwargs: Any) -> AgentBackup:
        """Return one backup; BackupNotFound when the location has none by that id."""
        for info in await self._backups(self._data()):
            if info.backup_id == backup_id:
                return to_agent_backup(info)
        raise BackupNotFound(f"No backup with id {backup_id} in {self.name}")

    @agent_errors
    async def async_delete_backup(self, backup_id: str, **kwargs: Any) -> None:
        """Delete a backup and its sidecar, as the `delete` action does.

        Home Assistant asks every agent to delete a backup, so one that is not
        here is BackupNotFound at once, without taking the location.
        """
        data = self._data()
        if not any(info.backup_id == backup_id for info in await self._backups(data)):
            raise BackupNotFound(f"No backup with id {backup_id} in {self.name}")
        # The manager takes the location's busy lock, shows "deleting",
        # fires the deleted event and refreshes the sensors.
        await data.manager.async_delete(backup_id)

    @agent_errors
    async def async_download_backup(
        self, backup_id: str, **kwargs: Any
    ) -> AsyncIterator[bytes]:
        """Check the backup completely, open it and return its chunks.

        Home Assistant's restore extracts what it downloads without checks
        of its own: the backup is checked first, as `verify` does, with the
        passwords known here (the location's, and the one Home Assistant
        encrypts its own backups with).
        """
        data = self._data()
        coordinator = data.coordinator
        download = await coordinator.runner.run_checked(
            agent_files.open_backup,
            coordinator.location,
            backup_id,
            self._passwords(data),
        )
        return self._chunks(data, download)

    def _passwords(self, data: BackupOffloadData) -> list[str]:
        """Return the passwords a backup here is likely encrypted with."""
        manager = self._hass.data.get(backup_const.DATA_MANAGER)
        create = getattr(getattr(manager, "config", None), "data", None)
        candidates = (
            data.manager.entry.options.get(CONF_PASSWORD),
            getattr(getattr(create, "create_backup", None), "password", None),
        )
        return list(dict.fromkeys(p for p in candidates if isinstance(p, str) and p))

    async def _chunks(
        self, data: BackupOffloadData, download: agent_files.Download
    ) -> AsyncIterator[bytes]:
        """Yield the archive chunk by chunk, each read in its own job."""
        try:
            while chunk := await self._read_chunk(data, download):
                yield chunk
        finally:
            await _cleanup(data, agent_files.close_download, download)

    @agent_errors
    async def _read_chunk(
        self, data: BackupOffloadData, download: agent_files.Download
    ) -> bytes:
        """Read the next chunk (Home Assistant reads on after the method returned)."""
        return await data.coordinator.runner.run(agent_files.read_chunk, download)

    @agent_errors
    async def async_upload_backup(
        self,
        *,
        open_stream: Callable[[], Coroutine[Any, Any, AsyncIterator[bytes]]],
        backup: AgentBackup,
        on_progress: Callable[..., None] | None = None,
        **kwargs: Any,
    ) -> None:
        """Receive a backup into the location: temp file, fsync, rename, sidecar.

        The archive is Home Assistant's own (backup.json included) and is
        stored as it is. The state sensor's ``progress`` follows the bytes
        written, and ``on_progress`` (Home Assistant 2026) gets them. Errors
        of the stream itself (Home Assistant's) pass through unchanged;
        nothing of a failed upload stays in the location.
        """
        data = self._data()
        # Held like a backup made by the create action: the state sensor says
        # so, and no other operation or restore can start in between batches.
        async with data.manager.operation(OperationState.CREATING):
            await self._receive(data, open_stream, backup, on_progress)

    # Translated inside the operation: a failed upload is Home Assistant's to
    # report (its backup page), not the location's last failure.
    @agent_errors
    async def _receive(
        self,
        data: BackupOffloadData,
        open_stream: Callable[[], Coroutine[Any, Any, AsyncIterator[bytes]]],
        backup: AgentBackup,
        on_progress: Callable[..., None] | None,
    ) -> None:
        """Stream the backup into the location (the location is held)."""

        def written(count: int) -> None:
            if backup.size > 0:
                data.manager.set_progress(count / backup.size)
            if on_progress is not None:
                on_progress(bytes_uploaded=count)

        await async_receive(data, open_stream, backup, written)


async def async_receive(
    data: BackupOffloadData,
    open_stream: Callable[[], Coroutine[Any, Any, AsyncIterator[bytes]]],
    backup: AgentBackup,
    on_written: Callable[[int], None],
    *,
    read_back: bool = False,
) -> tuple[BackupInfo, str]:
    """Stream a backup into a location the caller holds; return it and its SHA-256.

    Temporary file, fsync, rename, sidecar (engine/transfer.py); with
    ``read_back`` (a copy) the stored file is read back and compared before
    it is published. ``on_written`` gets the bytes written so far after each
    batch. Raises the engine's errors, and those of the stream unchanged;
    nothing of a failed transfer stays in the location. The upload of the
    backup page and the copy action share it.
    """
    coordinator = data.coordinator
    upload = await coordinator.runner.run(
        agent_files.start_upload,
        coordinator.location,
        backup.backup_id,
        backup.size,
    )
    stream: AsyncIterator[bytes] | None = None
    try:
        stream = await open_stream()
        await _write_stream(data, upload, stream, on_written)
        info, snapshot = await coordinator.runner.run_checked(
            partial(agent_files.finish_upload, read_back=read_back),
            coordinator.location,
            upload,
            backup.backup_id,
        )
    except BaseException:
        # A job left running on a hung share removes the upload itself.
        upload.abandoned.set()
        await _cleanup(data, agent_files.abort_upload, upload)
        if stream is not None:
            await _close(stream)
        raise
    coordinator.async_set_snapshot(snapshot)
    LOGGER.info(
        "%s: stored backup %s as %s", data.manager.entry.title, info.name, info.file
    )
    return info, upload.sha256.hexdigest()


async def _cleanup[T](
    data: BackupOffloadData, func: Callable[[T], None], arg: T
) -> None:
    """Run a cleanup job; a failure is logged, not raised over the cause."""
    try:
        await data.coordinator.runner.run(func, arg)
    except BackupOffloadError as err:
        LOGGER.warning(
            "%s: cleaning up after the backup agent failed (%s); leftover"
            " temporary files are removed at the next start",
            data.manager.entry.title,
            err,
        )


async def _write_stream(
    data: BackupOffloadData,
    upload: agent_files.Upload,
    stream: AsyncIterator[bytes],
    on_written: Callable[[int], None],
) -> None:
    """Write the stream to the temporary file, batch by batch.

    Small chunks are batched: one executor hop per MiB, and never more
    than about a MiB in memory. Each batch is its own job: a stream that
    pauses holds no thread of the location meanwhile.
    """
    batch: list[bytes] = []
    pending = 0
    async for chunk in stream:
        batch.append(chunk)
        pending += len(chunk)
        if pending < agent_files.CHUNK:
            continue
        await _write_batch(data, upload, batch, on_written)
        batch, pending = [], 0
    if batch:
        await _write_batch(data, upload, batch, on_written)


async def _write_batch(
    data: BackupOffloadData,
    upload: agent_files.Upload,
    batch: list[bytes],
    on_written: Callable[[int], None],
) -> None:
    """Write one batch; report the bytes written so far."""
    written = await data.coordinator.runner.run(
        agent_files.write_chunk, upload, b"".join(batch)
    )
    on_written(written)
