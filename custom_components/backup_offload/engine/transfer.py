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

from collections.abc import Callable, Sequence
import contextlib
from dataclasses import dataclass, field, replace
import errno
import hashlib
import os
from pathlib import Path
import secrets
import threading
from typing import TYPE_CHECKING, BinaryIO, Final

from . import worker
from .archive.read import each_member, read_archive, verify_backup
from .errors import (
    BackupNotFoundError,
    BackupOffloadError,
    CopyMismatchError,
    CopySourceError,
    CorruptBackupError,
    InvalidBackupError,
    WriteFailedError,
    WrongPasswordError,
)
from .fileops import (
    Local,
    fsync_dir,
    open_regular,
    os_error,
    read_error,
    write_error,
)
from .jobs import Location, LocationState, probe_location, state_of
from .listing import find_backup
from .metadata import (
    SIDECAR_SUFFIX,
    TEMP_PREFIX,
    BackupInfo,
    file_name,
    id_part,
    parse_date,
    read_backup_info,
)
from .temporary import LiveFiles, lock_temporary
from .validation import is_valid_backup_id

if TYPE_CHECKING:
    from _hashlib import HASH

CHUNK: Final = 1 << 20
"""Bytes per read job of a download, and the batch size of upload writes."""
READ_BACK_CHUNK: Final = 4 << 20
"""Bytes per read when a copy is read back (one job reads the whole file)."""
UPLOAD_PREFIX: Final = f"{TEMP_PREFIX}agent-"
"""Temporary uploads start with the engine's prefix, so the stale-file
cleanup removes what a crash left behind."""
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
    """Stays open across jobs, until ``finish_upload`` or ``abort_upload``;
    its lock keeps the stale-file cleanup away however long the stream
    pauses."""
    live: LiveFiles
    """The location's files being written, which hold this upload's names."""
    sha256: HASH = field(default_factory=hashlib.sha256)
    size: int = 0
    extra_files: list[Path] = field(default_factory=list)
    """Other temporary files of this upload (the sidecar), for ``abort``."""
    abandoned: threading.Event = field(default_factory=threading.Event)
    """Set by the receiver that gave up on the upload (it failed, or a job
    hung and was left to finish on its own): a job of it that is still
    running removes the upload instead of going on, so a late share does not
    publish a backup whose transfer was reported as failed."""


@dataclass(slots=True)
class Download:
    """An open backup archive being sent (buffered, for the same reason).

    The archive was checked completely before (``open_backup``); the bytes
    sent are hashed on the way, and the last piece is held back until the
    end shows that they are the bytes that were checked.
    """

    info: BackupInfo
    file: BinaryIO
    """Stays open across jobs, until ``close_download``."""
    checked: str
    """SHA-256 of the archive as it was checked."""
    sha256: HASH = field(default_factory=hashlib.sha256)
    held: bytes = b""
    """The piece read last, sent with the next read (or once it is the last)."""


def start_upload(location: Location, backup_id: str, size: int) -> Upload:
    """Probe for writing (with ``size`` as the space estimate), then open a temp file.

    An id that is not a plain id is refused before anything is touched
    (Home Assistant's restore would name a file after it), and so is an id
    already in the location: two archives with one id make it ambiguous.
    """
    if not is_valid_backup_id(backup_id):
        raise InvalidBackupError(
            f"{backup_id!r} is not a plain backup id (letters, digits, - and _)",
            backup_id=backup_id,
        )
    probe_location(location, for_write=True, needed_bytes=max(size, 0))
    for backup in location.scanner.scan(location.path).backups:
        if backup.backup_id == backup_id:
            raise BackupOffloadError(
                f"A backup with id {backup_id} already exists: {backup.file}",
                file=backup.file,
            )
    temp = (
        location.path
        / f"{UPLOAD_PREFIX}{id_part(backup_id)}-{secrets.token_hex(4)}.tar.tmp"
    )
    location.live.add(*_names(temp))
    try:
        # Exclusive create, mode 0600: never reuse or expose an existing file.
        file = open(temp, "xb", buffering=CHUNK, opener=_private)  # noqa: SIM115
    except OSError as err:
        location.live.discard(*_names(temp))
        raise write_error(err, temp.name) from err
    return Upload(temp=temp, file=file, live=location.live)


