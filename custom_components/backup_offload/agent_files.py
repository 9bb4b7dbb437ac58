"""File work of Home Assistant's backup agent (synchronous core).

The agent (``backup.py``) receives a backup as a stream of chunks and sends
one back the same way. Each function here is one executor job: starting an
upload probes the location and creates a hidden temporary file; each chunk
(or small batch) is written by its own job, so memory stays bounded and a
share that hangs in the middle is noticed within the probe timeout; the last
job fsyncs, checks that the file is a Home Assistant backup, writes the
``.sha256`` sidecar and renames both into place. Until then nothing is
visible under a backup's name, and a failure removes what was written.
Nothing here imports Home Assistant.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
from dataclasses import dataclass, field, replace
import hashlib
import os
from pathlib import Path
import secrets
import stat
from typing import TYPE_CHECKING, BinaryIO, Final

from .archive import TEMP_PREFIX, BackupInfo, find_backup, read_backup_info
from .errors import (
    BackupNotFoundError,
    BackupOffloadError,
    CorruptBackupError,
    InvalidBackupError,
    WriteFailedError,
)
from .fileops import fsync_dir, write_error
from .jobs import Location, Snapshot, probe_location
from .metadata import SIDECAR_SUFFIX, file_name, parse_date

if TYPE_CHECKING:
    from _hashlib import HASH

CHUNK: Final = 1 << 20
"""Bytes per read job of a download, and the batch size of upload writes."""
UPLOAD_PREFIX: Final = f"{TEMP_PREFIX}agent-"
"""Temporary uploads start with the engine's prefix, so the stale-file
cleanup at setup removes what a crash left behind."""
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


@dataclass(slots=True)
class Upload:
    """A backup being received into a hidden temporary file in the location.

    Owned by the one coroutine that receives the backup; its jobs run one
    after another. A buffered file object, not a bare descriptor: if a write
    job is abandoned (cancelled upload), ``close`` waits for it under the
    object's lock instead of freeing a descriptor number that the still
    running write could then hit in another file.
    """

    temp: Path
    file: BinaryIO
    """Stays open across jobs, until ``finish_upload`` or ``abort_upload``."""
    sha256: HASH = field(default_factory=hashlib.sha256)
    size: int = 0
    extra_files: list[Path] = field(default_factory=list)
    """Other temporary files of this upload (the sidecar), for ``abort``."""


@dataclass(slots=True)
class Download:
    """An open backup archive being sent (buffered, for the same reason)."""

    info: BackupInfo
    file: BinaryIO
    """Stays open across jobs, until ``close_download``."""


def _safe_id(backup_id: str) -> str:
    """Return the id as far as it can appear in a file name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in backup_id)[:64]


def start_upload(location: Location, backup_id: str, size: int) -> Upload:
    """Probe for writing (with ``size`` as the space estimate), then open a temp file.

    A backup with the same id already in the location is refused before a
    byte is written: two archives with one id would make the id ambiguous.
    """
    probe_location(location, for_write=True, needed_bytes=max(size, 0))
    for backup in location.scanner.scan(location.path).backups:
        if backup.backup_id == backup_id:
            raise BackupOffloadError(
                f"A backup with id {backup_id} already exists: {backup.file}",
                file=backup.file,
            )
    temp = (
        location.path
        / f"{UPLOAD_PREFIX}{_safe_id(backup_id)}-{secrets.token_hex(4)}.tar.tmp"
    )
    try:
        # Exclusive create, mode 0600: never reuse or expose an existing file.
        file = open(temp, "xb", buffering=CHUNK, opener=_private)  # noqa: SIM115
    except OSError as err:
        raise write_error(err, temp.name) from err
    return Upload(temp=temp, file=file)


def write_chunk(upload: Upload, data: bytes) -> int:
    """Append ``data`` to the temporary file; return the bytes written so far."""
    try:
        upload.file.write(data)
    except OSError as err:
        raise write_error(err, upload.temp.name) from err
    upload.sha256.update(data)
    upload.size += len(data)
    return upload.size


def _private(path: str, flags: int) -> int:
    """Open new files readable by their owner only, like the engine's archives."""
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


