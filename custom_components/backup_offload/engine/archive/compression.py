"""Standard gzip, fast: block-parallel compression and read-ahead decompression.

Compression is the cost of a backup (``tar -czf`` and Home Assistant's own
writer are both gzip-bound), so it is done the way ``pigz`` does it: the
stream is cut into blocks that a small thread pool compresses at once, each
block primed with the 32 KiB before it (``zdict``) and ended with a sync
flush, so the blocks join into ONE ordinary gzip member that every reader
(Home Assistant's restore, ``tar -xzf``, Python's ``gzip``/``tarfile``)
reads. The CRC is computed in order by the writer. zlib (and ISA-L) release
the GIL while they work, so the pool runs in parallel with the thread that
reads the config directory, and with Home Assistant's event loop.

ISA-L (``isal``, which Home Assistant installs for its own HTTP compression)
is used when it is importable: several times faster than zlib for about the
same size. Without it the standard ``zlib`` module is used. The environment
variable ``BACKUP_OFFLOAD_COMPRESSOR=zlib`` forces zlib (benchmarks, tests).

Reading decompresses in a background thread that runs ahead of the reader
by a bounded number of chunks: decompression then overlaps with walking the
tar and writing files.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
import importlib
import os
import queue
import struct
import threading
import time
from types import ModuleType
from typing import Any, Final, Protocol
import zlib

from ..gil import lower_priority


class Writable(Protocol):
    """Where compressed bytes go."""

    def write(self, data: bytes, /) -> Any:
        """Write ``data``."""


class Readable(Protocol):
    """Where compressed bytes come from."""

    def read(self, size: int = -1, /) -> bytes:
        """Read up to ``size`` bytes; b"" at the end."""


BLOCK: Final = 1 << 20
"""Uncompressed bytes per block compressed in one go."""
_WINDOW: Final = 32 * 1024  # deflate's window: what a block is primed with
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00"  # magic, deflate, no flags
_OS_UNKNOWN: Final = 255
_MAX_WORKERS: Final = 4
_GUNZIP_CHUNK: Final = 1 << 20
"""Compressed bytes decompressed at a time: each piece is one hand-over to
the reader and one wait for the GIL, so fewer, larger pieces read faster."""
_READ_AHEAD: Final = 8  # decompressed pieces (each at most 4 chunks) queued


@dataclass(frozen=True, slots=True)
class Backend:
    """A zlib-compatible module and the level used with it."""

    name: str
    module: ModuleType
    level: int
    error: type[Exception]


def _load_backend(requested: str | None) -> Backend:
    zlib_backend = Backend("zlib", zlib, 6, zlib.error)
    if requested == "zlib":
        return zlib_backend
    try:
        isal_zlib = importlib.import_module("isal.isal_zlib")
    except ImportError:
        return zlib_backend
    # ISA-L level 2: ~6x zlib's speed at level 6, output ~3 % larger.
    return Backend("isal", isal_zlib, 2, isal_zlib.error)


BACKEND: Final = _load_backend(os.environ.get("BACKUP_OFFLOAD_COMPRESSOR"))
"""The compressor in use (isal when installed, else zlib)."""


def default_workers() -> int:
    """Return how many threads compress at once: the cores, at most 4."""
    return max(1, min(_MAX_WORKERS, os.cpu_count() or 1))


def _compress_block(backend: Backend, block: bytes, primer: bytes, last: bool) -> bytes:
    """Compress one block as raw deflate, primed and flushed to a byte edge."""
    module = backend.module
    if primer:
        compressor = module.compressobj(
            backend.level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=primer
        )
    else:
        compressor = module.compressobj(backend.level, zlib.DEFLATED, -zlib.MAX_WBITS)
    data: bytes = compressor.compress(block)
    flushed: bytes = compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return data + flushed


class GzipWriter:
    """Writes one gzip member to ``sink``, compressing blocks in parallel.

    A write-only stream: ``write`` buffers, full blocks go to the pool, their
    output is written to ``sink`` in order, at most ``2 x workers`` blocks are
    in flight (memory stays bounded). ``close`` writes the rest and the
    trailer; ``abort`` (after a failure) stops the pool and writes nothing
    more. Either leaves no thread and nothing that writes later.
    """

    def __init__(
        self,
        sink: Writable,
        *,
        mtime: float | None = None,
        workers: int | None = None,
        block_size: int = BLOCK,
        backend: Backend = BACKEND,
    ) -> None:
        """Start a gzip member on ``sink`` (the header is written at once)."""
        self._sink = sink
        self._backend = backend
        self._workers = workers or default_workers()
        self._block_size = block_size
        self._buffer = bytearray()
        self._primer = b""
        self._crc = 0
        self._size = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[bytes]] = deque()
        self._closed = False
        stamp = int(time.time() if mtime is None else mtime) & 0xFFFFFFFF
        sink.write(_GZIP_HEADER + struct.pack("<IBB", stamp, 0, _OS_UNKNOWN))

    @property
    def closed(self) -> bool:
        """Return whether the member was finished or aborted."""
        return self._closed

    def tell(self) -> int:
        """Return the uncompressed bytes written so far."""
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Compress ``data`` (buffered); return its length."""
        if self._closed:
            raise ValueError("write to a closed GzipWriter")
        size = len(data)
        self._size += size
        self._buffer += data
        while len(self._buffer) >= self._block_size:
            block = bytes(self._buffer[: self._block_size])
            del self._buffer[: self._block_size]
            self._submit(block)
        return size

    def _submit(self, block: bytes) -> None:
        self._crc = zlib.crc32(block, self._crc)
        if self._workers <= 1:
            self._sink.write(
                _compress_block(self._backend, block, self._primer, last=False)
            )
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self._workers,
                    thread_name_prefix="backup_offload-gzip",
                    initializer=lower_priority,
                )
            while len(self._pending) >= 2 * self._workers:
                self._sink.write(self._pending.popleft().result())
            self._pending.append(
                self._pool.submit(
                    _compress_block, self._backend, block, self._primer, False
                )
            )
        self._primer = block[-_WINDOW:]

    def close(self) -> None:
        """Compress what is left, write it and the gzip trailer."""
        if self._closed:
            return
        try:
            block = bytes(self._buffer)
            self._buffer = bytearray()
            self._crc = zlib.crc32(block, self._crc)
            while self._pending:
                self._sink.write(self._pending.popleft().result())
            self._sink.write(
                _compress_block(self._backend, block, self._primer, last=True)
            )
            self._sink.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._stop()

    def abort(self) -> None:
        """Drop everything not written yet and stop the pool."""
        self._closed = True
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._buffer = bytearray()
        self._stop()

    def _stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# --- reading ------------------------------------------------------------------


