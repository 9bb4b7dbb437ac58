"""Run the engine's heavy operations in a worker process instead of a thread.

A thread that walks the config directory and builds tar headers holds the
GIL most of the time, and Home Assistant's event loop has to wait for it
each time it wakes up: measured inside Home Assistant (``benchmarks/loop.py``,
"in a thread" rows), a backup in an executor thread delays the loop by up to
10 ms and more, while the same backup in a child process stays around the
lag of an idle Home Assistant. A child process has its own GIL; it only
shares the CPU with Home Assistant, and only takes what Home Assistant
leaves (``_yield_the_cpu``).

``run`` is called from the executor job of an operation (after its probe)
and behaves like calling the function in that thread: it starts the child
(the same Python, which imports only the engine, never Home Assistant),
sends it the call, serves what the child asks for while it runs (progress,
the database lock) and returns the child's result or raises its error.
If the child cannot be started, the function runs in the calling thread.

If Home Assistant goes away, the child notices (its pipe closes), stops the
way a failed operation stops (its temporary files are removed) and exits.

The child is isolated from what Home Assistant runs with: ``-I`` (no working
directory or user site on its import path, no ``PYTHON*`` variables), the
working directory ``/`` and only the environment the engine needs (never
the Supervisor's token). The parent reads nothing the child sends before
its greeting, a fixed string of bytes; after it, every message's length is
checked before it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
import io
import logging
import os
from pathlib import Path
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import traceback
from typing import IO, Any, Final

from .archive.tarstream import use_fast_checksums
from .errors import BackupOffloadError, WorkerFailedError
from .gil import NICE_INCREMENT

_LOGGER = logging.getLogger(__name__)

_HEADER: Final = struct.Struct("<Q")
# The child's first bytes, compared before anything it sends is unpickled:
# whatever else an interpreter prints on start (a ``sitecustomize``, say)
# means the call runs in the calling thread instead.
_HELLO: Final = b"\x00backup_offload worker 1\n"
# No message comes near this (a preview of a million files is far below);
# a length above it is garbage, refused before anything is allocated.
_MAX_MESSAGE: Final = 256 * 1024 * 1024
# The request's callbacks: the child gets stand-ins that ask the parent.
_PROGRESS: Final = "progress"
_LOCK: Final = "database_lock"

# Started by ``python -I -c``: make the engine importable without running the
# integration's ``__init__`` (which imports Home Assistant), then serve. The
# interpreter's own import path (standard library, site-packages) stays
# first, so nothing appended can shadow the standard library; nothing but
# the built-in ``sys`` is imported before the path is complete.
_BOOTSTRAP: Final = """
import sys
package, directory = sys.argv[1:3]
for entry in sys.argv[3:]:
    if entry not in sys.path:
        sys.path.append(entry)
parts = package.split(".")
for depth in range(1, len(parts) + 1):
    name = ".".join(parts[:depth])
    module = type(sys)(name)
    module.__path__ = [directory.rsplit("/", len(parts) - depth)[0]]
    sys.modules[name] = module
__import__(package + ".worker", fromlist=["serve"]).serve()
"""

# What the engine needs of Home Assistant's environment: where temporary
# files go, the locale and time zone (file names, a backup's date), the
# libraries the interpreter may need to start, and our own settings. Not
# the Supervisor's token, nor anything else Home Assistant was given.
_ENVIRONMENT: Final = frozenset(
    {"PATH", "LANG", "TZ", "TMPDIR", "TEMP", "TMP", "LD_LIBRARY_PATH"}
)
# ``COV_CORE_``: pytest-cov's, so that a measured test run measures the
# worker too (never set in Home Assistant).
_ENVIRONMENT_PREFIXES: Final = ("LC_", "BACKUP_OFFLOAD_", "COV_CORE_")


class _ParentError(Exception):
    """Raised in the child where the parent's callback failed (re-raised there)."""


class _Stopped(BaseException):
    """Raised in the child when the parent is gone or asks it to stop."""


class _NotStartedError(Exception):
    """The child could not run the call; nothing of it has happened."""


class _FrameError(Exception):
    """What was read is not a message of the other side."""


# --- framing ------------------------------------------------------------------