def _names(temp: Path) -> tuple[str, str]:
    """Return the names of an upload's temporary archive and sidecar."""
    return temp.name, temp.name + SIDECAR_SUFFIX


def write_chunk(upload: Upload, data: bytes) -> int:
    """Append ``data`` to the temporary file; return the bytes written so far."""
    try:
        upload.file.write(data)
    except OSError as err:
        raise write_error(err, upload.temp.name) from err
    _stop_if_abandoned(upload)
    upload.sha256.update(data)
    upload.size += len(data)
    return upload.size


def _private(path: str, flags: int) -> int:
    """Open a new file readable by its owner only, and lock it while it is open.

    As the engine's archives are: the lock keeps the stale-file cleanup away
    (this Home Assistant's after a reload, or another one's).
    """
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    lock_temporary(fd)
    return fd


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
    lock_temporary(fd)
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
    location: Location,
    upload: Upload,
    backup_id: str,
    checked: Callable[[], None],
    *,
    read_back: bool = False,
) -> tuple[BackupInfo, LocationState]:
    """Probe, fsync, check and publish the received backup; list again.

    ``checked`` is called once the probe passed: an fsync of a large file on
    a slow share may take long without the share being hung. With
    ``read_back`` (a copy), the stored file is read back from the location
    before it is published, and must hash to what was received.
    """
    status = probe_location(location)
    checked()
    _stop_if_abandoned(upload)
    try:
        with upload.file:
            upload.file.flush()
            os.fsync(upload.file.fileno())
            if read_back:
                # While the file is open: its lock keeps the cleanup away.
                _check_read_back(upload)
    except OSError as err:
        raise write_error(err, upload.temp.name) from err
    info = _read_uploaded(upload, backup_id)
    # Named like the backups the actions create (name, time, id), with the
    # time as backup.json states it, so the name matches what the UI shows.
    final = location.path / file_name(info.name, parse_date(info.date), backup_id)
    if os.path.lexists(final):
        raise WriteFailedError(f"{final.name} already exists", file=final.name)
    _stop_if_abandoned(upload)
    try:
        _publish(upload, final, upload.sha256.hexdigest())
    except OSError as err:
        raise write_error(err, final.name) from err
    upload.live.discard(*_names(upload.temp))
    scan = location.scanner.scan(location.path)
    return (
        replace(info, file=final.name),
        state_of(status, scan),
    )


