"""Full restore: stage a verified copy and hand it to Home Assistant's restore.

``stage`` copies the archive from the location into Home Assistant's local
temporary backup directory and verifies the copy (password, integrity,
checksum, safe members); ``write_instruction`` then writes Home Assistant's
own restore-at-startup instruction. Home Assistant replaces the
configuration at its next start, before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
from dataclasses import dataclass
import hashlib
import json
import os
from pathlib import Path
import secrets
import tempfile
from typing import Any

from ..archive.read import CHUNK, VerifyResult, read_sidecar, verify_backup
from ..errors import BackupOffloadError, CorruptBackupError, LocationUnavailableError
from ..fileops import Local, fsync_dir, os_error, read_error, remove_quietly, write_all
from ..location import SPACE_MARGIN_BYTES
from ..metadata import SIDECAR_SUFFIX, TEMP_PREFIX, BackupInfo, id_part
from .checks import (
    MARKER_NAME,
    STAGED_PREFIX,
    STAGING_DIR,
    StagingError,
    StagingSpaceError,
    check_start,
    check_version,
    effective_password,
    require_configuration,
)
from .space import (
    ArchiveSizer,
    Clearing,
    FileSystem,
    keep_names,
    outer_usage,
    plan_clearing,
    require_startup,
    startup_needs,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Staged:
    """A verified copy of a backup, ready for Home Assistant's restore."""

    backup: BackupInfo
    path: Path
    """The staged archive (in ``tmp_backups``)."""
    password: str | None
    """The password the restore needs: None when the backup is not encrypted."""
    verified: VerifyResult
    created_dir: bool
    """``tmp_backups`` did not exist before (removed again when discarded)."""


# --- staging ------------------------------------------------------------------

# Failures on this machine, where the restore is staged.
_STAGING = Local(space=StagingSpaceError, failed=StagingError)


def _free_bytes(path: Path) -> int:
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize


def _require_space(path: Path, needed: int, what: str) -> None:
    try:
        free = _free_bytes(path)
    except OSError as err:
        raise _space_check_error(err, path) from err
    if free < needed + SPACE_MARGIN_BYTES:
        raise StagingSpaceError(
            f"{what} needs {needed} bytes plus {SPACE_MARGIN_BYTES} in reserve"
            f" in {path}, {free} are free",
            path=str(path),
            free=str(free),
            needed=str(needed),
        )


def _file_system(path: Path) -> FileSystem:
    try:
        return FileSystem.of(path)
    except OSError as err:
        raise _space_check_error(err, path) from err


def _space_check_error(err: OSError, path: Path) -> BackupOffloadError:
    what = f"Checking the free space of {path} failed"
    return os_error(err, what, writing=False, where=_STAGING)


def _clearing(config_dir: Path, restore_database: bool, staged: Path) -> Clearing:
    """Return what Home Assistant's restore frees when it empties the config.

    Raises ConfigNotClearableError for what would stop it halfway. The
    staged archive stays on disk (Home Assistant holds it open).
    """
    try:
        return plan_clearing(
            config_dir,
            keep_names(restore_database),
            skip=[staged.relative_to(config_dir).as_posix()],
        )
    except OSError as err:
        what = f"Reading {config_dir} failed"
        raise os_error(err, what, writing=False, where=_STAGING) from err


def _read_sidecar(path: Path) -> str | None:
    """Return the digest in the location's ``<file>.sha256``, if there is one."""
    try:
        return read_sidecar(path)
    except OSError as err:
        raise read_error(_sidecar(path), err) from err


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _local_failure(err: OSError, what: str) -> BackupOffloadError:
    """Return the typed error for an OSError while writing on this machine."""
    return os_error(err, what, writing=True, where=_STAGING)


