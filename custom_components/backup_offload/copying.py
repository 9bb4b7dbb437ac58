"""Copy or move backups from any of Home Assistant's backup locations into one.

The source is any backup agent Home Assistant knows: its own local storage
(``backup.local``), the Supervisor's (``hassio.local``), another location of
this integration, a cloud location. Each backup is streamed from the source
agent into the target location with the backup page's upload
(``backup.async_receive``: temporary file, fsync, rename, sidecar), then read
back from the location: only a copy whose SHA-256 matches the stream counts,
and only then, if asked, is the backup deleted from the source (through its
agent). The target is held for the whole copy (state ``copying``); the
source is only read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
import contextlib
from dataclasses import dataclass, field
import hashlib
from pathlib import Path
import time
from typing import TYPE_CHECKING, Any, Final

from homeassistant.components.backup import AgentBackup, BackupAgent, BackupNotFound
from homeassistant.components.backup.agent import LocalBackupAgent
from homeassistant.components.backup.const import DATA_MANAGER

from .backup import async_receive
from .boundary import translated_message
from .const import DOMAIN, EVENT_BACKUP_COPIED, LOGGER, OperationState
from .engine import jobs, transfer
from .engine.errors import (
    BackupOffloadError,
    CopyMismatchError,
    CopySourceError,
    LocationUnavailableError,
    NotInSourceError,
    SameLocationError,
    UnknownSourceError,
)
from .manager import backup_to_dict

if TYPE_CHECKING:
    from typing import BinaryIO

    from homeassistant.core import HomeAssistant

    from .engine.metadata import BackupInfo
    from .manager import LocationManager

SOURCE_STALL_TIMEOUT: Final = 300.0
"""Seconds the copy waits for the next chunk of a source that stopped sending.

A source that hangs would otherwise hold the target (busy, ``copying``) for
good; the target's thread is not held meanwhile (each batch is its own
job). Generous: a cloud source may pause, and a location of this
integration checks a backup completely before it sends the first byte.
"""

type OpenStream = Callable[[], Coroutine[Any, Any, AsyncIterator[bytes]]]


@dataclass(slots=True)
class _Copy:
    """What one call of the action did, for its response."""

    source: str
    copied: list[dict[str, Any]] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    deleted_from_source: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    done_bytes: int = 0
    total_bytes: int = 0

    def response(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "copied": self.copied,
            "already_present": self.already_present,
            "deleted_from_source": self.deleted_from_source,
            "failed": self.failed,
        }


def _agent_id(manager: LocationManager) -> str:
    """Return the backup agent id of the manager's location (backup.py)."""
    return f"{DOMAIN}.{manager.entry.entry_id}"


def source_agent(hass: HomeAssistant, source: str, target: str) -> BackupAgent:
    """Return the agent of ``source``; refuse the target and unknown ids."""
    if source == target:
        raise SameLocationError(
            f"{source} is the location the copy writes to", source=source
        )
    backups = hass.data.get(DATA_MANAGER)
    agents: dict[str, BackupAgent] = {} if backups is None else backups.backup_agents
    if source not in agents:
        known = ", ".join(sorted(a for a in agents if a != target)) or "-"
        raise UnknownSourceError(
            f"Home Assistant has no backup location {source} (known: {known})",
            source=source,
            agents=known,
        )
    return agents[source]


def _source_failed(
    agent: BackupAgent, backup_id: str, err: Exception
) -> CopySourceError:
    """Return the error of a source agent that raised ``err``."""
    detail = str(err) or type(err).__name__
    return CopySourceError(
        f"{agent.name} ({agent.agent_id}), backup {backup_id}: {detail}",
        source=agent.agent_id,
        backup_id=backup_id,
    )