def _check_read_back(upload: Upload) -> None:
    """Read the stored temporary file back; raise unless it is what was received.

    The written pages are dropped from the cache first where the file
    system allows it, so the bytes come from the location's storage, not
    from this machine's memory. The file read must be the one written (same
    inode): one swapped in under its name is a mismatch too.
    """
    written = os.fstat(upload.file.fileno())
    with contextlib.suppress(OSError):  # advice only; some file systems refuse
        os.posix_fadvise(upload.file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    try:
        with open_regular(upload.temp, buffering=0) as file:
            found = os.fstat(file.fileno())
            sha256 = hashlib.sha256()
            while data := file.read(READ_BACK_CHUNK):
                sha256.update(data)
            digest = sha256.hexdigest()
    except OSError as err:
        if err.errno == errno.ENOENT:  # someone removed our temporary file
            raise WriteFailedError(f"{upload.temp.name} vanished") from err
        raise read_error(upload.temp, err) from err
    if (found.st_dev, found.st_ino) != (written.st_dev, written.st_ino):
        raise CopyMismatchError(f"{upload.temp.name} was replaced while it was written")
    if found.st_size != upload.size or digest != upload.sha256.hexdigest():
        raise CopyMismatchError(
            f"Read back from the location, {upload.temp.name} has"
            f" {found.st_size} bytes and SHA-256 {digest}; received were"
            f" {upload.size} bytes with SHA-256 {upload.sha256.hexdigest()}"
        )


def _stop_if_abandoned(upload: Upload) -> None:
    """Remove the upload and stop if its receiver gave up on it meanwhile."""
    if upload.abandoned.is_set():
        abort_upload(upload)
        raise WriteFailedError(f"{upload.temp.name}: the transfer was given up")


def abort_upload(upload: Upload) -> None:
    """Close and remove the temporary files of a failed upload.

    Best effort: if the share is gone, a later refresh's cleanup removes the
    leftovers.
    """
    with contextlib.suppress(OSError):
        upload.file.close()
    for path in (upload.temp, *upload.extra_files):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    upload.live.discard(*_names(upload.temp))


def check_download(path: Path, passwords: Sequence[str]) -> str:
    """Check a backup completely, as ``verify`` does; return its SHA-256.

    Home Assistant's restore from its backup page extracts what it downloads
    with ``filter="fully_trusted"``: a backup is handed over only after its
    whole structure was checked. The inner archive can only be checked with
    its password: each password known here is tried; an archive none of
    them opens is checked as far as it can be (the outer tar), and Home
    Assistant's restore needs its password, which someone who planted it
    would have to give.
    """
    for password in passwords:
        try:
            return verify_backup(path, password).sha256
        except WrongPasswordError:
            continue
    try:
        return verify_backup(path, None).sha256
    except WrongPasswordError:
        pass
    layout = read_archive(
        path,
        None,
        each_member(lambda name, tar, member: None),
        wanted=lambda name: False,
        digest=True,
    )
    return layout.sha256 or ""


def open_backup(
    location: Location,
    backup_id: str,
    passwords: Sequence[str],
    checked: Callable[[], None],
) -> Download:
    """Probe, find the backup by id, check it completely and open it.

    The check runs in a worker process (``check_download``). Raises
    BackupNotFoundError, LocationUnavailableError, and what verify raises
    for a backup that is damaged or unsafe.
    """
    probe_location(location)
    checked()
    info = find_backup(location.path, backup_id, location.scanner)
    path = location.path / info.file
    digest = worker.run(check_download, path, list(passwords))
    try:
        file = open_regular(path, buffering=CHUNK)
    except OSError as err:
        raise read_error(path, err) from err
    return Download(info=info, file=file, checked=digest)


def hash_backup(
    location: Location, backup_id: str, checked: Callable[[], None]
) -> tuple[str, int]:
    """Probe, find the backup by id and return its SHA-256 and size.

    A move finds a backup already in the location: the source's copy is
    deleted only when the two are proven the same bytes.
    """
    probe_location(location)
    checked()
    info = find_backup(location.path, backup_id, location.scanner)
    path = location.path / info.file
    digest = hashlib.sha256()
    size = 0
    try:
        with open_regular(path, buffering=0) as file:
            while data := file.read(CHUNK):
                digest.update(data)
                size += len(data)
    except OSError as err:
        raise read_error(path, err) from err
    return digest.hexdigest(), size


def read_chunk(download: Download) -> bytes:
    """Return the next chunk of the archive; empty at the end.

    The last chunk comes only once the whole file hashed to what was
    checked; a file that changed since is refused before its end is sent.
    """
    while True:
        try:
            data = download.file.read(CHUNK)
        except OSError as err:
            raise read_error(Path(download.info.file), err) from err
        if not data:
            if download.held and download.sha256.hexdigest() != download.checked:
                raise CorruptBackupError(
                    f"{download.info.file} changed since it was checked: not sent",
                    file=download.info.file,
                )
            piece, download.held = download.held, b""
            return piece
        download.sha256.update(data)
        piece, download.held = download.held, data
        if piece:
            return piece


def close_download(download: Download) -> None:
    """Close the archive (errors on close do not matter for a reader)."""
    with contextlib.suppress(OSError):
        download.file.close()


def open_source(path: Path) -> BinaryIO:
    """Open a backup of Home Assistant's local agent to copy it (a regular file).

    The local agent names the file (``get_backup_path``); its failures are
    the source's, not the location's (``CopySourceError``).
    """
    try:
        return open_regular(path, buffering=0)
    except OSError as err:
        raise _source_error(err, path) from err


def read_source(file: BinaryIO, path: Path) -> bytes:
    """Return the next chunk of a local agent's backup; empty at the end."""
    try:
        return file.read(CHUNK)
    except OSError as err:
        raise _source_error(err, path) from err


def close_source(file: BinaryIO) -> None:
    """Close a local agent's backup (errors on close do not matter for a reader)."""
    with contextlib.suppress(OSError):
        file.close()


def _source_error(err: OSError, path: Path) -> BackupOffloadError:
    """Return the error of reading Home Assistant's own backup at ``path``."""
    return os_error(
        err,
        f"Reading {path.name}",
        writing=False,
        where=Local(space=CopySourceError, failed=CopySourceError),
    )
