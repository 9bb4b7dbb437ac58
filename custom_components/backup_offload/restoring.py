"""Restore a backup from a location: the async shell around the ``restore*`` modules.

A full restore is validated and staged by Backup Offload, and carried out by
Home Assistant itself at its next start (``homeassistant/backup_restore.py``,
the mechanism behind the restore on Home Assistant's own backup page): the
configuration is replaced before any integration runs, and a backup that
fails there leaves the configuration as it was. After that start,
``async_report_restore_result`` reports what happened.

A restore holds every location (``LocationManager.operation`` with
``exclusive``): no backup runs while files are replaced. It raises the
core's errors; the action translates them.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
import tempfile
from typing import TYPE_CHECKING, Any

from homeassistant import backup_restore
from homeassistant.components.backup import RestoreBackupEvent, RestoreBackupState
from homeassistant.components.backup.const import DATA_MANAGER
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import __version__ as HA_VERSION  # noqa: N812
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.start import async_at_started
from homeassistant.util import dt as dt_util

from .boundary import translated_message
from .const import (
    CONF_PASSWORD,
    DOMAIN,
    EVENT_BACKUP_FAILED,
    EVENT_RESTORE_FAILED,
    EVENT_RESTORE_STARTED,
    ISSUE_RESTORE_FAILED,
    ISSUE_RESTORE_FAILED_OTHER,
    LOGGER,
    OperationState,
)
from .engine import jobs
from .engine.errors import BackupOffloadError, LocationUnavailableError
from .engine.restore import (
    checks as restore,
    full as restore_full,
    outcome as restore_outcome,
    partial as restore_partial,
    preview as restore_preview,
    space as restore_space,
)
from .engine.restore.checks import RestoreFormatError, SafetyBackupError
from .manager import Failure, backup_to_dict
from .models import DATA_RESTORE_FAILURES

if TYPE_CHECKING:
    from .engine.metadata import BackupInfo
    from .manager import LocationManager

# Home Assistant's RestoreBackupFileContent field -> key in the instruction
# file (`.HA_RESTORE`), as every release since 2025.1 reads it.
_INSTRUCTION_KEYS = {
    "backup_file_path": "path",
    "password": "password",
    "remove_after_restore": "remove_after_restore",
    "restore_database": "restore_database",
    "restore_homeassistant": "restore_homeassistant",
}

STATUS_RESTARTING = "restarting"
STATUS_PENDING = "pending_restart"
"""Response `status`: the restore happens at the next start of Home Assistant."""


def instruction_keys() -> dict[str, str]:
    """Return field -> JSON key of the installed Home Assistant's instruction.

    Detected from the dataclass Home Assistant parses the file into, so a
    release that reads something we do not know (another field, a key
    instead of a password) is refused before anything is written, instead
    of failing at the next start.
    """
    fields = [
        field.name
        for field in dataclasses.fields(backup_restore.RestoreBackupFileContent)
    ]
    unknown = [name for name in fields if name not in _INSTRUCTION_KEYS]
    if unknown or "backup_file_path" not in fields:
        raise RestoreFormatError(
            "Home Assistant's restore at startup expects "
            + ", ".join(fields)
            + "; Backup Offload knows "
            + ", ".join(_INSTRUCTION_KEYS)
        )
    return {name: _INSTRUCTION_KEYS[name] for name in fields}


def _instruction(
    staged: restore_full.Staged, *, restore_database: bool
) -> dict[str, Any]:
    """Return the instruction for the installed Home Assistant."""
    values: dict[str, Any] = {
        "backup_file_path": staged.path.as_posix(),
        # Home Assistant derives the key (2025.x) or passes the password to
        # securetar (2026.x) itself.
        "password": staged.password,
        # The staged file is our copy: the original stays in the location.
        "remove_after_restore": True,
        "restore_database": restore_database,
        "restore_homeassistant": True,
    }
    return {key: values[field] for field, key in instruction_keys().items()}


is_newer = restore.NewerThan(HA_VERSION)
"""Whether a backup's Home Assistant version is newer than the running one."""


def _paths(count: int, paths: list[str]) -> dict[str, Any]:
    return {"count": count, "paths": paths[: restore_preview.PREVIEW_PATHS]}


