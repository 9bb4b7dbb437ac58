"""Home Assistant backup archives: the engine's public API, and creating them.

Everything here is synchronous and made to run in one executor job per
operation; nothing imports Home Assistant. A backup is written straight into
the location under a hidden temporary name, flushed, fsync'ed and renamed,
so a half-written archive is never visible under a backup's name; any error
removes the temporary files and raises a typed error (see ``errors.py``).

Reading and verifying are in ``archive_read.py``, extracting in
``extract.py``, listing in ``listing.py``; they are re-exported here so
callers need one import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
import hashlib
import io
import os
from pathlib import Path
import secrets
import stat
import tarfile
import time
from typing import Any, Final

from ..errors import (
    IncompleteBackupError,
    LocationUnavailableError,
    WriteFailedError,
)
from ..fileops import fsync_dir, write_error
from ..gil import responsive_call
from ..metadata import (
    BACKUP_JSON_MEMBER,
    EXTRA_KEY,
    EXTRA_VERSION,
    INNER_NAME,
    SIDECAR_SUFFIX,
    TEMP_PREFIX,
    BackupInfo,
    backup_json,
    clean_name,
    file_name,
    id_part,
    parse_backup_json,
)
from ..temporary import lock_temporary
from . import contents as snapshot
from .contents import CHUNK, Entry, Kind, Plan, SourceError
from .excludes import build_matcher, exclude_patterns, normalize_pattern
from .securetar_compat import (
    WRITE_VERSION,
    ArchiveWriter,
    forget_members,
    open_writer,
)

# Leftover database copies in the config dir older than this are a crash's.
_STALE_SCRATCH_SECONDS: Final = 6 * 3600
_PROGRESS_STEP: Final = 0.01

DatabaseLock = Callable[[], AbstractContextManager[None]]


@dataclass(frozen=True, slots=True)
class CreateResult:
    """A new backup, and the paths that were skipped or stored as they changed."""

    info: BackupInfo
    skipped: list[str]
    """Relative paths skipped or reported (vanished, changed, special files)."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Relative path -> what happened to it, for each path in ``skipped``."""


# --- writing ------------------------------------------------------------------


class _Destination:
    """The temporary archive: buffered, seekable, remembers its first OSError.

    securetar seeks back to patch headers, and a failing write can be followed
    by more failing writes while the tar objects close; the first error is
    the one that tells the user what happened.

    Once closed (after a failure) it swallows further calls: securetar 2025.x
    leaves a generator behind when its inner tar fails to close, and that
    generator's cleanup writes to this file whenever it is garbage-collected.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: OSError | None = None
        self._file = os.fdopen(fd, "wb", buffering=CHUNK, closefd=True)

    def _record(self, err: OSError) -> OSError:
        if self.error is None:
            self.error = err
        return err

    def write(self, data: bytes) -> int:
        """Write to the buffer (and the location)."""
        if self._file.closed:
            return len(data)
        try:
            return self._file.write(data)
        except OSError as err:
            raise self._record(err) from None

    def tell(self) -> int:
        """Return the position."""
        return 0 if self._file.closed else self._file.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (flushes the buffer)."""
        if self._file.closed:
            return 0
        try:
            return self._file.seek(offset, whence)
        except OSError as err:
            raise self._record(err) from None

    def flush(self) -> None:
        """Flush the buffer to the location."""
        try:
            self._file.flush()
        except OSError as err:
            raise self._record(err) from None

    def sync(self) -> int:
        """Flush and fsync; return the file size."""
        self.flush()
        try:
            os.fsync(self.fd)
            return os.fstat(self.fd).st_size
        except OSError as err:
            raise self._record(err) from None

    def digest(self) -> str:
        """Return the SHA-256 of the written file.

        Read back once: the layout makes hashing during the write impossible,
        because securetar patches the inner archive's header (its size) after
        its data. Right after fsync the data usually still is in the page cache.
        """
        sha = hashlib.sha256()
        offset = 0
        try:
            while chunk := os.pread(self.fd, CHUNK, offset):
                sha.update(chunk)
                offset += len(chunk)
        except OSError as err:
            raise self._record(err) from None
        return sha.hexdigest()

    def close(self) -> None:
        """Close; errors here only matter if nothing failed before."""
        try:
            self._file.close()
        except OSError as err:
            self._record(err)