def _send(stream: IO[bytes], message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _receive(stream: IO[bytes]) -> Any:
    """Return the next message; None when the other side has gone.

    A length over the limit raises _FrameError before anything is read.
    """
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > _MAX_MESSAGE:
        raise _FrameError(f"a message of {size} bytes")
    data = _read_exactly(stream, size)
    if data is None:
        return None
    return pickle.loads(data)  # noqa: S301 - our own process, our own objects


# --- parent -------------------------------------------------------------------


def run[R](
    func: Callable[..., R],
    /,
    *args: Any,
    progress: Callable[[float], None] | None = None,
    database_lock: Callable[[], AbstractContextManager[None]] | None = None,
    **kwargs: Any,
) -> R:
    """Return ``func(*args, **kwargs)``, computed in a worker process.

    ``func`` must be a module-level function of the engine, and the arguments
    and result picklable. ``progress`` and ``database_lock`` are called here,
    in the calling thread, when the child calls its stand-ins. The child's
    errors are raised here as they were raised there; a child that dies is
    a WorkerFailedError.
    """
    if progress is not None:
        kwargs["progress"] = _PROGRESS
    if database_lock is not None:
        kwargs["database_lock"] = _LOCK
    try:
        result: R = _Parent(progress, database_lock).call(func, args, kwargs)
    except _NotStartedError as err:
        _LOGGER.warning(
            "Could not start a worker process (%s); running %s in this thread",
            err,
            getattr(func, "__name__", func),
        )
    else:
        return result
    if progress is not None:
        kwargs["progress"] = progress
    if database_lock is not None:
        kwargs["database_lock"] = database_lock
    return func(*args, **kwargs)


def _command() -> list[str]:
    package = __name__.rpartition(".")[0]
    directory = os.path.dirname(os.path.abspath(__file__))  # noqa: PTH100, PTH120
    # File names are encoded as here, also where UTF-8 mode came from a
    # variable that -I ignores.
    utf8 = ["-X", "utf8"] if sys.flags.utf8_mode else []
    # This process's own entries (a deps directory, say), never the working
    # directory ("" or relative ones): the child appends them to its own.
    appended = [entry for entry in sys.path if Path(entry).is_absolute()]
    return [
        sys.executable,
        "-I",
        *utf8,
        "-c",
        _BOOTSTRAP,
        package,
        directory,
        *appended,
    ]


def _environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name in _ENVIRONMENT or name.startswith(_ENVIRONMENT_PREFIXES)
    }