async def async_copy(
    manager: LocationManager,
    *,
    source: str,
    backup_id: str | None,
    delete_source: bool,
) -> dict[str, Any]:
    """Copy one backup (or, without ``backup_id``, every missing one) into the location.

    The target is probed and listed first, so a target that is down fails
    before the source is touched. A single backup that cannot be copied
    raises; a sync lists each failure and goes on, unless the target itself
    is down or not responding: then it stops with that error.
    """
    agent = source_agent(manager.hass, source, _agent_id(manager))
    result = _Copy(source=source)
    async with manager.operation(OperationState.COPYING):
        snapshot = await manager.runner.run(jobs.refresh, manager.coordinator.location)
        manager.coordinator.async_set_snapshot(snapshot)
        present = {backup.backup_id for backup in snapshot.backups}
        wanted = await _wanted(agent, backup_id)
        todo = [b for b in wanted if b.backup_id not in present]
        result.already_present = [b.backup_id for b in wanted if b.backup_id in present]
        result.total_bytes = sum(max(b.size, 0) for b in todo)
        for backup in todo:
            await _copy_and_delete(
                manager, agent, backup, result, delete_source, single=bool(backup_id)
            )
        if delete_source:
            for backup in wanted:
                if backup.backup_id in present:
                    await _delete_present(manager, agent, backup, result)
    return result.response()


async def _wanted(agent: BackupAgent, backup_id: str | None) -> list[AgentBackup]:
    """Return the source's backup ``backup_id``, or all of its backups."""
    try:
        if backup_id is None:
            return list(await agent.async_list_backups())
        return [await agent.async_get_backup(backup_id)]
    except BackupNotFound as err:
        raise NotInSourceError(
            f"{agent.name} ({agent.agent_id}) has no backup {backup_id}",
            source=agent.agent_id,
            backup_id=str(backup_id),
        ) from err
    except Exception as err:  # any agent's failure is the source's
        raise _source_failed(agent, backup_id or "*", err) from err


async def _copy_and_delete(
    manager: LocationManager,
    agent: BackupAgent,
    backup: AgentBackup,
    result: _Copy,
    delete_source: bool,
    *,
    single: bool,
) -> None:
    """Copy one backup, record it, delete it from the source if asked."""
    started = time.monotonic()
    try:
        info, sha256 = await _copy_one(manager, agent, backup, result)
    except LocationUnavailableError:
        raise  # the target is down or hung: nothing more can be copied
    except BackupOffloadError as err:
        if single:
            raise
        result.failed.append(_failure(manager, backup, "copy", err))
        return
    finally:
        result.done_bytes += max(backup.size, 0)
    seconds = time.monotonic() - started
    result.copied.append(
        {
            "backup": backup_to_dict(info, manager.instance_id),
            "bytes": info.size,
            "seconds": round(seconds, 3),
            "sha256": sha256,
        }
    )
    deleted = delete_source and await _delete_source(manager, agent, backup, result)
    LOGGER.info(
        "%s: copied backup %s from %s (%d bytes in %.1f s)%s",
        manager.entry.title,
        info.name,
        agent.agent_id,
        info.size,
        seconds,
        ", deleted it there" if deleted else "",
    )
    manager.fire(
        EVENT_BACKUP_COPIED,
        backup_id=info.backup_id,
        name=info.name,
        source=agent.agent_id,
        bytes=info.size,
        seconds=round(seconds, 3),
        sha256=sha256,
        deleted_from_source=deleted,
    )


async def _delete_present(
    manager: LocationManager, agent: BackupAgent, backup: AgentBackup, result: _Copy
) -> None:
    """Move a backup the location already holds: delete it from the source.

    Home Assistant's automatic backups often go to its own storage and to a
    location at once; a nightly move must free the source of those too. The
    two are compared byte for byte (SHA-256 and size) first: a backup that
    only shares the id is left where it is, and reported.
    """
    try:
        theirs = await _hash_source(manager.hass, agent, backup.backup_id)
        ours = await manager.runner.run_checked(
            transfer.hash_backup, manager.coordinator.location, backup.backup_id
        )
    except LocationUnavailableError:
        raise  # the target is down or hung: nothing more can be checked
    except BackupOffloadError as err:
        result.failed.append(_failure(manager, backup, "delete_source", err))
        return
    if theirs != ours:
        mismatch = CopyMismatchError(
            f"{backup.backup_id} in the location is not the same as in"
            f" {agent.name} ({theirs[1]} bytes there, {ours[1]} here):"
            " the source's copy was kept",
            backup_id=backup.backup_id,
        )
        result.failed.append(_failure(manager, backup, "delete_source", mismatch))
        return
    if await _delete_source(manager, agent, backup, result):
        LOGGER.info(
            "%s: backup %s was already here, identical: deleted it from %s",
            manager.entry.title,
            backup.name,
            agent.agent_id,
        )