class _Progress:
    """Reports the fraction of file data stored, in steps of 1 %."""

    def __init__(self, callback: Callable[[float], None] | None, total: int) -> None:
        self._callback = callback
        self._total = max(total, 1)
        self._done = 0
        self._reported = 0.0

    def advance(self, size: int) -> None:
        if self._callback is None or not size:
            return
        self._done += size
        fraction = min(self._done / self._total, 1.0)
        if fraction - self._reported >= _PROGRESS_STEP:
            self._reported = fraction
            self._callback(fraction)

    def finish(self) -> None:
        if self._callback is not None and self._reported < 1.0:
            self._callback(1.0)


@dataclass(slots=True)
class _Job:
    """One backup being written: where from, and what happened so far."""

    config_dir: Path
    inner: tarfile.TarFile
    progress: _Progress
    scratch: Callable[[str], Path]
    skipped: dict[str, str] = field(default_factory=dict)

    def _add(
        self, member: tarfile.TarInfo, data: snapshot.ExactReader | None = None
    ) -> None:
        self.inner.addfile(member, data)
        # tarfile keeps every header it wrote; nothing here needs them, and
        # tens of thousands of live objects make each garbage collection
        # (which holds the GIL, so stalls the event loop) slower.
        forget_members(self.inner)

    def add_dir(self, entry: Entry) -> None:
        try:
            info = os.lstat(self.config_dir / entry.rel)
        except FileNotFoundError:
            self.skipped[entry.rel] = snapshot.VANISHED
            return
        if stat.S_ISDIR(info.st_mode):
            member = snapshot.tarinfo(entry.rel, info)
            member.type = tarfile.DIRTYPE
            self._add(member)
        else:
            self.skipped[entry.rel] = snapshot.REPLACED

    def add_link(self, entry: Entry) -> None:
        path = self.config_dir / entry.rel
        try:
            info = path.lstat()
            target = str(path.readlink())
        except FileNotFoundError:
            self.skipped[entry.rel] = snapshot.VANISHED
            return
        except OSError:  # no longer a symlink (EINVAL)
            self.skipped[entry.rel] = snapshot.REPLACED
            return
        if target != entry.link:
            # Checked for escaping as it was during the walk, not as it is now.
            self.skipped[entry.rel] = snapshot.REPLACED
            return
        member = snapshot.tarinfo(entry.rel, info)
        member.type = tarfile.SYMTYPE
        member.linkname = target
        self._add(member)

    def add_file(self, entry: Entry, source: Path | None = None) -> None:
        """Store a regular file; ``source`` is read instead when given."""
        path = source or self.config_dir / entry.rel
        try:
            opened = snapshot.open_file(path)
        except OSError as err:
            raise SourceError(entry.rel, err) from err
        if isinstance(opened, str):
            self.skipped[entry.rel] = opened
            return
        try:
            before = os.fstat(opened)
            member = snapshot.tarinfo(entry.rel, before)
            member.size = before.st_size
            reader = snapshot.ExactReader(
                opened, entry.rel, before.st_size, self.progress.advance
            )
            self._add(member, reader)
            if reader.changed or snapshot.changed_since(opened, before):
                self.skipped[entry.rel] = snapshot.CHANGED
        finally:
            os.close(opened)

    def add_entries(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            if entry.kind is Kind.DIR:
                self.add_dir(entry)
            elif entry.kind is Kind.LINK:
                self.add_link(entry)
            else:
                self.add_file(entry)

    def add_databases(self, entries: list[Entry], lock: DatabaseLock | None) -> None:
        """Store the database files consistently.

        Under ``lock`` (the recorder is paused) they are stored as they are;
        without it each SQLite database is snapshotted through SQLite's online
        backup API, and its -wal/-shm/-journal files are left out because the
        snapshot holds everything.
        """
        if not entries:
            return
        if lock is not None:
            with lock():
                self.add_entries(entries)
            return
        mains = snapshot.sqlite_mains(entries)
        copied = {entry.rel for entry in mains if self._add_sqlite(entry)}
        for entry in entries:
            if entry not in mains and not snapshot.belongs_to(entry.rel, copied):
                self.add_file(entry)

    def _add_sqlite(self, entry: Entry) -> bool:
        copy = self.scratch(entry.rel)
        try:
            problem = snapshot.copy_sqlite(self.config_dir / entry.rel, copy)
            if problem is not None:
                self.skipped[entry.rel] = problem
                self.add_file(entry)
                return False
            self.add_file(entry, source=copy)
            return True
        finally:
            copy.unlink(missing_ok=True)


def _write_contents(
    writer: ArchiveWriter,
    meta: bytes,
    the_plan: Plan,
    *,
    config_dir: Path,
    compress: bool,
    progress: _Progress,
    scratch: Callable[[str], Path],
    database_lock: DatabaseLock | None,
) -> dict[str, str]:
    """Write backup.json and the inner archive; return what was skipped."""
    member = tarfile.TarInfo(BACKUP_JSON_MEMBER)
    member.size = len(meta)
    member.mtime = int(time.time())
    member.mode = 0o644
    writer.tar.addfile(member, io.BytesIO(meta))
    inner_name = f"{INNER_NAME}.gz" if compress else INNER_NAME
    with writer.inner(inner_name, compress=compress) as inner:
        job = _Job(config_dir, inner, progress, scratch, dict(the_plan.skipped))
        job.add_dir(Entry("", Kind.DIR))
        job.add_entries(the_plan.entries)
        job.add_databases(the_plan.databases, database_lock)
    return job.skipped


def temporary_names(backup_id: str) -> tuple[str, str]:
    """Return the temporary names of a backup's archive and sidecar."""
    return (
        f"{TEMP_PREFIX}{id_part(backup_id)}.tar.tmp",
        f"{TEMP_PREFIX}{id_part(backup_id)}.sha256.tmp",
    )


@dataclass(slots=True)
class _Temp:
    """The temporary files of one backup, relative to the location's directory.

    Everything is created, renamed and removed through a descriptor of the
    directory the backup started in: if the share is unmounted meanwhile, the
    files stay on the share (which goes away with them) and nothing is ever
    written into the bare mount point that takes its place.
    """

    location: Path
    dir_fd: int
    identity: tuple[int, int]
    archive: str
    sidecar: str
    created: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, location: Path, backup_id: str) -> _Temp:
        """Open the location's directory and name the temporary files."""
        dir_fd = os.open(location, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        info = os.fstat(dir_fd)
        archive, sidecar = temporary_names(backup_id)
        return cls(
            location=location,
            dir_fd=dir_fd,
            identity=(info.st_dev, info.st_ino),
            archive=archive,
            sidecar=sidecar,
        )

    def open_new(self, name: str) -> int:
        """Create ``name`` exclusively, mode 0600, and lock it while it is open.

        Never an old file: securetar 2025.x would not truncate one, and a
        file of the same name may belong to another backup still being
        written. The lock keeps the stale-file cleanup away (this Home
        Assistant's after a reload, or another one's writing into the same
        folder) however long the backup pauses, e.g. while the recorder
        finishes its work before the database is copied.
        """
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=self.dir_fd)
        self.created.append(name)
        lock_temporary(fd)
        return fd

    def exists(self, name: str) -> bool:
        """Return True if ``name`` exists in the directory (links included)."""
        try:
            os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def rename(self, source: str, target: str) -> None:
        """Rename within the directory."""
        os.rename(source, target, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)

    def unlink(self, name: str) -> None:
        """Remove ``name`` if it is there."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.dir_fd)

    def check_still_mounted(self) -> None:
        """Refuse to publish when the path no longer leads to our directory.

        A share unmounted (or remounted elsewhere) during the write leaves
        the path pointing at something else, typically the empty mount point.
        """
        try:
            info = self.location.stat()
        except OSError as err:
            info = None
            detail = err.strerror or str(err)
        else:
            detail = "the share was unmounted or replaced"
        if info is None or (info.st_dev, info.st_ino) != self.identity:
            raise LocationUnavailableError(
                f"{self.location}: {detail} while the backup was written",
                "not_a_mount",
                path=str(self.location),
            )

    def remove(self) -> None:
        """Remove the temporary files this backup created."""
        for name in self.created:
            # If the share is gone, a later refresh's cleanup removes them.
            with contextlib.suppress(OSError):
                self.unlink(name)

    def close(self) -> None:
        """Close the directory descriptor."""
        os.close(self.dir_fd)


def _write_sidecar(temp: _Temp, digest: str, archive_name: str) -> None:
    """Write ``<hex>  <name>`` (sha256sum's format) and fsync it."""
    fd = temp.open_new(temp.sidecar)
    try:
        os.write(fd, f"{digest}  {archive_name}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(temp: _Temp, final: str) -> None:
    """Rename both files into place (sidecar first), then fsync the directory.

    The sidecar goes first so that a failure leaves either both or neither.
    """
    temp.check_still_mounted()
    if temp.exists(final):
        raise WriteFailedError(f"{final} already exists", file=final)
    sidecar = final + SIDECAR_SUFFIX
    temp.rename(temp.sidecar, sidecar)
    try:
        temp.rename(temp.archive, final)
    except BaseException:
        temp.unlink(sidecar)
        raise
    try:
        fsync_dir(temp.dir_fd)
    except BaseException:
        # Not durable: a backup that may vanish at the next power cut is
        # worse than a reported failure.
        temp.unlink(final)
        temp.unlink(sidecar)
        raise


def _remove_stale_scratch(config_dir: Path) -> None:
    """Remove database copies that a crashed backup left in the config dir."""
    limit = time.time() - _STALE_SCRATCH_SECONDS
    try:
        with os.scandir(config_dir) as entries:
            for entry in entries:
                if (
                    entry.name.startswith(TEMP_PREFIX)
                    and entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime < limit
                ):
                    Path(entry.path).unlink()
    except OSError:  # best effort: the backup itself reports real problems
        pass


def _location_stat(location: Path) -> os.stat_result | None:
    """Return the location's identity, to leave it out if it is in the config."""
    try:
        return location.stat()
    except OSError:
        return None


def _require_configuration(the_plan: Plan) -> None:
    """Refuse a backup without ``configuration.yaml``: nothing to start from.

    An exclude that matches it (``*``, ``**``) is refused where it is typed;
    this also catches one stored before that check, and a config directory
    whose ``configuration.yaml`` is missing or a link that leads outside.
    """
    if not any(
        entry.rel == "configuration.yaml" and entry.kind is not Kind.DIR
        for entry in the_plan.entries
    ):
        raise IncompleteBackupError(
            "The backup would not contain configuration.yaml (an exclude pattern"
            " leaves it out, or it is missing), so Home Assistant could not"
            " start from it; nothing was written"
        )


def _extra_block(
    extra: Mapping[str, Any] | None,
    *,
    instance_id: str,
    excludes: list[str],
    include_database: bool,
    compress: bool,
    encrypted: bool,
) -> dict[str, Any]:
    """Return ``extra`` for backup.json: the caller's, instance id, ours."""
    return {
        **(extra or {}),
        "instance_id": instance_id,
        EXTRA_KEY: {
            "version": EXTRA_VERSION,
            "excludes": excludes,
            "include_database": include_database,
            "compression": "gzip" if compress else None,
            "securetar_version": WRITE_VERSION if encrypted else None,
        },
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class _Options:
    """How one backup is written: its name, id and what goes in."""

    backup_id: str
    password: str | None
    compress: bool
    progress: _Progress
    database_lock: DatabaseLock | None


@responsive_call
def create_backup(
    config_dir: Path,
    location: Path,
    *,
    name: str,
    password: str | None,
    include_database: bool,
    excludes: Sequence[str],
    compress: bool,
    homeassistant_version: str,
    instance_id: str,
    progress: Callable[[float], None] | None = None,
    database_lock: DatabaseLock | None = None,
    backup_id: str | None = None,
    date: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
) -> CreateResult:
    """Back up ``config_dir`` into a new archive in ``location``.

    ``excludes`` are globs relative to the config directory (ValueError for an
    absolute one or one with ``..``); ``database_lock`` is entered around
    storing the database files; without it SQLite databases are snapshotted.
    ``progress`` gets fractions 0..1 from this thread. ``extra`` is merged
    into backup.json's ``extra`` (ours wins). Raises IncompleteBackupError
    (no configuration.yaml), InsufficientSpaceError or WriteFailedError;
    nothing is left behind then.
    """
    when = (date or datetime.now(UTC)).astimezone()
    backup_id = backup_id or secrets.token_hex(4)
    name = clean_name(name)
    user_excludes = [normalize_pattern(pattern) for pattern in excludes]
    final = location / file_name(name, when, backup_id)
    if os.path.lexists(final):
        raise WriteFailedError(f"{final.name} already exists", file=final.name)
    the_plan = _plan(config_dir, location, user_excludes, include_database)
    meta = backup_json(
        backup_id=backup_id,
        name=name,
        date=when,
        compressed=compress,
        protected=password is not None,
        homeassistant_version=homeassistant_version,
        include_database=include_database,
        extra=_extra_block(
            extra,
            instance_id=instance_id,
            excludes=user_excludes,
            include_database=include_database,
            compress=compress,
            encrypted=password is not None,
        ),
    )
    options = _Options(
        backup_id=backup_id,
        password=password,
        compress=compress,
        progress=_Progress(progress, the_plan.total_bytes),
        database_lock=database_lock,
    )
    size, skipped = _write(config_dir, location, final.name, meta, the_plan, options)
    options.progress.finish()
    info = parse_backup_json(meta, file=final.name, size=size)
    return CreateResult(info=info, skipped=sorted(skipped), reasons=skipped)


def _plan(
    config_dir: Path, location: Path, excludes: list[str], include_database: bool
) -> Plan:
    """Walk the config directory: what the backup stores (never ours, never itself)."""
    _remove_stale_scratch(config_dir)
    the_plan = snapshot.plan(
        config_dir,
        is_excluded=build_matcher(
            exclude_patterns(excludes, include_database=include_database)
        ),
        skip_names=lambda entry_name: entry_name.startswith(TEMP_PREFIX),
        include_database=include_database,
        skip_dir=_location_stat(location),
    )
    _require_configuration(the_plan)
    return the_plan


def _write(
    config_dir: Path,
    location: Path,
    final: str,
    meta: bytes,
    the_plan: Plan,
    options: _Options,
) -> tuple[int, dict[str, str]]:
    """Write the archive and its sidecar, publish both; return size and skips.

    Any failure removes the temporary files and raises a typed error.
    """

    def scratch(rel: str) -> Path:
        return (
            config_dir
            / f"{TEMP_PREFIX}{id_part(options.backup_id)}-{rel.replace('/', '_')}.tmp"
        )

    try:
        temp = _Temp.open(location, options.backup_id)
    except OSError as err:
        raise write_error(err, final) from err
    destination: _Destination | None = None
    try:
        destination = _Destination(temp.open_new(temp.archive))
        with open_writer(destination, options.password) as writer:
            skipped = _write_contents(
                writer,
                meta,
                the_plan,
                config_dir=config_dir,
                compress=options.compress,
                progress=options.progress,
                scratch=scratch,
                database_lock=options.database_lock,
            )
        size = destination.sync()
        digest = destination.digest()
        destination.close()
        _write_sidecar(temp, digest, final)
        _publish(temp, final)
    except BaseException as err:
        if destination is not None:
            destination.close()
        temp.remove()
        temp.close()
        failure = destination.error if destination is not None else None
        if failure is not None:
            raise write_error(failure, final) from err
        if isinstance(err, SourceError):
            raise WriteFailedError(str(err), file=err.rel) from err
        if isinstance(err, OSError):
            raise write_error(err, final) from err
        raise
    temp.close()
    return size, skipped