def _no_follow(path: str, flags: int) -> int:
    """Open without following a symlink or blocking on a FIFO swapped in."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def _read_uploaded(upload: Upload, backup_id: str) -> BackupInfo:
    """Read backup.json of the received file: only a real backup is kept."""
    try:
        info = read_backup_info(upload.temp)
    except BackupNotFoundError as err:  # someone removed our temporary file
        raise WriteFailedError(f"{upload.temp.name} vanished") from err
    except (InvalidBackupError, CorruptBackupError) as err:
        raise InvalidBackupError(
            f"The received file is not a complete Home Assistant backup: {err}"
        ) from err
    if info.backup_id != backup_id:
        raise InvalidBackupError(
            f"The received backup has id {info.backup_id}, expected {backup_id}"
        )
    return info


def _publish(upload: Upload, final: Path, digest: str) -> None:
    """Write the sidecar, rename it and the archive into place, fsync the dir.

    The sidecar goes first so that a failure leaves either both or neither.
    """
    sidecar_temp = upload.temp.with_name(upload.temp.name + SIDECAR_SUFFIX)
    fd = os.open(sidecar_temp, _OPEN_FLAGS, 0o600)
    upload.extra_files.append(sidecar_temp)
    try:
        os.write(fd, f"{digest}  {final.name}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    sidecar = final.with_name(final.name + SIDECAR_SUFFIX)
    sidecar_temp.rename(sidecar)
    try:
        upload.temp.rename(final)
        try:
            fsync_dir(final.parent)
        except BaseException:
            # Not durable: a backup that may vanish at the next power cut is
            # worse than a reported failure.
            final.unlink(missing_ok=True)
            raise
    except BaseException:
        sidecar.unlink(missing_ok=True)
        raise


def finish_upload(
    location: Location, upload: Upload, backup_id: str, *, checked: Callable[[], None]
) -> tuple[BackupInfo, Snapshot]:
    """Probe, fsync, check and publish the received backup; list again.

    ``checked`` is called once the probe passed: an fsync of a large file on
    a slow share may take long without the share being hung.
    """
    status = probe_location(location)
    checked()
    try:
        with upload.file:
            upload.file.flush()
            os.fsync(upload.file.fileno())
    except OSError as err:
        raise write_error(err, upload.temp.name) from err
    info = _read_uploaded(upload, backup_id)
    # Named like the backups the actions create (name, time, id), with the
    # time as backup.json states it, so the name matches what the UI shows.
    final = location.path / file_name(info.name, parse_date(info.date), backup_id)
    if os.path.lexists(final):
        raise WriteFailedError(f"{final.name} already exists", file=final.name)
    try:
        _publish(upload, final, upload.sha256.hexdigest())
    except OSError as err:
        raise write_error(err, final.name) from err
    scan = location.scanner.scan(location.path)
    return (
        replace(info, file=final.name),
        Snapshot(status=status, backups=scan.backups, invalid=scan.invalid),
    )


def abort_upload(upload: Upload) -> None:
    """Close and remove the temporary files of a failed upload.

    Best effort: if the share is gone, the cleanup at the next setup removes
    the leftovers.
    """
    with contextlib.suppress(OSError):
        upload.file.close()
    for path in (upload.temp, *upload.extra_files):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def open_backup(location: Location, backup_id: str) -> Download:
    """Probe, find the backup by id and open its archive for reading.

    Raises BackupNotFoundError, or LocationUnavailableError.
    """
    probe_location(location)
    info = find_backup(location.path, backup_id, location.scanner)
    path = location.path / info.file
    try:
        # O_NOFOLLOW: the listing saw a regular file; a symlink swapped in
        # since then is not followed out of the location.
        file = open(path, "rb", buffering=CHUNK, opener=_no_follow)  # noqa: SIM115
    except OSError as err:
        raise BackupOffloadError(f"Opening {info.file} failed: {err}") from err
    if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        file.close()
        raise BackupOffloadError(f"{info.file} is not a regular file")
    return Download(info=info, file=file)


def read_chunk(download: Download) -> bytes:
    """Return the next chunk of the archive; empty at the end."""
    try:
        return download.file.read(CHUNK)
    except OSError as err:
        raise BackupOffloadError(f"Reading {download.info.file} failed: {err}") from err


def close_download(download: Download) -> None:
    """Close the archive (errors on close do not matter for a reader)."""
    with contextlib.suppress(OSError):
        download.file.close()
