"""Restore a backup into Home Assistant (synchronous core).

Two ways, both validated completely before the configuration is touched:

- **Full restore** (``stage``): the archive is copied from the location into
  Home Assistant's local temporary backup directory, the copy is verified
  (password, integrity, checksum, safe members), and Home Assistant's own
  restore-at-startup instruction is written (``write_instruction``). Home
  Assistant replaces the configuration at its next start, before anything
  runs, exactly as it does for a restore from its own backup page.
- **Partial restore** (``extract_selected`` + ``apply_files``): the chosen
  files are extracted into a temporary directory on the config directory's
  file system, and each is then moved into place with an atomic rename.
  ``.storage/`` and the database are never restored live.

``preview`` reports what either would add, change and remove, touching
nothing. ``collect_outcome`` reads what Home Assistant's restore at startup
left behind. Every function does its blocking work in the calling thread
and is meant to run in one executor job; nothing here imports Home
Assistant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
import contextlib
from dataclasses import dataclass, field
import errno
import hashlib
import json
import os
from pathlib import Path, PurePosixPath
import secrets
import shutil
import stat
import tarfile
import tempfile
from typing import Any, Final

from awesomeversion import AwesomeVersion

from .archive import TEMP_PREFIX, BackupInfo, VerifyResult, extract_backup
from .archive_read import (
    CHUNK,
    each_member,
    is_homeassistant,
    read_archive,
    read_sidecar,
    verify_backup,
)
from .errors import (
    BackupNotFoundError,
    BackupOffloadError,
    CorruptBackupError,
    LocationUnavailableError,
)
from .excludes import ARCHIVE_ROOT, HA_DATABASE_EXCLUDES, build_matcher
from .fileops import fsync_dir
from .location import SPACE_MARGIN_BYTES
from .metadata import INNER_NAME, SIDECAR_SUFFIX
from .safety import SafetyCheck
from .tarstream import member_chunks

STAGING_DIR: Final = "tmp_backups"
"""Home Assistant core's temporary backup directory (in the config dir); its
own restore downloads a backup there too, and backups leave ``*.tar`` in it
out."""
STAGED_PREFIX: Final = "backup_offload_"
"""Staged archives: ``tmp_backups/backup_offload_<backup id>.tar``."""
MARKER_NAME: Final = f"{TEMP_PREFIX}restore.json"
"""Our record of a staged restore, next to the staged archive.

