"""Read whole backups: verify them, and extract them for a restore.

Both read the archive as a stream, front to back, once per pass: decrypt
(securetar), decompress (gzip, whose CRC is checked) and walk the tar. The
``.sha256`` sidecar, when present, is checked in the same pass. Extraction
checks every member as it stages it, and moves the staged files into place
only once the whole archive has been checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
import hashlib
import os
from pathlib import Path
import queue
import re
import tarfile
import threading
from typing import IO, Final

from ..errors import (
    CorruptBackupError,
    InvalidBackupError,
    WrongPasswordError,
)
from ..fileops import open_regular, read_error
from ..gil import responsive_call
from ..metadata import (
    BACKUP_JSON,
    INNER_NAME,
    SIDECAR_SUFFIX,
    BackupInfo,
    check_inner_names,
    is_inner_archive,
    parse_backup_json,
)
from .compression import GzipReader, Readable
from .excludes import ARCHIVE_ROOT
from .safety import OuterLayout, SafetyCheck
from .securetar_compat import (
    DATA_ERRORS,
    GZIP_MAGIC,
    Prefixed,
    decrypted,
    forget_members,
    read_head,
)
from .tarstream import member_chunks, open_tar

CHUNK: Final = 1 << 20
_HASH_AHEAD: Final = 8  # pieces of the archive waiting to be hashed
_MAX_JSON_BYTES: Final = 1 << 20
_SIDECAR_LINE = re.compile(rb"\s*([0-9a-fA-F]{64})[ \t]")

# Gets each inner archive's name and its tar (a stream) to read to the end.
Consumer = Callable[[str, tarfile.TarFile], None]
# Gets (inner archive name, inner tar, member) for each member.
Visitor = Callable[[str, tarfile.TarFile, tarfile.TarInfo], None]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What a verification read."""

    members: int
    """Members of all inner archives."""
    bytes: int
    """File data read from them (uncompressed, decrypted)."""
    checksum: bool | None
    """True when the sidecar matched, None when there is none."""
    sha256: str = ""
    """SHA-256 of the whole file as it was read."""
    configuration: bool = True
    """Home Assistant's archive holds ``configuration.yaml`` or ``.storage``:
    something Home Assistant can start from."""


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What one read of a whole archive found."""

    info: BackupInfo
    checksum: bool | None
    """True when the sidecar matched, None when there is none."""
    sha256: str | None
    """SHA-256 of the whole file, when it was asked for or a sidecar is there."""


class _StorageError(Exception):
    """Reading the archive file itself failed (not its contents)."""

    def __init__(self, err: OSError) -> None:
        super().__init__(str(err))
        self.os_error = err


class _Hasher:
    """SHA-256 of a stream, computed in a thread of its own.

    The thread that reads the archive also decrypts and decompresses it, and
    the restore waits for it; hashing there too made a restore about a
    tenth slower. hashlib lets go of the GIL while it hashes, so on a
    thread of its own it costs the others nearly nothing. ``close`` (or
    ``hexdigest``) stops the thread.
    """

    def __init__(self) -> None:
        """Start the thread."""
        self._sha = hashlib.sha256()
        self._pieces: queue.Queue[bytes | None] = queue.Queue(_HASH_AHEAD)
        self._thread = threading.Thread(
            target=self._run, name="backup_offload-sha256", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._pieces.get()) is not None:
            self._sha.update(piece)

    def update(self, data: bytes) -> None:
        """Hash ``data`` after what came before."""
        self._pieces.put(data)

    def close(self) -> None:
        """Hash what is queued and stop the thread."""
        if self._thread.is_alive():
            self._pieces.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        """Return the digest of everything given."""
        self.close()
        return self._sha.hexdigest()


class _Source:
    """The archive file as a stream: hashes it, and wraps OSErrors.

    A context manager: leaving it stops the hashing thread.
    """

    def __init__(self, raw: IO[bytes], hashing: bool) -> None:
        self._raw = raw
        self._hasher = _Hasher() if hashing else None

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hasher is not None:
            self._hasher.close()

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._raw.read(size)
        except OSError as err:
            raise _StorageError(err) from err
        if self._hasher is not None:
            self._hasher.update(data)
        return data

    def hexdigest(self) -> str:
        """Return the SHA-256 of the whole file, reading what is left."""
        _drain(self)
        return self._hasher.hexdigest() if self._hasher is not None else ""


def _drain(stream: Readable) -> None:
    while stream.read(CHUNK):
        pass


def read_sidecar(path: Path) -> str | None:
    """Return the digest in ``<file>.sha256``, None when there is none.

    An OSError reading it is the caller's to map: it says where the file is.
    """
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    try:
        with open_regular(sidecar) as file:
            text = file.read(4096)
    except FileNotFoundError:
        return None
    except InvalidBackupError as err:
        raise CorruptBackupError(str(err), file=path.name) from err
    match = _SIDECAR_LINE.match(text)
    if match is None:
        raise CorruptBackupError(
            f"{sidecar.name} is not in sha256sum format", file=path.name
        )
    return match.group(1).decode().lower()


def _read_sidecar(path: Path) -> str | None:
    try:
        return read_sidecar(path)
    except OSError as err:
        raise _StorageError(err) from err


@dataclass(slots=True)
class _Pass:
    """One front-to-back read of an archive."""

    file: str
    size: int
    password: str | None
    consume: Consumer
    wanted: Callable[[str], bool]
    info: BackupInfo | None = None

    def _open(self, source: Readable) -> tarfile.TarFile:
        try:
            return open_tar(source)
        except DATA_ERRORS as err:
            raise InvalidBackupError(f"{self.file} is not a tar archive") from err

    def run(self, source: Readable) -> BackupInfo:
        layout = OuterLayout(self.file)
        with self._open(source) as outer:
            while (member := self._next(outer)) is not None:
                self._member(outer, member, layout.add(member))
        if self.info is None:
            raise InvalidBackupError(f"{self.file} has no backup.json", file=self.file)
        check_inner_names(self.info, layout.names)
        return self.info

    def _next(self, outer: tarfile.TarFile) -> tarfile.TarInfo | None:
        try:
            member = outer.next()
        except DATA_ERRORS as err:
            raise CorruptBackupError(f"{self.file} is damaged: {err}") from err
        if member is not None and member.offset_data + member.size > self.size:
            raise CorruptBackupError(f"{self.file} is truncated", file=self.file)
        return member

    def _member(
        self, outer: tarfile.TarFile, member: tarfile.TarInfo, name: str
    ) -> None:
        """Read one outer member (a regular file: ``OuterLayout`` checked it)."""
        stream = outer.extractfile(member)
        if stream is None:  # pragma: no cover - a regular file has data
            return
        if name == BACKUP_JSON:
            # Cannot come short: _next checked that the data is in the file.
            raw = stream.read(_MAX_JSON_BYTES + 1)
            if len(raw) > _MAX_JSON_BYTES:
                raise InvalidBackupError(f"{self.file}: backup.json is too large")
            self.info = parse_backup_json(raw, file=self.file, size=self.size)
        elif is_inner_archive(name) and self.wanted(name):
            self._inner(name, stream, member.size)

    def _inner(self, name: str, stream: Readable, size: int) -> None:
        protected = self.info.protected if self.info is not None else False
        try:
            with (
                decrypted(
                    stream, size=size, password=self.password, protected=protected
                ) as plain,
                _open_tar(plain) as (tar, rest),
            ):
                self.consume(name, tar)
                # Read to the end: gzip checks its CRC there, v3 its last tag.
                _drain(rest)
        except tarfile.FilterError:
            raise  # the target is unsafe (extraction), not the archive damaged
        except DATA_ERRORS as err:
            raise CorruptBackupError(
                f"{self.file}: {name} is damaged: {err}", file=self.file
            ) from err


@contextmanager
def _open_tar(plain: Readable) -> Iterator[tuple[tarfile.TarFile, Readable]]:
    """Open a (gzip-compressed or plain) tar stream; yield it and its source.

    gzip is decompressed ahead in a background thread (``GzipReader``),
    which is stopped before this returns, whatever happened. The tar is for
    one walk front to back (``tarstream``).
    """
    head = read_head(plain, len(GZIP_MAGIC))
    data: Readable = Prefixed(head, plain)
    if head == GZIP_MAGIC:
        with GzipReader(data) as unzipped, open_tar(unzipped) as tar:
            yield tar, unzipped
        return
    with open_tar(data) as tar:
        yield tar, data


def each_member(visit: Visitor) -> Consumer:
    """Return a consumer that calls ``visit`` for every member."""

    def consume(name: str, tar: tarfile.TarFile) -> None:
        for member in tar:
            visit(name, tar, member)
            forget_members(tar)

    return consume


def read_archive(
    path: Path,
    password: str | None,
    consume: Consumer,
    *,
    wanted: Callable[[str], bool],
    checksum: bool = True,
    digest: bool = False,
) -> ReadResult:
    """Read the whole archive once; return its info, checksum result and digest.

    ``checksum``: compare with the ``.sha256`` sidecar when there is one;
    ``digest``: compute the file's SHA-256 in any case. Maps every failure
    to a typed error. A wrong-password error from an unauthenticated format
    is turned into CorruptBackupError when the sidecar shows that the file
    is damaged.
    """
    try:
        expected = _read_sidecar(path) if checksum else None
        with (
            open_regular(path, buffering=CHUNK) as raw,
            _Source(raw, hashing=digest or expected is not None) as source,
        ):
            size = os.fstat(raw.fileno()).st_size
            one_pass = _Pass(path.name, size, password, consume, wanted)
            try:
                info = one_pass.run(source)
            except WrongPasswordError as err:
                if expected is not None and source.hexdigest() != expected:
                    raise _mismatch(path) from err
                raise
            sha256 = source.hexdigest() if digest or expected is not None else None
            if expected is not None and sha256 != expected:
                raise _mismatch(path)
    except _StorageError as err:
        raise read_error(path, err.os_error) from err
    except OSError as err:
        raise read_error(path, err) from err
    return ReadResult(info, None if expected is None else True, sha256)


def _mismatch(path: Path) -> CorruptBackupError:
    return CorruptBackupError(
        f"{path.name} does not match its checksum file: it is damaged",
        file=path.name,
    )


def read_member_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> int:
    """Read a member's data to the end; return its size."""
    if not member.isfile():
        return 0
    return sum(len(piece) for piece in member_chunks(tar, member))