class _Parent:
    """One call in one child: start it, serve it, collect the outcome."""

    def __init__(
        self,
        progress: Callable[[float], None] | None,
        database_lock: Callable[[], AbstractContextManager[None]] | None,
    ) -> None:
        self._progress = progress
        self._lock_factory = database_lock
        self._held: AbstractContextManager[None] | None = None
        self._callback_error: BaseException | None = None

    def call(self, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        if not sys.executable:
            raise _NotStartedError("the Python interpreter is unknown")
        try:
            process = subprocess.Popen(  # noqa: S603 - our interpreter, our code
                _command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
                cwd="/",
                env=_environment(),
            )
        except OSError as err:
            raise _NotStartedError(str(err)) from err
        assert process.stdin is not None  # noqa: S101 - PIPE was asked for
        assert process.stdout is not None  # noqa: S101
        try:
            _greeted(process, process.stdout)
            try:
                _send(process.stdin, (func, args, kwargs))
            except BrokenPipeError as err:  # it died before it read the call
                raise _NotStartedError(f"it exited with {process.wait()}") from err
            return self._serve(process, process.stdin, process.stdout)
        finally:
            self._release()
            # Closing its input tells a child that is still running to stop.
            with suppress(OSError):
                process.stdin.close()
            process.wait()
            process.stdout.close()

    def _serve(
        self, process: subprocess.Popen[bytes], out: IO[bytes], replies: IO[bytes]
    ) -> Any:
        while True:
            message = _next(process, replies)
            kind = message[0]
            if kind == "result":
                return message[1]
            if kind == "error":
                raise self._error(message[1], message[2])
            if kind == "unusable":
                raise _NotStartedError(message[1])
            reply = self._answer(kind, message[1:])
            with suppress(BrokenPipeError):  # it died: its end of file follows
                _send(out, reply)

    def _answer(self, kind: str, payload: tuple[Any, ...]) -> tuple[str, ...]:
        """Run a callback the child asked for; return the reply."""
        try:
            if kind == _PROGRESS and self._progress is not None:
                self._progress(payload[0])
            elif kind == "enter" and self._lock_factory is not None:
                held = self._lock_factory()
                held.__enter__()
                self._held = held
            elif kind == "exit":
                self._release()
        except Exception as err:  # noqa: BLE001 - re-raised once the child stops
            self._callback_error = err
            return ("failed",)
        return ("ok",)

    def _release(self) -> None:
        """Leave the database lock: never leave the recorder paused."""
        held, self._held = self._held, None
        if held is not None:
            held.__exit__(None, None, None)

    def _error(self, err: BaseException, trace: str) -> BaseException:
        if isinstance(err, _ParentError) and self._callback_error is not None:
            return self._callback_error
        if not isinstance(err, BackupOffloadError):
            # Not one of ours: a bug, whose traceback is the child's.
            err.add_note(f"Raised in the worker process:\n{trace}")
        return err


def _greeted(process: subprocess.Popen[bytes], replies: IO[bytes]) -> None:
    """Return once the child said the greeting; else raise _NotStartedError."""
    greeting = replies.read(len(_HELLO))
    if greeting == _HELLO:
        return
    if len(greeting) < len(_HELLO):  # its end of the pipe closed: it exited
        wrote = f" after writing {greeting!r}" if greeting else ""
        raise _NotStartedError(f"it exited with {process.wait()}{wrote}")
    # Not our worker, or something printed first: nothing it sends is ours.
    # Killed, as it may be blocked writing more.
    process.kill()
    raise _NotStartedError(f"it wrote {greeting!r} instead of the worker's greeting")


def _next(process: subprocess.Popen[bytes], replies: IO[bytes]) -> tuple[Any, ...]:
    """Return the child's next message; WorkerFailedError if there is none."""
    try:
        message = _receive(replies)
    except Exception as err:  # whatever garbage makes pickle raise
        raise WorkerFailedError(
            f"a message of the worker process could not be read ({err})"
        ) from err
    if message is None:
        code = process.wait()
        raise WorkerFailedError(
            f"the worker process stopped unexpectedly (exit status {code})",
            exit_status=str(code),
        )
    if not isinstance(message, tuple) or not message:
        raise WorkerFailedError(
            f"a message of the worker process could not be read ({message!r:.80})"
        )
    return message


# --- child --------------------------------------------------------------------


class _Child:
    """The child's end: its stand-ins for the parent's callbacks."""

    def __init__(self, requests: IO[bytes], replies: queue.Queue[Any]) -> None:
        self._out = requests
        self._replies = replies
        self._lock = threading.Lock()
        self.finished = False

    def send(self, message: object) -> None:
        with self._lock:
            _send(self._out, message)

    def ask(self, *message: object) -> None:
        """Send a request and wait for the parent's reply."""
        self.send(message)
        reply = self._replies.get()
        if reply != ("ok",):
            raise _ParentError(f"{message[0]} failed in the parent")

    def progress(self, fraction: float) -> None:
        self.ask(_PROGRESS, fraction)

    @contextmanager
    def database_lock(self) -> Iterator[None]:
        self.ask("enter", None)
        try:
            yield
        finally:
            self.ask("exit", None)


def _watch(source: IO[bytes], replies: queue.Queue[Any], child: _Child) -> None:
    """Pass the parent's replies on; stop the child when the parent is gone."""
    # A reply that cannot be read: stop, as if the parent had gone.
    with suppress(Exception):
        while (message := _receive(source)) is not None:
            replies.put(message)
    if not child.finished:
        os.kill(os.getpid(), signal.SIGTERM)


def _yield_the_cpu() -> None:
    """Run on the CPU time Home Assistant leaves over.

    SCHED_IDLE (Linux): any thread of Home Assistant that wakes up takes the
    CPU from the worker at once. Measured with a nice value instead, the
    event loop sometimes waited over 10 ms for a CPU that the worker's
    threads held. Its threads inherit the policy. Elsewhere, a nice value.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        with suppress(OSError):
            os.nice(NICE_INCREMENT)


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def _resolve(kwargs: dict[str, Any], child: _Child) -> dict[str, Any]:
    """Replace the callback markers with the child's stand-ins."""
    resolved = dict(kwargs)
    if resolved.get("progress") == _PROGRESS:
        resolved["progress"] = child.progress
    if resolved.get("database_lock") == _LOCK:
        resolved["database_lock"] = child.database_lock
    return resolved


def serve() -> None:
    """Run one call for the parent (the child's main, see ``_BOOTSTRAP``)."""
    # Unbuffered, so that the thread that waits on it holds no lock that the
    # interpreter needs at exit; the protocol owns the real stdout, and a
    # stray print goes to stderr.
    source = io.FileIO(os.dup(sys.stdin.fileno()), "rb")
    out = io.BufferedWriter(io.FileIO(os.dup(sys.stdout.fileno()), "wb"))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _yield_the_cpu()
    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C in Home Assistant's terminal reaches its whole process group:
    # Home Assistant stops, and its closing pipe stops the child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Nothing but the engine runs here: tarfile may read headers faster.
    use_fast_checksums()
    out.write(_HELLO)
    out.flush()
    try:
        request = _receive(source)
    except Exception as err:  # noqa: BLE001 - the parent runs it itself then
        _send(out, ("unusable", f"{type(err).__name__}: {err}"))
        return
    if request is None:
        return
    func, args, kwargs = request
    replies: queue.Queue[Any] = queue.Queue()
    child = _Child(out, replies)
    watcher = threading.Thread(
        target=_watch, args=(source, replies, child), daemon=True
    )
    watcher.start()
    answer: tuple[Any, ...]
    try:
        answer = ("result", func(*args, **_resolve(kwargs, child)))
    except _Stopped:
        return
    except BaseException as err:  # noqa: BLE001 - every error goes to the parent
        answer = ("error", *_portable(err))
    child.finished = True
    child.send(answer)
    # The parent closes the pipe once it has the answer.
    watcher.join()


def _portable(err: BaseException) -> tuple[BaseException, str]:
    """Return ``err`` (or a stand-in, if it cannot be pickled) and its traceback."""
    trace = "".join(traceback.format_exception(err))
    try:
        pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object
    except Exception:  # noqa: BLE001 - whatever the exception holds
        return WorkerFailedError(f"{type(err).__name__}: {err}"), trace
    return err, trace