def _copy(source: Path, target: Path) -> str:
    """Copy ``source`` to the new file ``target``, fsync it; return its SHA-256.

    Read errors are the location's, write errors this machine's.
    """
    sha = hashlib.sha256()
    try:
        src = source.open("rb", buffering=0)
    except OSError as err:
        raise read_error(source, err) from err
    with src:
        try:
            fd = os.open(
                target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
        except OSError as err:
            raise _local_failure(err, f"Creating {target}") from err
        with os.fdopen(fd, "wb") as out:
            while True:
                try:
                    chunk = src.read(CHUNK)
                except OSError as err:
                    raise read_error(source, err) from err
                if not chunk:
                    break
                sha.update(chunk)
                try:
                    out.write(chunk)
                except OSError as err:
                    raise _local_failure(err, f"Copying to {target}") from err
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as err:
                raise _local_failure(err, f"Copying to {target}") from err
    return sha.hexdigest()


def _ensure_dir(path: Path) -> bool:
    """Create ``path`` if missing; return True when it was created here."""
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise StagingError(f"{path} exists and is not a directory") from None
        return False
    except OSError as err:
        raise _local_failure(err, f"Creating {path}") from err
    return True


def stage(
    source: Path,
    backup: BackupInfo,
    password: str | None,
    *,
    config_dir: Path,
    is_newer: Callable[[str], bool],
    temp_dir: Path | None = None,
    restore_database: bool = True,
) -> Staged:
    """Validate a backup and copy it, verified, into ``tmp_backups``.

    In order, cheapest refusal first: Home Assistant version, password and
    layout (reads the start), a configuration directory that Home
    Assistant's restore could not empty (``restore_space.plan_clearing``),
    local space for the copy, the copy itself (compared with the location's
    ``.sha256`` when there is one), a full verification of the local copy
    (decrypt, decompress, every member checked for safety, checksum of the
    copy), and the space Home Assistant's restore at startup needs on every
    file system it writes to (``restore_space``; ``temp_dir`` is Home
    Assistant's temporary directory, where it unpacks the archive). On any
    error nothing is left behind, not even ``tmp_backups`` when it was made
    here.
    """
    check_version(backup, is_newer)
    password = effective_password(backup, password)
    check_start(source, backup, password)
    temp_dir = Path(tempfile.gettempdir()) if temp_dir is None else temp_dir
    staging = config_dir / STAGING_DIR
    final = staging / f"{STAGED_PREFIX}{id_part(backup.backup_id)}.tar"
    clearing = _clearing(config_dir, restore_database, final)
    created_dir = _ensure_dir(staging)
    token = secrets.token_hex(4)
    temp = staging / f"{TEMP_PREFIX}{id_part(backup.backup_id)}-{token}.tar.tmp"
    try:
        sizer = ArchiveSizer(
            temp_block=_file_system(temp_dir).block,
            config_block=_file_system(config_dir).block,
            restore_database=restore_database,
        )
        verified = _copy_verified(source, temp, backup, password, sizer)
        require_configuration(backup, holds=verified.configuration)
        _require_startup_space(
            temp, password, sizer, clearing, config_dir=config_dir, temp_dir=temp_dir
        )
        _publish(temp, final)
    except BaseException:
        # An older staged copy of the same backup may belong to a restore
        # that is still pending: only our own files go.
        remove_quietly(temp, _sidecar(temp))
        if created_dir:
            with contextlib.suppress(OSError):
                staging.rmdir()
        raise
    return Staged(
        backup=backup,
        path=final,
        password=password,
        verified=verified,
        created_dir=created_dir,
    )


def _copy_verified(
    source: Path,
    temp: Path,
    backup: BackupInfo,
    password: str | None,
    sizer: ArchiveSizer,
) -> VerifyResult:
    """Copy the backup to ``temp`` and verify the copy completely.

    The copy must match the location's ``.sha256`` when there is one; the
    verification (against a sidecar of the copy's own digest) measures the
    archive for ``sizer``.
    """
    _require_space(temp.parent, backup.size, "Copying the backup to this machine")
    expected = _read_sidecar(source)
    digest = _copy(source, temp)
    _check_digest(backup, digest, expected)
    sidecar = _sidecar(temp)
    try:
        _write_new(sidecar, f"{digest}  {temp.name}\n".encode())
    except OSError as err:
        raise _local_failure(err, f"Writing {sidecar}") from err
    try:
        verified = verify_backup(temp, password, sizer.add)
    except LocationUnavailableError as err:
        # The copy is local: a read error is this machine's problem.
        raise StagingError(f"Reading the staged copy failed: {err}") from err
    remove_quietly(sidecar)
    return verified


def _publish(temp: Path, final: Path) -> None:
    """Rename the verified copy to its final name durably, or leave nothing."""
    try:
        temp.replace(final)
        try:
            fsync_dir(final.parent)
        except BaseException:
            remove_quietly(final)
            raise
    except OSError as err:
        raise _local_failure(err, f"Renaming to {final}") from err


def _require_startup_space(
    staged: Path,
    password: str | None,
    sizer: ArchiveSizer,
    clearing: Clearing,
    *,
    config_dir: Path,
    temp_dir: Path,
) -> None:
    """Refuse a restore that would fill a disk at startup (``restore_space``).

    Measured with the staged copy in place: it stays until the end.
    """
    temp = _file_system(temp_dir)
    try:
        if sizer.links:
            sizer.measure_links(staged, password)
        unpacked = sizer.unpacked() + outer_usage(staged, temp.block)
    except LocationUnavailableError as err:
        raise StagingError(f"Reading the staged copy again failed: {err}") from err
    needs = startup_needs(
        config=_file_system(config_dir),
        temp=temp,
        unpacked=unpacked,
        copied=sizer.copied(),
        freed=clearing.freed,
    )
    require_startup(
        needs,
        f"the configuration directory is {config_dir}, the temporary directory"
        f" {temp_dir}",
    )


def _check_digest(backup: BackupInfo, digest: str, expected: str | None) -> None:
    if expected is not None and digest != expected:
        raise CorruptBackupError(
            f"{backup.file} does not match its checksum file: it is damaged",
            file=backup.file,
        )


def discard_staged(staged: Staged) -> None:
    """Remove a staged archive (the restore was abandoned)."""
    remove_quietly(staged.path)
    if staged.created_dir:
        with contextlib.suppress(OSError):
            staged.path.parent.rmdir()


# --- instruction --------------------------------------------------------------


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` (mode 0600) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file and a rename, durably."""
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_new(temp, data)
        temp.replace(path)
        fsync_dir(path.parent)
    except BaseException:
        remove_quietly(temp)
        raise


def write_instruction(
    staged: Staged,
    *,
    config_dir: Path,
    instruction_name: str,
    instruction: dict[str, Any],
    marker: dict[str, Any],
) -> Path:
    """Write our marker, then Home Assistant's restore instruction; return it.

    ``instruction`` is the JSON Home Assistant's restore reads (built by the
    caller for the installed version). Both files are written atomically;
    the instruction holds the password, so it is readable by its owner only.
    If the instruction cannot be written, the marker is removed again.
    """
    marker_path = staged.path.parent / MARKER_NAME
    target = config_dir / instruction_name
    try:
        _write_atomic(marker_path, json.dumps(marker, indent=2).encode())
        try:
            _write_atomic(target, json.dumps(instruction).encode())
        except BaseException:
            remove_quietly(marker_path)
            raise
    except OSError as err:
        raise _local_failure(err, f"Writing {target}") from err
    return target