class _Failure:
    """An error raised in the reader thread, handed to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END: Final = b""


class GzipReader:
    """Reads a gzip stream, decompressed ahead in a background thread.

    The thread reads ``source`` in chunks, decompresses them and queues the
    result (at most a few chunks ahead), so the caller's work (walking the
    tar, writing files) overlaps with decompression. The gzip CRC and size
    are checked at the end of each member (zlib does); concatenated members
    and zero padding after a member are read as ``gzip`` reads them. Errors
    of ``source`` and of the data are raised from ``read`` in the caller's
    thread, data errors as ``zlib.error`` or ``EOFError`` (truncated).
    ``close`` stops the thread; use it as a context manager.
    """

    def __init__(
        self,
        source: Readable,
        *,
        backend: Backend = BACKEND,
        chunk: int = _GUNZIP_CHUNK,
        read_ahead: int = _READ_AHEAD,
    ) -> None:
        """Start reading ``source`` in a background thread."""
        self._source = source
        self._backend = backend
        self._chunk = chunk
        self._queue: queue.Queue[bytes | _Failure] = queue.Queue(read_ahead)
        self._stopping = threading.Event()
        self._current = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(
            target=self._run, name="backup_offload-gunzip", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> GzipReader:
        """Return self."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the thread."""
        self.close()

    def _put(self, item: bytes | _Failure) -> bool:
        """Queue ``item``; False when the consumer has stopped."""
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def _run(self) -> None:
        lower_priority()
        try:
            self._decompress()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(err))
            return
        self._put(_END)

    def _new(self) -> Any:
        return self._backend.module.decompressobj(16 + zlib.MAX_WBITS)

    def _decompress(self) -> None:
        error = self._backend.error
        decompressor = self._new()
        started = False  # a member has started (not just zero padding)
        while not self._stopping.is_set():
            data = self._source.read(self._chunk)
            if not data:
                break
            while data:
                if decompressor.eof:
                    # Another member may follow; zero bytes are padding.
                    data = data.lstrip(b"\x00")
                    if not data:
                        break
                    decompressor = self._new()
                started = True
                try:
                    # Bounded output: a small chunk may inflate to a lot.
                    out = decompressor.decompress(data, self._chunk * 4)
                except error as err:
                    raise zlib.error(str(err)) from err
                data = (
                    decompressor.unused_data
                    if decompressor.eof
                    else decompressor.unconsumed_tail
                )
                if out and not self._put(out):
                    return
        if not started:
            raise EOFError("The gzip stream is empty")
        if not decompressor.eof:
            raise EOFError(
                "Compressed file ended before the end-of-stream marker was reached"
            )

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` decompressed bytes (all with -1); b"" at the end."""
        if size < 0:
            parts = []
            while part := self.read(1 << 20):
                parts.append(part)
            return b"".join(parts)
        while not self._current:
            if self._done:
                return b""
            item = self._queue.get()
            if isinstance(item, _Failure):
                self._done = True
                raise item.error
            if not item:
                self._done = True
                return b""
            self._current = memoryview(item)
        data = bytes(self._current[:size])
        self._current = self._current[size:]
        return data

    def close(self) -> None:
        """Stop the reader thread (it may be waiting on a full queue)."""
        self._stopping.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()
        self._done = True
        self._current = memoryview(b"")
