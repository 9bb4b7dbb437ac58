"""One interface over the securetar that is installed.

Home Assistant up to 2026.2 ships securetar 2025.x: ``SecureTarFile`` reads and
writes, keys are ``bytes`` derived from the password, headers are version 2
(AES-128-CBC). Home Assistant 2026.3+ ships securetar 2026.x: writing goes
through ``SecureTarArchive``, passwords are strings, version 3 headers
(XChaCha20-Poly1305, Argon2id) are written and versions 1-3 are read. The API
is detected by feature, never by version number, and everything else in the
engine goes through this module.

The one compression step of a backup lives here too (``open_writer`` ->
``ArchiveWriter.inner``): securetar writes the member uncompressed (and
encrypts it), and the gzip stream inside is ours (``compression.py``):
block-parallel, ISA-L when installed, standard gzip either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
import gzip
import hashlib
import importlib
from pathlib import Path
import struct
import tarfile
from typing import Any, Final, Protocol
import zlib

from ..errors import CorruptBackupError, UnsupportedFormatError, WrongPasswordError
from .compression import GzipWriter, Readable


class Sink(Protocol):
    """A seekable binary output, as securetar writes it (it patches headers)."""

    def write(self, data: bytes, /) -> int:
        """Write ``data``."""

    def tell(self) -> int:
        """Return the position."""

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Move the position."""


# Loaded by name: securetar 2025.x has no type information and 2026.x has,
# so a typed import cannot satisfy mypy on both.
securetar: Any = importlib.import_module("securetar")

NEW_API: Final = hasattr(securetar, "SecureTarArchive")
"""True for securetar 2026.x (SecureTarArchive, password strings, v3)."""

MAGIC: Final = b"SecureTar"
_HEADER_PEEK = tarfile.BLOCKSIZE  # enough to see a gzip or ustar signature
GZIP_MAGIC: Final = b"\x1f\x8b\x08"
_TAR_MAGIC = b"ustar"
_TAR_MAGIC_OFFSET = 257
# v3 and later authenticate the password and the data, so a failure after the
# header is damage, never a wrong password.
_FIRST_AUTHENTICATED_VERSION = 3


def _crypto_errors() -> tuple[type[BaseException], ...]:
    """Return the decryption error types of the installed crypto backend."""
    try:
        exceptions = importlib.import_module("nacl.exceptions")
    except ImportError:  # securetar 2025.x does not use PyNaCl
        return ()
    return (exceptions.CryptoError,)


DATA_ERRORS: Final[tuple[type[BaseException], ...]] = (
    tarfile.TarError,
    EOFError,
    gzip.BadGzipFile,  # an OSError, but about the data: storage errors are wrapped
    zlib.error,
    struct.error,
    ValueError,  # includes UnicodeDecodeError from damaged headers
    securetar.SecureTarError,
    *_crypto_errors(),
)
"""What damaged or wrongly decrypted data raises while it is read."""


def _probe_read_versions() -> frozenset[int]:
    """Return the header versions the installed securetar can read."""
    if not NEW_API:
        # 2025.x: magic-less v1 and v2 (its magic constant carries the 2).
        return frozenset({1, 2})
    versions = set()
    for version in range(1, 16):
        try:
            securetar.SecureTarHeader(b"", 0, version)
        except ValueError:
            continue
        versions.add(version)
    return frozenset(versions)


READ_VERSIONS: Final = _probe_read_versions()
WRITE_VERSION: Final = max(READ_VERSIONS)
"""The header version new encrypted backups get: the newest one supported."""


def installed_version() -> str:
    """Return the installed securetar's version, for messages only."""
    # Imported here: it costs the worker process a tenth of its start.
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version("securetar")
    except metadata.PackageNotFoundError:  # pragma: no cover - vendored copy
        return "unknown"


def password_to_key(password: str) -> bytes:
    """Derive the AES key securetar 2025.x wants (100 x SHA-256, 16 bytes).

    The same derivation as ``homeassistant.backup_restore.password_to_key``
    and the Supervisor, so their backups and ours open with the same password.
    """
    key = password.encode()
    for _ in range(100):
        key = hashlib.sha256(key).digest()
    return key[:16]


# --- writing ------------------------------------------------------------------