async def _hash_source(
    hass: HomeAssistant, agent: BackupAgent, backup_id: str
) -> tuple[str, int]:
    """Return the SHA-256 and size of the source's backup (hashed in jobs)."""
    digest = hashlib.sha256()
    size = 0
    stream = await _opener(hass, agent, backup_id)()
    async for chunk in stream:
        # Not on the loop: hashing a chunk of a MiB takes milliseconds.
        await hass.async_add_executor_job(digest.update, chunk)
        size += len(chunk)
    return digest.hexdigest(), size


async def _delete_source(
    manager: LocationManager, agent: BackupAgent, backup: AgentBackup, result: _Copy
) -> bool:
    """Delete a verified copy's original through its agent; True when it is gone."""
    try:
        await agent.async_delete_backup(backup.backup_id)
    except Exception as err:  # noqa: BLE001 - the source's failure, reported
        failure = _source_failed(agent, backup.backup_id, err)
        result.failed.append(_failure(manager, backup, "delete_source", failure))
        return False
    result.deleted_from_source.append(backup.backup_id)
    return True


def _failure(
    manager: LocationManager, backup: AgentBackup, stage: str, err: BackupOffloadError
) -> dict[str, Any]:
    """Return one failure of a sync, as the response lists it."""
    return {
        "backup_id": backup.backup_id,
        "name": backup.name,
        "stage": stage,
        "reason": err.translation_key,
        "error": translated_message(err, manager.entry.title),
    }


async def _copy_one(
    manager: LocationManager, agent: BackupAgent, backup: AgentBackup, result: _Copy
) -> tuple[BackupInfo, str]:
    """Stream one backup from the source into the location, read back and checked."""
    total = result.total_bytes

    def written(count: int) -> None:
        if total > 0:
            manager.set_progress((result.done_bytes + count) / total)

    return await async_receive(
        manager.entry.runtime_data,
        _opener(manager.hass, agent, backup.backup_id),
        backup,
        written,
        read_back=True,
    )


def _opener(hass: HomeAssistant, agent: BackupAgent, backup_id: str) -> OpenStream:
    """Return how to open the source's stream of one backup.

    Home Assistant's own local agents hand out a file, not a stream (their
    ``async_download_backup`` is not implemented; Home Assistant's download
    and restore read ``get_backup_path``): that file is read in executor
    jobs. Every other agent streams (``async_download_backup``).
    """

    async def open_stream() -> AsyncIterator[bytes]:
        try:
            if isinstance(agent, LocalBackupAgent):
                path = agent.get_backup_path(backup_id)
                file = await hass.async_add_executor_job(transfer.open_source, path)
                stream = _file_chunks(hass, file, path)
            else:
                stream = await agent.async_download_backup(backup_id)
        except Exception as err:  # any agent's failure is the source's
            raise _source_failed(agent, backup_id, err) from err
        return _guarded(agent, backup_id, stream)

    return open_stream


async def _file_chunks(
    hass: HomeAssistant, file: BinaryIO, path: Path
) -> AsyncIterator[bytes]:
    """Yield a local agent's backup file chunk by chunk, each read in a job."""
    try:
        while chunk := await hass.async_add_executor_job(
            transfer.read_source, file, path
        ):
            yield chunk
    finally:
        await hass.async_add_executor_job(transfer.close_source, file)


async def _guarded(
    agent: BackupAgent, backup_id: str, stream: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """Yield the source's chunks; its failures and stalls become CopySourceError."""
    chunks = aiter(stream)
    try:
        while True:
            try:
                async with asyncio.timeout(SOURCE_STALL_TIMEOUT):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError as err:
                raise _source_failed(
                    agent,
                    backup_id,
                    TimeoutError(f"nothing received for {SOURCE_STALL_TIMEOUT:g} s"),
                ) from err
            except Exception as err:  # a stream may raise anything
                raise _source_failed(agent, backup_id, err) from err
            yield chunk
    finally:
        # Now, not when collected: the source may hold a file or a request.
        close = getattr(stream, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