def _space(need: restore_space.SpaceNeed) -> dict[str, Any]:
    return {
        "path": need.path,
        "needed": need.needed,
        "free": need.free,
        "files_needed": need.inodes,
        "files_free": need.free_inodes,
        "fits": need.fits,
    }


async def _async_temp_dir(hass: HomeAssistant) -> Path:
    """Return Home Assistant's temporary directory, where its restore unpacks.

    Home Assistant's restore at startup runs in this process's environment;
    ``tempfile`` may try files to find it (hence the executor).
    """
    return Path(await hass.async_add_executor_job(tempfile.gettempdir))


async def async_restore(
    manager: LocationManager,
    *,
    backup_id: str,
    password: str | None = None,
    restore_database: bool = True,
    paths: list[str] | None = None,
    restart: bool = True,
    safety_backup: bool = True,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Restore a backup of ``manager``'s location (the `restore` action).

    ``paths``: restore only those files, live. ``dry_run``: report what would
    change. Otherwise a full restore at the next start, restarting now when
    ``restart``.
    """
    if password is None:
        password = manager.entry.options.get(CONF_PASSWORD) or None
    if dry_run:
        return await _async_preview(
            manager, backup_id, password, paths or None, restore_database
        )
    try:
        if paths:
            return await _async_restore_files(
                manager, backup_id, password, paths, safety_backup
            )
        return await _async_restore_full(
            manager,
            backup_id,
            password,
            restore_database=restore_database,
            restart=restart,
            safety_backup=safety_backup,
        )
    except BackupOffloadError as err:
        manager.fire(
            EVENT_RESTORE_FAILED,
            backup_id=backup_id,
            error=translated_message(err, manager.entry.title),
        )
        raise


async def _async_safety_backup(
    manager: LocationManager, backup: BackupInfo
) -> dict[str, Any]:
    """Back up the current configuration before it is replaced."""
    name = f"Safety backup before restoring {backup.name}"
    try:
        outcome = await manager.run_create(name=name, safety=True)
    except BackupOffloadError as err:
        manager.fire(EVENT_BACKUP_FAILED, name=name, error=str(err))
        if isinstance(err, LocationUnavailableError):
            manager.coordinator.async_set_unavailable(err)
        raise SafetyBackupError(str(err), name=name) from err
    created: dict[str, Any] = manager.apply_created(outcome)["backup"]
    return created


async def _async_restore_full(
    manager: LocationManager,
    backup_id: str,
    password: str | None,
    *,
    restore_database: bool,
    restart: bool,
    safety_backup: bool,
) -> dict[str, Any]:
    hass = manager.hass
    async with manager.operation(OperationState.RESTORING, exclusive=True):
        instruction_keys()
        staged = await _async_stage(manager, backup_id, password, restore_database)
        try:
            safety = (
                await _async_safety_backup(manager, staged.backup)
                if safety_backup
                else None
            )
            await _async_write_instruction(
                manager,
                staged,
                restore_database=restore_database,
                safety_backup=safety["name"] if safety else None,
            )
        except BaseException:
            await hass.async_add_executor_job(restore_full.discard_staged, staged)
            raise
    _announce_staged(manager, staged.backup, restart=restart)
    response: dict[str, Any] = {
        "backup": backup_to_dict(staged.backup, manager.instance_id),
        "safety_backup": safety,
        "restore_database": restore_database,
        "staged_file": str(staged.path),
        "status": STATUS_PENDING,
    }
    if restart:
        await _async_restart(hass, response)
    return response


async def _async_stage(
    manager: LocationManager,
    backup_id: str,
    password: str | None,
    restore_database: bool,
) -> restore_full.Staged:
    """Copy the backup to this machine and verify it (one job)."""
    return await manager.runner.run_checked(
        partial(
            jobs.restore_stage,
            is_newer=is_newer,
            temp_dir=await _async_temp_dir(manager.hass),
            restore_database=restore_database,
        ),
        manager.coordinator.location,
        backup_id,
        password,
    )


async def _async_write_instruction(
    manager: LocationManager,
    staged: restore_full.Staged,
    *,
    restore_database: bool,
    safety_backup: str | None,
) -> None:
    """Write Home Assistant's restore instruction, and our marker next to it."""
    marker = {
        "version": 1,
        "config_entry_id": manager.entry.entry_id,
        "location": manager.entry.title,
        "backup_id": staged.backup.backup_id,
        "name": staged.backup.name,
        "file": staged.backup.file,
        "restore_database": restore_database,
        "safety_backup": safety_backup,
        "staged_at": dt_util.utcnow().isoformat(),
    }
    await manager.hass.async_add_executor_job(
        partial(
            restore_full.write_instruction,
            staged,
            config_dir=manager.coordinator.location.config_dir,
            instruction_name=backup_restore.RESTORE_BACKUP_FILE,
            instruction=_instruction(staged, restore_database=restore_database),
            marker=marker,
        )
    )


@callback
def _announce_staged(
    manager: LocationManager, backup: BackupInfo, *, restart: bool
) -> None:
    """Say that a restore is staged: log, event; the last one's issues go."""
    for issue_id in (ISSUE_RESTORE_FAILED, ISSUE_RESTORE_FAILED_OTHER):
        ir.async_delete_issue(manager.hass, DOMAIN, issue_id)
    LOGGER.info(
        "%s: backup %s (%s) is staged; Home Assistant restores it at its next start",
        manager.entry.title,
        backup.name,
        backup.backup_id,
    )
    manager.fire(
        EVENT_RESTORE_STARTED,
        backup_id=backup.backup_id,
        name=backup.name,
        restart=restart,
    )


async def _async_restart(hass: HomeAssistant, response: dict[str, Any]) -> None:
    """Restart Home Assistant now; ``response`` says whether it does."""
    try:
        await hass.services.async_call("homeassistant", "restart", blocking=True)
    except HomeAssistantError as err:
        # Staged is staged: the restore still happens at the next start.
        LOGGER.warning("Restarting Home Assistant failed: %s", err)
        response["restart_error"] = str(err)
    else:
        response["status"] = STATUS_RESTARTING


async def _async_restore_files(
    manager: LocationManager,
    backup_id: str,
    password: str | None,
    paths: list[str],
    safety_backup: bool,
) -> dict[str, Any]:
    hass = manager.hass
    location = manager.coordinator.location
    async with manager.operation(OperationState.RESTORING, exclusive=True):
        extracted: restore_partial.Extracted = await manager.runner.run_checked(
            partial(jobs.restore_extract, patterns=paths),
            location,
            backup_id,
            password,
        )
        try:
            safety = (
                await _async_safety_backup(manager, extracted.backup)
                if safety_backup
                else None
            )
        except BaseException:
            await hass.async_add_executor_job(
                restore_partial.discard_extracted, extracted
            )
            raise
        manager.fire(
            EVENT_RESTORE_STARTED,
            backup_id=extracted.backup.backup_id,
            name=extracted.backup.name,
            paths=extracted.files,
        )
        restored = await hass.async_add_executor_job(
            partial(
                restore_partial.apply_files, extracted, config_dir=location.config_dir
            )
        )
    LOGGER.info(
        "%s: restored %s from backup %s",
        manager.entry.title,
        ", ".join(restored),
        extracted.backup.name,
    )
    return {
        "backup": backup_to_dict(extracted.backup, manager.instance_id),
        "restored": restored,
        "safety_backup": safety,
    }


async def _async_preview(
    manager: LocationManager,
    backup_id: str,
    password: str | None,
    paths: list[str] | None,
    restore_database: bool,
) -> dict[str, Any]:
    async with manager.operation(OperationState.VERIFYING):
        if paths is None:
            instruction_keys()
        backup, diff = await manager.runner.run_checked(
            partial(
                jobs.restore_preview,
                patterns=paths,
                restore_database=restore_database,
                is_newer=is_newer,
                temp_dir=await _async_temp_dir(manager.hass),
            ),
            manager.coordinator.location,
            backup_id,
            password,
        )
    return {
        "dry_run": True,
        "mode": "full" if paths is None else "partial",
        "backup": backup_to_dict(backup, manager.instance_id),
        "restore_database": restore_database,
        "added": _paths(diff.added_count, diff.added),
        "changed": _paths(diff.changed_count, diff.changed),
        "removed": _paths(diff.removed_count, diff.removed),
        "unchanged": diff.unchanged,
        "bytes": diff.write_bytes,
        "space": [_space(need) for need in diff.space],
    }


# --- after a restart ----------------------------------------------------------


@callback
def _known_result(hass: HomeAssistant) -> restore_outcome.RestoreResult | None:
    """Return what Home Assistant's backup integration read at this start.

    It reads and removes the result file when it is set up, which is before
    us (our after_dependencies); its manager keeps the outcome as its last
    action event.
    """
    event = getattr(hass.data.get(DATA_MANAGER), "last_action_event", None)
    if not isinstance(event, RestoreBackupEvent) or event.state not in (
        RestoreBackupState.COMPLETED,
        RestoreBackupState.FAILED,
    ):
        return None
    return restore_outcome.RestoreResult(
        success=event.state is RestoreBackupState.COMPLETED, error=event.reason
    )


async def async_report_restore_result(hass: HomeAssistant) -> None:
    """Report how a restore at this start of Home Assistant went, once.

    Called when the integration is set up. A failure of our restore fires
    `backup_offload_restore_failed`, becomes the location's `last_failure`
    and a repair issue that says what to do; a success is logged.
    """
    try:
        outcome = await hass.async_add_executor_job(
            partial(
                restore_outcome.collect_outcome,
                Path(hass.config.config_dir),
                instruction_name=backup_restore.RESTORE_BACKUP_FILE,
                result_name=backup_restore.RESTORE_BACKUP_RESULT_FILE,
                known=_known_result(hass),
            )
        )
    except OSError as err:  # a report must never keep the integration down
        LOGGER.warning("Could not check the result of a restore: %s", err)
        return
    if outcome.removed:
        LOGGER.debug("Removed restore leftovers: %s", ", ".join(outcome.removed))
    if outcome.pending:
        LOGGER.info("A restore is staged; Home Assistant runs it at its next start")
        return
    result, marker = outcome.result, outcome.marker
    if result is not None and result.success:
        name = (marker or {}).get("name", "a backup")
        LOGGER.info("Home Assistant restored %s at this start", name)
        return
    if marker is not None:
        error = (
            result.error
            if result is not None and result.error
            else "Home Assistant left no result; the restore did not complete"
        )
        _report_failure(hass, marker, error)
    elif result is not None:
        LOGGER.error("Home Assistant could not restore a backup: %s", result.error)
        ir.async_create_issue(
            hass,
            DOMAIN,
            ISSUE_RESTORE_FAILED_OTHER,
            is_fixable=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key=ISSUE_RESTORE_FAILED_OTHER,
            translation_placeholders={"error": str(result.error)},
        )


@callback
def _report_failure(hass: HomeAssistant, marker: dict[str, Any], error: str) -> None:
    """Report our restore that Home Assistant did not complete."""
    entry_id = str(marker.get("config_entry_id", ""))
    location = str(marker.get("location", "?"))
    name = str(marker.get("name", marker.get("backup_id", "?")))
    LOGGER.error(
        "Home Assistant could not restore backup %s from %s: %s", name, location, error
    )
    failure = Failure(
        time=dt_util.utcnow(), operation=OperationState.RESTORING, error=error
    )
    entry = hass.config_entries.async_get_entry(entry_id)
    if entry is not None and entry.state is ConfigEntryState.LOADED:
        entry.runtime_data.manager.last_failure = failure
        entry.runtime_data.coordinator.async_update_listeners()
    else:
        failures = hass.data.setdefault(DATA_RESTORE_FAILURES, {})
        failures[entry_id] = failure
    ir.async_create_issue(
        hass,
        DOMAIN,
        ISSUE_RESTORE_FAILED,
        is_fixable=False,
        severity=ir.IssueSeverity.ERROR,
        translation_key=ISSUE_RESTORE_FAILED,
        translation_placeholders={
            "name": name,
            "location": location,
            "error": error,
            "safety_backup": str(marker.get("safety_backup") or "-"),
        },
    )
    data = {
        "config_entry_id": entry_id or None,
        "location": location,
        "backup_id": marker.get("backup_id"),
        "name": name,
        "error": error,
    }

    @callback
    def fire(hass: HomeAssistant) -> None:
        # Once started, so that automations listening for it are loaded.
        hass.bus.async_fire(EVENT_RESTORE_FAILED, data)

    async_at_started(hass, fire)