def is_homeassistant(name: str) -> bool:
    """Return whether an inner archive holds Home Assistant's config directory."""
    return name.startswith(INNER_NAME)


def holds_configuration(rel: str, member: tarfile.TarInfo) -> bool:
    """Return whether a restored file is one Home Assistant can start from.

    ``configuration.yaml``, or a file in ``.storage/``; a directory alone
    (or a file named ``.storage``) restores nothing to start from, and
    neither does a symlink: Home Assistant's restore leaves out a link whose
    target it does not find relative to its working directory.
    """
    if not (member.isreg() or member.islnk()):
        return False
    return rel == "configuration.yaml" or rel.startswith(".storage/")


@responsive_call
def verify_backup(
    path: Path,
    password: str | None,
    observe: Callable[[tarfile.TarInfo], None] | None = None,
) -> VerifyResult:
    """Read the whole archive: decrypt, decompress, every member, checksum.

    Every member of Home Assistant's archive is checked for safety (see
    ``safety``), and handed to ``observe`` if given (in the same read).
    Raises WrongPasswordError (distinct from damage), CorruptBackupError,
    InvalidBackupError, UnsupportedFormatError, UnsafeArchiveError,
    BackupNotFoundError or LocationUnavailableError.
    """
    members = 0
    data = 0
    configuration = False
    check = SafetyCheck(ARCHIVE_ROOT)

    def visit(name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        nonlocal members, data, configuration
        members += 1
        if is_homeassistant(name):
            if check.add(member):
                rel = check.mapped(member.name)
                configuration = configuration or (
                    rel is not None and holds_configuration(rel, member)
                )
            if observe is not None:
                observe(member)
        data += read_member_data(tar, member)

    result = read_archive(
        path, password, each_member(visit), wanted=lambda name: True, digest=True
    )
    check.finish()
    return VerifyResult(
        members=members,
        bytes=data,
        checksum=result.checksum,
        sha256=result.sha256 or "",
        configuration=configuration,
    )