class ArchiveWriter:
    """An outer backup tar being written, and a way to add inner archives."""

    def __init__(
        self,
        tar: tarfile.TarFile,
        open_inner: Callable[[str, bool], AbstractContextManager[tarfile.TarFile]],
    ) -> None:
        """Wrap the outer tar and the securetar call that adds inner tars."""
        self.tar = tar
        self._open_inner = open_inner

    def inner(
        self, name: str, *, compress: bool
    ) -> AbstractContextManager[tarfile.TarFile]:
        """Return a context manager yielding the inner tar ``name`` to fill.

        This is the one place a backup is compressed: gzip when ``compress``.
        securetar only carries the bytes (it encrypts them when a password is
        set); the gzip stream is ours (``compression.GzipWriter``), because
        securetar's would be single-threaded zlib at level 9 with encryption.
        """
        if not compress:
            return self._open_inner(name, False)
        return _compressed_inner(self._open_inner(name, False))


# tarfile's stream-mode wrapper: securetar opens an encrypted inner tar on one.
_TAR_STREAM: Final[Any] = getattr(tarfile, "_Stream")  # noqa: B009


def _stream_of(carrier: tarfile.TarFile) -> Any:
    """Return tarfile's stream wrapper under ``carrier``, None in file mode."""
    stream = carrier.fileobj
    return stream if isinstance(stream, _TAR_STREAM) else None


def _raw_sink(carrier: tarfile.TarFile) -> Sink:
    """Return where securetar's (uncompressed) inner tar writes its bytes.

    Unencrypted, that is the outer archive itself; encrypted, it is
    securetar's encrypting stream under tarfile's stream wrapper (whose
    buffer stays empty because nothing is written through the tarfile).
    """
    stream = _stream_of(carrier)
    sink: Sink = carrier.fileobj if stream is None else stream.fileobj  # type: ignore[assignment]
    return sink


def _retire(carrier: tarfile.TarFile) -> None:
    """Close securetar's inner tarfile without its end-of-archive blocks.

    The member's content is our gzip stream, which already ends the tar it
    holds; the carrier wrote nothing, and must write nothing now (nor later,
    from a finalizer).
    """
    if carrier.closed:  # type: ignore[attr-defined]
        return
    carrier.closed = True  # type: ignore[attr-defined]
    stream = _stream_of(carrier)
    if stream is not None:
        stream.close()  # empty buffer: writes nothing, leaves the cipher open


@contextmanager
def _compressed_inner(
    opened: AbstractContextManager[tarfile.TarFile],
) -> Iterator[tarfile.TarFile]:
    """Yield a tar that writes through our gzip stream into securetar's member.

    On failure the compressor is stopped and the carrier closed before
    securetar finishes its member, so no object is left to write later.
    """
    with opened as carrier:
        writer = GzipWriter(_raw_sink(carrier))
        try:
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=writer,
                mode="w:",
                format=tarfile.PAX_FORMAT,
            ) as tar:
                yield tar
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            _retire(carrier)


@contextmanager
def open_writer(fileobj: Sink, password: str | None) -> Iterator[ArchiveWriter]:
    """Open an uncompressed PAX outer tar on ``fileobj`` (seekable, new file).

    Inner archives are encrypted when ``password`` is set, with the newest
    header version the installed securetar writes. The tarfile buffer stays at
    securetar's default: a large one makes encrypted writes much slower.
    """
    if NEW_API:
        with securetar.SecureTarArchive(
            fileobj=fileobj,
            mode="w",
            password=password,
            create_version=WRITE_VERSION,
        ) as archive:
            yield ArchiveWriter(
                archive.tar,
                lambda name, gzip: archive.create_tar(name, gzip=gzip),
            )
        return
    key = password_to_key(password) if password is not None else None
    # The name is only a label: everything goes to fileobj.
    outer = securetar.SecureTarFile(
        Path("backup.tar"), "w", gzip=False, fileobj=fileobj
    )
    with outer as tar:
        yield ArchiveWriter(
            tar, lambda name, gzip: outer.create_inner_tar(name, key=key, gzip=gzip)
        )


def forget_members(tar: tarfile.TarFile) -> None:
    """Drop the headers tarfile remembers of every member written or read.

    Streaming through an archive never needs them again, and keeping them
    costs memory and garbage-collection time in proportion to the number of
    files. Iterating ``tar`` goes on correctly after this.
    """
    tar.members.clear()  # type: ignore[attr-defined]


# --- reading ------------------------------------------------------------------