In ``tmp_backups`` because Home Assistant's restore empties the whole config
directory (except ``backups/``) before it copies the backup in: the record
survives exactly when the restore stopped before that point. Its name starts
with the temporary prefix, so no backup of ours includes it.
"""
PARTIAL_PREFIX: Final = f"{TEMP_PREFIX}restore-"
"""Temporary directories of partial restores, in the config directory."""

# What Home Assistant's restore keeps in the config directory (its
# KEEP_BACKUPS and KEEP_DATABASE): kept at the top level, and never copied
# from the backup at any depth (shutil.ignore_patterns).
KEEP_ALWAYS: Final = ("backups",)
DATABASE_FILES: Final = HA_DATABASE_EXCLUDES
# Paths a live (partial) restore never writes: Home Assistant keeps
# `.storage` in memory and writes it back, and the recorder holds the
# database open. Also the restore control files.
_LIVE_FORBIDDEN_DIRS: Final = (".storage",)
_LIVE_FORBIDDEN_FILES: Final = (
    *DATABASE_FILES,
    "home-assistant_v2.db-shm",
    "home-assistant_v2.db-journal",
    ".HA_RESTORE",
    ".HA_RESTORE_RESULT",
)
PREVIEW_PATHS: Final = 20
"""Paths listed per category in a preview (the counts are complete)."""

_SPACE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


# --- errors -------------------------------------------------------------------


class RestoreInputError(BackupOffloadError):
    """The restore was asked for something it refuses (the caller's input)."""


class BackupTooNewError(RestoreInputError):
    """The backup was made by a newer Home Assistant than the running one."""

    reason = "backup_too_new"


class RestorePathError(RestoreInputError):
    """A path cannot be restored live (.storage, database, outside, conflict)."""

    reason = "restore_path_not_allowed"


class NothingToRestoreError(RestoreInputError):
    """No file of the backup matches the paths."""

    reason = "restore_nothing_matched"


class NotRestorableError(BackupOffloadError):
    """Home Assistant's restore at startup could not restore this archive."""

    reason = "not_restorable"


class StagingSpaceError(BackupOffloadError):
    """Not enough local space to stage the restore or to run it at startup."""

    reason = "restore_no_space"


class StagingError(BackupOffloadError):
    """Writing on this machine (staging, instruction) failed."""

    reason = "restore_staging_failed"


class RestoreWriteError(BackupOffloadError):
    """Moving restored files into place failed (some may be restored)."""

    reason = "restore_write_failed"


class SafetyBackupError(BackupOffloadError):
    """The safety backup before a restore failed; the restore was cancelled."""

    reason = "safety_backup_failed"


class RestoreFormatError(BackupOffloadError):
    """The installed Home Assistant reads restore instructions we do not know."""

    reason = "restore_unsupported"


# --- results ------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Extracted:
    """Files of a backup extracted next to the config dir, ready to move in."""

    backup: BackupInfo
    temp_dir: Path
    files: list[str]
    """Relative paths to restore (files and symlinks), in archive order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    """What a restore would do to the config directory (a dry run)."""

    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreResult:
    """What Home Assistant's restore at startup reported."""

    success: bool
    error: str | None = None
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What ``collect_outcome`` found after a start of Home Assistant."""

    result: RestoreResult | None
    """Home Assistant's restore result, None when there is none."""
    marker: dict[str, Any] | None
    """Our record of the restore; still there when it did not complete."""
    pending: bool
    """A restore instruction is still waiting for the next start."""
    removed: list[str] = field(default_factory=list)
    """Leftovers of ours that were removed (relative to the config dir)."""


# --- checks -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewerThan:
    """``is_newer`` for a running Home Assistant version.

    The comparison Home Assistant's restore makes before it refuses a backup
    (AwesomeVersion); an object, not a closure, so that it can be sent to
    the worker process.
    """

    running: str

    def __call__(self, version: str) -> bool:
        """Return whether ``version`` is newer than the running one."""
        return bool(AwesomeVersion(version) > self.running)


def check_version(backup: BackupInfo, is_newer: Callable[[str], bool]) -> None:
    """Refuse what Home Assistant's restore at startup would refuse.

    ``is_newer(version)`` says whether a backup's Home Assistant version is
    newer than the running one (Home Assistant compares with AwesomeVersion).
    """
    version = backup.homeassistant_version
    if version is None:
        raise NotRestorableError(
            f"{backup.file} holds no Home Assistant configuration (add-ons or"
            " folders only)",
            file=backup.file,
        )
    try:
        newer = is_newer(version)
    except Exception as err:
        raise NotRestorableError(
            f"{backup.file}: Home Assistant version {version!r} cannot be compared",
            file=backup.file,
        ) from err
    if newer:
        raise BackupTooNewError(
            f"{backup.name} was made by Home Assistant {version}",
            name=backup.name,
            backup_version=version,
        )


def effective_password(backup: BackupInfo, password: str | None) -> str | None:
    """Return the password Home Assistant's restore must get for ``backup``.

    Home Assistant decrypts whenever a password is given, so an unencrypted
    backup must get none (a location's password may be set meanwhile).
    """
    return password if backup.protected else None


class _Enough(Exception):  # noqa: N818 - a signal, not an error
    """Stops a read once the start of the Home Assistant archive was seen."""


def check_start(path: Path, backup: BackupInfo, password: str | None) -> None:
    """Check the password and the layout Home Assistant expects; read little.

    Opens the Home Assistant archive (decrypts and decompresses its first
    block) and stops: a wrong password is refused before a large archive is
    copied. Home Assistant's restore looks for ``homeassistant.tar.gz`` or
    ``homeassistant.tar`` as ``backup.json``'s ``compressed`` says; an
    archive named otherwise would fail at startup.
    """
    expected = INNER_NAME + (".gz" if backup.compressed else "")
    seen: list[str] = []

    def consume(name: str, tar: tarfile.TarFile) -> None:
        seen.append(name)
        raise _Enough

    with contextlib.suppress(_Enough):
        read_archive(path, password, consume, wanted=is_homeassistant)
    if seen != [expected]:
        raise NotRestorableError(
            f"{backup.file}: backup.json says compressed={backup.compressed},"
            f" so Home Assistant's restore looks for {expected}, but the backup"
            f" has {' and '.join(seen) or 'none'}",
            file=backup.file,
        )


def _free_bytes(path: Path) -> int:
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize


def _require_space(path: Path, needed: int, what: str) -> None:
    try:
        free = _free_bytes(path)
    except OSError as err:
        raise StagingError(f"Checking the free space of {path} failed: {err}") from err
    if free < needed + SPACE_MARGIN_BYTES:
        raise StagingSpaceError(
            f"{what} needs {needed} bytes plus {SPACE_MARGIN_BYTES} in reserve"
            f" in {path}, {free} are free",
            path=str(path),
            free=str(free),
            needed=str(needed),
        )


def is_live_forbidden(rel: str) -> bool:
    """Return whether a partial (live) restore must never write ``rel``."""
    parts = PurePosixPath(rel).parts
    return bool(parts) and (
        parts[0] in _LIVE_FORBIDDEN_DIRS
        or (len(parts) == 1 and parts[0] in _LIVE_FORBIDDEN_FILES)
    )


def pattern_is_forbidden(pattern: str) -> bool:
    """Return whether a restore pattern names a path never restored live.

    Only what the pattern names outright (``.storage/...``, the database);
    a broad pattern that happens to match such a file is refused when the
    backup is read.
    """
    parts = PurePosixPath(pattern.strip().removeprefix("./")).parts
    return bool(parts) and (
        parts[0] in _LIVE_FORBIDDEN_DIRS
        or (len(parts) == 1 and parts[0] in _LIVE_FORBIDDEN_FILES)
    )


def selector(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Return whether a relative path is chosen by ``patterns``.

    Patterns match like the exclude patterns (``*`` within a segment, ``**``
    across, anchored at the config directory); a pattern that matches a
    directory chooses everything in it.
    """
    matches = build_matcher(patterns)

    def chosen(rel: str) -> bool:
        parts = rel.split("/")
        return any(
            matches("/".join(parts[:depth])) for depth in range(1, len(parts) + 1)
        )

    return chosen


# --- full restore: staging ----------------------------------------------------


def _read_sidecar(path: Path) -> str | None:
    """Return the digest in the location's ``<file>.sha256``, if there is one."""
    try:
        return read_sidecar(path)
    except OSError as err:
        raise LocationUnavailableError(
            f"Reading {path.name}{SIDECAR_SUFFIX} failed: {err}",
            location_reason="unreachable",
        ) from err


def _local_failure(err: OSError, what: str) -> BackupOffloadError:
    """Return the typed error for an OSError while writing locally."""
    code = errno.errorcode.get(err.errno or 0, "unknown error")
    detail = f"{what}: {code} ({err.strerror or err})"
    if err.errno in _SPACE_ERRNOS:
        return StagingSpaceError(detail, errno=code)
    return StagingError(detail, errno=code)


def _copy(source: Path, target: Path) -> str:
    """Copy ``source`` to the new file ``target``, fsync it; return its SHA-256.

    Read errors are the location's, write errors this machine's.
    """
    sha = hashlib.sha256()
    try:
        src = source.open("rb", buffering=0)
    except FileNotFoundError as err:
        raise BackupNotFoundError(
            f"{source.name} does not exist", file=source.name
        ) from err
    except OSError as err:
        raise LocationUnavailableError(
            f"Reading {source.name} failed: {err}", location_reason="unreachable"
        ) from err
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
                    raise LocationUnavailableError(
                        f"Reading {source.name} failed: {err}",
                        location_reason="unreachable",
                    ) from err
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


def _remove_quietly(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def stage(
    source: Path,
    backup: BackupInfo,
    password: str | None,
    *,
    config_dir: Path,
    is_newer: Callable[[str], bool],
) -> Staged:
    """Validate a backup and copy it, verified, into ``tmp_backups``.

    In order, cheapest refusal first: Home Assistant version, password and
    layout (reads the start), local space for the copy, the copy itself
    (compared with the location's ``.sha256`` when there is one), a full
    verification of the local copy (decrypt, decompress, every member
    checked for safety, checksum of the copy), and the space Home
    Assistant's restore needs at startup in the temporary directory (it
    unpacks the archive there before it replaces the configuration). On any
    error nothing is left behind, not even ``tmp_backups`` when it was made
    here.
    """
    check_version(backup, is_newer)
    password = effective_password(backup, password)
    check_start(source, backup, password)
    staging = config_dir / STAGING_DIR
    created_dir = _ensure_dir(staging)
    token = secrets.token_hex(4)
    temp = staging / f"{TEMP_PREFIX}{backup.backup_id}-{token}.tar.tmp"
    temp_sidecar = temp.with_name(temp.name + SIDECAR_SUFFIX)
    final = staging / f"{STAGED_PREFIX}{backup.backup_id}.tar"
    published = False
    try:
        _require_space(staging, backup.size, "Copying the backup to this machine")
        expected = _read_sidecar(source)
        digest = _copy(source, temp)
        _check_digest(backup, digest, expected)
        _write_new(temp_sidecar, f"{digest}  {temp.name}\n".encode())
        try:
            verified = verify_backup(temp, password)
        except LocationUnavailableError as err:
            # The copy is local: a read error is this machine's problem.
            raise StagingError(f"Reading the staged copy failed: {err}") from err
        _remove_quietly(temp_sidecar)
        # Home Assistant extracts the archive, then its content, into the
        # temporary directory before it clears the configuration.
        _require_space(
            Path(tempfile.gettempdir()),
            backup.size + verified.bytes,
            "Home Assistant's restore at startup",
        )
        try:
            temp.replace(final)
            published = True
            fsync_dir(staging)
        except OSError as err:
            raise _local_failure(err, f"Renaming to {final}") from err
    except BaseException:
        # An older staged copy of the same backup may belong to a restore
        # that is still pending: only our own file goes.
        _remove_quietly(temp, temp_sidecar, *([final] if published else []))
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


def _check_digest(backup: BackupInfo, digest: str, expected: str | None) -> None:
    if expected is not None and digest != expected:
        raise CorruptBackupError(
            f"{backup.file} does not match its checksum file: it is damaged",
            file=backup.file,
        )


def discard_staged(staged: Staged) -> None:
    """Remove a staged archive (the restore was abandoned)."""
    _remove_quietly(staged.path)
    if staged.created_dir:
        with contextlib.suppress(OSError):
            staged.path.parent.rmdir()


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` (mode 0600) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
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
        _remove_quietly(temp)
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
            _remove_quietly(marker_path)
            raise
    except OSError as err:
        raise _local_failure(err, f"Writing {target}") from err
    return target


# --- partial restore ----------------------------------------------------------


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath((root, path)) == root


def _check_destination(config_real: str, rel: str) -> None:
    """Refuse a destination that leads out of the config dir or conflicts."""
    dest = Path(config_real, rel)
    parent_real = os.path.realpath(dest.parent)
    if not _inside(config_real, parent_real):
        raise RestorePathError(
            f"{rel}: its directory leads outside the configuration directory",
            path=rel,
        )
    resolved = os.path.relpath(Path(parent_real, dest.name), config_real)
    if is_live_forbidden(resolved):
        raise RestorePathError(
            f"{rel}: leads to {resolved}, which is never restored live", path=rel
        )
    ancestor = Path(parent_real)
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RestorePathError(
            f"{rel}: {os.path.relpath(ancestor, config_real)} is a file in the"
            " configuration directory",
            path=rel,
        )
    if dest.is_dir() and not dest.is_symlink():
        raise RestorePathError(
            f"{rel} is a directory in the configuration directory", path=rel
        )


def extract_selected(
    source: Path,
    backup: BackupInfo,
    password: str | None,
    *,
    config_dir: Path,
    patterns: Sequence[str],
) -> Extracted:
    """Extract the files ``patterns`` choose into a temporary directory.

    The directory is in the config directory (same file system, so the files
    can be renamed into place). The whole archive is read and checked first
    (``extract_backup``); a chosen path that is never restored live, or
    whose destination leads out of the config directory, refuses the
    restore with nothing written into the configuration.
    """
    password = effective_password(backup, password)
    chosen = selector(patterns)
    selected: set[str] = set()

    def select(rel: str) -> bool:
        if not chosen(rel):
            return False
        if is_live_forbidden(rel):
            raise RestorePathError(
                f"{rel} matches {', '.join(patterns)}, but .storage and the"
                " database are never restored live",
                path=rel,
            )
        selected.add(rel)
        return True

    temp_dir = config_dir / f"{PARTIAL_PREFIX}{secrets.token_hex(4)}"
    try:
        extracted = extract_backup(source, temp_dir, password, select)
        files = [
            rel
            for rel in extracted
            if rel in selected
            and ((temp_dir / rel).is_symlink() or not (temp_dir / rel).is_dir())
        ]
        _require_matches(files, backup, patterns)
        config_real = os.path.realpath(config_dir)
        for rel in files:
            _check_destination(config_real, rel)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return Extracted(backup=backup, temp_dir=temp_dir, files=files)


def _require_matches(
    files: Sequence[str], backup: BackupInfo, patterns: Sequence[str]
) -> None:
    if not files:
        raise NothingToRestoreError(
            f"No file in {backup.file} matches {', '.join(patterns)}",
            patterns=", ".join(patterns),
        )


def _fsync_file(path: Path) -> None:
    if path.is_symlink():
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(source: Path, dest: Path) -> None:
    """Rename ``source`` onto ``dest`` atomically, also across file systems.

    A subdirectory of the config dir can be another mount; then the file is
    copied next to its destination first, and renamed there.
    """
    try:
        source.replace(dest)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        temp = dest.with_name(f"{TEMP_PREFIX}{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            shutil.copy2(source, temp, follow_symlinks=False)
            _fsync_file(temp)
            temp.replace(dest)
        except BaseException:
            _remove_quietly(temp)
            raise


def apply_files(extracted: Extracted, *, config_dir: Path) -> list[str]:
    """Move the extracted files into the config dir; return what was restored.

    Every destination is checked again first (the config dir may have
    changed since extraction); then each file is fsync'ed and renamed onto
    its destination, so a reader sees the old file or the new one, never a
    mix. The temporary directory is removed whatever happens.
    """
    done: list[str] = []
    try:
        config_real = os.path.realpath(config_dir)
        for rel in extracted.files:
            _check_destination(config_real, rel)
        directories: set[Path] = set()
        for rel in extracted.files:
            source = extracted.temp_dir / rel
            dest = Path(config_real, rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _fsync_file(source)
            _move_into_place(source, dest)
            directories.add(dest.parent)
            done.append(rel)
        for directory in directories:
            fsync_dir(directory)
    except OSError as err:
        code = errno.errorcode.get(err.errno or 0, "unknown error")
        raise RestoreWriteError(
            f"Restoring into {config_dir} failed: {code} ({err.strerror or err})",
            restored=", ".join(done) or "none",
        ) from err
    finally:
        shutil.rmtree(extracted.temp_dir, ignore_errors=True)
    return done


def discard_extracted(extracted: Extracted) -> None:
    """Remove the temporary directory of an abandoned partial restore."""
    shutil.rmtree(extracted.temp_dir, ignore_errors=True)


# --- dry run ------------------------------------------------------------------

# What a path is, for comparing: ("file", size, sha256), ("link", target),
# ("other",). Directories are not compared.
type _State = tuple[str, ...]


def _backup_states(source: Path, password: str | None) -> dict[str, _State]:
    """Read the whole archive once; return each config path's state.

    The same checks as a verification (and the same errors), with the
    member data hashed on the way.
    """
    check = SafetyCheck(ARCHIVE_ROOT)
    states: dict[str, _State] = {}
    by_name: dict[str, _State] = {}

    def visit(name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        check.add(member)
        rel = check.mapped(member.name)
        state: _State | None
        if member.isfile():
            sha = hashlib.sha256()
            size = 0
            for chunk in member_chunks(tar, member):
                sha.update(chunk)
                size += len(chunk)
            state = ("file", str(size), sha.hexdigest())
        elif member.issym():
            state = ("link", member.linkname)
        elif member.islnk():
            state = by_name.get(member.linkname, ("other",))
        elif member.isdir():
            state = None
        else:
            state = ("other",)
        if state is not None:
            by_name[member.name] = state
        if rel and state is not None:
            states[rel] = state
        elif rel:
            states.pop(rel, None)

    read_archive(source, password, each_member(visit), wanted=is_homeassistant)
    check.finish()
    return states


def _config_state(path: Path, info: os.stat_result, size_hint: str | None) -> _State:
    """Return a config file's state; hash it only when the size could match."""
    if stat.S_ISLNK(info.st_mode):
        return ("link", str(path.readlink()))
    if not stat.S_ISREG(info.st_mode):
        return ("other",)
    if size_hint != str(info.st_size):
        return ("file", str(info.st_size), "")
    sha = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            sha.update(chunk)
    return ("file", str(info.st_size), sha.hexdigest())


def _size_hint(state: _State | None) -> str | None:
    return state[1] if state is not None and state[0] == "file" else None


def _config_states(
    config_dir: Path, keep_top: Iterable[str], wanted: dict[str, _State]
) -> dict[str, _State]:
    """Walk the config dir (no symlinks followed) except the kept entries."""
    keep = set(keep_top)
    states: dict[str, _State] = {}
    for dirpath, dirnames, filenames in os.walk(config_dir):
        base = Path(dirpath)
        prefix = base.relative_to(config_dir).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        for name in [*dirnames, *filenames]:
            rel = prefix + name
            if not prefix and name in keep:
                continue
            try:
                info = os.lstat(base / name)
            except FileNotFoundError:  # removed while we looked
                continue
            if stat.S_ISDIR(info.st_mode):
                continue
            states[rel] = _config_state(base / name, info, _size_hint(wanted.get(rel)))
        if not prefix:
            dirnames[:] = [name for name in dirnames if name not in keep]
    return states


def _differs(new: _State, old: _State) -> bool:
    if new[0] == "file" and old[0] == "file":
        # Sizes differ, or (equal sizes) the hashes do.
        return new[1] != old[1] or new[2] != old[2]
    return new != old


def preview(
    source: Path,
    backup: BackupInfo,
    password: str | None,
    *,
    config_dir: Path,
    patterns: Sequence[str] | None,
    restore_database: bool,
    is_newer: Callable[[str], bool],
) -> Preview:
    """Return what a restore would add, change and remove; write nothing.

    A full restore (no ``patterns``) is simulated as Home Assistant's restore
    does it: the config directory is emptied except ``backups/`` (and the
    database when it is not restored), then the backup is copied in without
    any entry of those names. A partial restore only adds or replaces the
    chosen files. The backup is read completely and refused for the same
    reasons as the restore itself.
    """
    password = effective_password(backup, password)
    if patterns is None:
        check_version(backup, is_newer)
        check_start(source, backup, password)
    states = _backup_states(source, password)
    if patterns is None:
        keep = {*KEEP_ALWAYS, *(() if restore_database else DATABASE_FILES)}
        wanted = {
            rel: state
            for rel, state in states.items()
            if not keep.intersection(rel.split("/"))
        }
        current = _config_states(config_dir, keep, wanted)
    else:
        chosen = selector(patterns)
        wanted = {}
        for rel, state in states.items():
            if chosen(rel):
                if is_live_forbidden(rel):
                    raise RestorePathError(
                        f"{rel} matches {', '.join(patterns)}, but .storage and"
                        " the database are never restored live",
                        path=rel,
                    )
                wanted[rel] = state
        _require_matches(list(wanted), backup, patterns)
        config_real = os.path.realpath(config_dir)
        current = {}
        for rel in wanted:
            _check_destination(config_real, rel)
            path = config_dir / rel
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                current[rel] = _config_state(
                    path, os.lstat(path), _size_hint(wanted[rel])
                )
    added = sorted(set(wanted) - set(current))
    removed = sorted(set(current) - set(wanted)) if patterns is None else []
    both = set(wanted) & set(current)
    changed = sorted(rel for rel in both if _differs(wanted[rel], current[rel]))
    return Preview(
        added=added,
        changed=changed,
        removed=removed,
        unchanged=len(both) - len(changed),
    )


# --- after a restart ----------------------------------------------------------


def _read_result(path: Path) -> RestoreResult | None:
    """Read and remove Home Assistant's restore result file, as it does."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        return RestoreResult(
            success=False,
            error=f"{path.name} could not be read: {err}",
            error_type=type(err).__name__,
        )
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    try:
        data = json.loads(raw)
        success = data["success"]
        if not isinstance(success, bool):
            raise TypeError("success is not a boolean")  # noqa: TRY301
    except (ValueError, KeyError, TypeError) as err:
        return RestoreResult(
            success=False,
            error=f"{path.name} could not be read: {err}",
            error_type=type(err).__name__,
        )
    error = data.get("error")
    error_type = data.get("error_type")
    return RestoreResult(
        success=success,
        error=str(error) if error is not None else None,
        error_type=str(error_type) if error_type is not None else None,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": True}
    return data if isinstance(data, dict) else {"unreadable": True}


def _remove_leftovers(config_dir: Path, keep: set[Path]) -> list[str]:
    """Remove what an interrupted or finished restore of ours left behind."""
    removed: list[str] = []
    staging = config_dir / STAGING_DIR
    candidates: list[Path] = []
    with contextlib.suppress(OSError), os.scandir(staging) as entries:
        candidates.extend(
            Path(entry.path)
            for entry in entries
            if entry.is_file(follow_symlinks=False)
            and (
                entry.name.startswith(TEMP_PREFIX)
                or (
                    entry.name.startswith(STAGED_PREFIX) and entry.name.endswith(".tar")
                )
            )
        )
    for path in candidates:
        if path in keep:
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.relative_to(config_dir).as_posix())
    with contextlib.suppress(OSError), os.scandir(config_dir) as entries:
        temp_dirs = [
            Path(entry.path)
            for entry in entries
            if entry.name.startswith(PARTIAL_PREFIX)
            and entry.is_dir(follow_symlinks=False)
        ]
    for path in temp_dirs:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return sorted(removed)


def collect_outcome(
    config_dir: Path,
    *,
    instruction_name: str,
    result_name: str,
    known: RestoreResult | None = None,
) -> Outcome:
    """Find out what the last restore at startup did, once; clean up after it.

    Home Assistant writes ``result_name`` after a restore attempt; its
    backup integration (set up before us) reads and removes it, and then
    ``known`` carries what it found. Our marker survives exactly when the
    restore stopped before it emptied the config directory, so a marker
    without a result means the restore did not complete either. The result
    file and the marker are consumed, so a result is reported once; staged
    archives and temporary files of ours are removed unless a restore is
    still pending.
    """
    instruction = config_dir / instruction_name
    pending = _read_json(instruction)
    result = _read_result(config_dir / result_name) or known
    if pending is not None:
        staged = pending.get("path")
        keep = {Path(staged)} if isinstance(staged, str) else set()
        keep.add(config_dir / STAGING_DIR / MARKER_NAME)
        return Outcome(
            result=result,
            marker=None,
            pending=True,
            removed=_remove_leftovers(config_dir, keep),
        )
    marker = _read_json(config_dir / STAGING_DIR / MARKER_NAME)
    return Outcome(
        result=result,
        marker=marker,
        pending=False,
        removed=_remove_leftovers(config_dir, set()),
    )