class Prefixed:
    """A read-only stream: ``prefix`` first, then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: Readable) -> None:
        """Serve ``prefix`` (already read from ``stream``) before the rest."""
        self._prefix = prefix
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        """Read like a file; the prefix first."""
        if not self._prefix:
            return self._stream.read(size)
        if size < 0:
            data, self._prefix = self._prefix + self._stream.read(), b""
            return data
        data, self._prefix = self._prefix[:size], self._prefix[size:]
        if len(data) < size:
            data += self._stream.read(size - len(data))
        return data


def read_head(stream: Readable, size: int = _HEADER_PEEK) -> bytes:
    """Read up to ``size`` bytes from ``stream`` (less only at its end)."""
    head = b""
    while len(head) < size:
        chunk = stream.read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head


def is_plain(head: bytes) -> bool:
    """Return whether ``head`` starts an unencrypted gzip or tar stream."""
    return head.startswith(GZIP_MAGIC) or (
        head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + len(_TAR_MAGIC)] == _TAR_MAGIC
    )


def encryption_version(head: bytes, *, password_given: bool) -> int | None:
    """Return the securetar header version of an inner archive, None if plain.

    Raises UnsupportedFormatError for a version the installed securetar cannot
    read: that backup needs a newer Home Assistant, not another password.
    """
    if head.startswith(MAGIC):
        version = head[len(MAGIC)] if len(head) > len(MAGIC) else 0
        if version not in READ_VERSIONS:
            raise UnsupportedFormatError(
                f"The backup is encrypted with SecureTar format version {version}, "
                f"but the installed securetar {installed_version()} reads only "
                f"versions {', '.join(map(str, sorted(READ_VERSIONS)))}. "
                "Restore it with a newer Home Assistant.",
                version=str(version),
            )
        return version
    if is_plain(head):
        return None
    if not head:
        raise CorruptBackupError("The inner archive is empty.")
    if password_given:
        return 1  # the magic-less first format: only the key can tell
    raise CorruptBackupError(
        "The inner archive is neither gzip, tar nor a SecureTar archive."
    )


def _decrypt_stream(
    source: Prefixed, *, size: int, password: str
) -> AbstractContextManager[Readable]:
    """Return securetar's context manager yielding the decrypted stream."""
    if NEW_API:
        return securetar.SecureTarDecryptStream(  # type: ignore[no-any-return]
            source,
            ciphertext_size=size,
            root_key_context=securetar.SecureTarRootKeyContext(password),
        )
    handler = securetar.SecureTarFile(
        None, "r", key=password_to_key(password), gzip=False, fileobj=source
    )
    sized = tarfile.TarInfo()  # decrypt() only needs the ciphertext's size
    sized.size = size
    return handler.decrypt(sized)  # type: ignore[no-any-return]


def _failure(err: BaseException, version: int) -> Exception:
    """Map an error while opening an encrypted stream to wrong password/damage."""
    invalid = getattr(securetar, "InvalidPasswordError", None)
    if invalid is not None and isinstance(err, invalid):
        return WrongPasswordError("The password is wrong.")
    if version >= _FIRST_AUTHENTICATED_VERSION:
        # The password was accepted by the header: anything else is damage.
        return CorruptBackupError(f"The encrypted archive is damaged: {err}")
    return WrongPasswordError(
        "The password is wrong (or the start of the backup is damaged)."
    )


@contextmanager
def decrypted(
    stream: Readable, *, size: int, password: str | None, protected: bool
) -> Iterator[Readable]:
    """Yield the plaintext of an inner archive of ``size`` bytes.

    Whether it is encrypted is read from its first bytes, not the metadata.
    Raises WrongPasswordError when a needed password is
    missing or does not open it; with the unauthenticated formats (v1, v2) a
    damaged first block looks the same, which a checksum can rule out.
    Errors while the caller reads the stream are the caller's to map.
    """
    head = read_head(stream)
    if not head and protected and password is None:
        raise WrongPasswordError("This backup is encrypted: a password is needed.")
    version = encryption_version(head, password_given=password is not None)
    source = Prefixed(head, stream)
    if version is None:
        yield source
        return
    if password is None:
        raise WrongPasswordError("This backup is encrypted: a password is needed.")
    handler = _decrypt_stream(source, size=size, password=password)
    try:
        plain = handler.__enter__()
        # The first read makes securetar check that the first decrypted
        # block looks like gzip or tar (v1, v2), as Home Assistant does.
        first = read_head(plain)
    except DATA_ERRORS as err:
        raise _failure(err, version) from err
    try:
        yield Prefixed(first, plain)
    finally:
        handler.__exit__(None, None, None)
