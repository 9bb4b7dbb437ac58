"""The worker process: calls behave as if they ran in the calling thread.

Every test starts real child processes of the same interpreter, as Home
Assistant does; nothing is mocked but, in a few tests, the interpreter the
child is started with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
import json
import logging
import os
from pathlib import Path
import pickle
import shlex
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest

from custom_components.backup_offload.engine import errors, worker
from custom_components.backup_offload.engine.archive.create import create_backup
from custom_components.backup_offload.engine.archive.read import verify_backup
from custom_components.backup_offload.engine.restore.checks import NewerThan

from . import worker_targets as targets
from .helpers import backup_options, children, running

REPO = Path(__file__).resolve().parents[2]


def test_runs_in_another_process() -> None:
    """The function runs in a child; its result comes back."""
    pid, value = worker.run(targets.identify, {"a": [1, 2]})
    assert pid != os.getpid()
    assert value == {"a": [1, 2]}


def test_engine_call(config: Path, location: Path) -> None:
    """A real backup, written by the worker, reads back here."""
    progress: list[float] = []
    result = worker.run(
        create_backup,
        config,
        location,
        progress=progress.append,
        **backup_options(name="in a worker", password="secret"),
    )
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    verified = verify_backup(location / result.info.file, "secret")
    assert verified.checksum is True
    assert worker.run(verify_backup, location / result.info.file, "secret") == verified


def test_worker_yields_the_cpu() -> None:
    """The worker and the threads it starts only get the CPU left over."""
    assert worker.run(targets.scheduling) == (os.SCHED_IDLE, os.SCHED_IDLE)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # not this process


def test_stray_output() -> None:
    """A print in the child does not disturb the answer."""
    assert worker.run(targets.chatty) == "answered"


@pytest.mark.parametrize(
    ("kind", "expected", "attributes"),
    [
        (
            "location",
            errors.LocationUnavailableError,
            {
                "location_reason": "not_a_mount",
                "placeholders": {
                    "error": "/nas is gone",
                    "detail": "/nas is gone",
                    "path": "/nas",
                    "errno": "ENOENT",
                },
            },
        ),
        (
            "space",
            errors.InsufficientSpaceError,
            {"placeholders": {"error": "disk full", "needed": "10", "free": "1"}},
        ),
    ],
)
def test_errors_cross_unchanged(
    kind: str, expected: type[errors.BackupOffloadError], attributes: dict[str, object]
) -> None:
    """The engine's errors arrive with their type and every attribute."""
    with pytest.raises(expected) as caught:
        worker.run(targets.fail, kind)
    for name, value in attributes.items():
        assert getattr(caught.value, name) == value
    assert caught.value.reason == expected.reason


def test_error_pickles() -> None:
    """Every error of the engine survives pickling (the way to the parent)."""
    err = errors.LocationUnavailableError("gone", "unreachable", path="/x")
    err.add_note("a note")
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.args, back.__dict__) == (
        type(err),
        err.args,
        err.__dict__,
    )


def test_bug_keeps_child_traceback() -> None:
    """A bug's error says where in the child it was raised."""
    with pytest.raises(KeyError) as caught:
        worker.run(targets.fail, "bug")
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "Raised in the worker process" in notes
    assert "worker_targets.py" in notes


def test_unpicklable_error() -> None:
    """An error that cannot travel arrives as WorkerFailedError, with its text."""
    with pytest.raises(errors.WorkerFailedError, match="Local: not picklable"):
        worker.run(targets.fail, "local")


def test_progress_in_order() -> None:
    """Progress is reported here, in this thread, in order."""
    seen: list[tuple[float, int]] = []
    assert (
        worker.run(
            targets.report,
            progress=lambda step: seen.append((step, threading.get_ident())),
        )
        == 4
    )
    assert seen == [(step, threading.get_ident()) for step in (0.25, 0.5, 0.75, 1.0)]


class Lock:
    """A database lock that records what happened, in the parent."""

    def __init__(self, marker: Path, *, fail: bool = False) -> None:
        self.marker = marker
        self.fail = fail
        self.events: list[str] = []

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if self.fail:
            raise RuntimeError("the recorder refused")
        self.events.append(f"enter, marker written: {self.marker.exists()}")
        try:
            yield
        finally:
            self.events.append(f"exit, marker written: {self.marker.exists()}")


def test_database_lock(tmp_path: Path) -> None:
    """The child's work happens while the parent holds the lock."""
    lock = Lock(tmp_path / "marker")
    pid = worker.run(targets.locked, marker=lock.marker, database_lock=lock)
    assert lock.events == ["enter, marker written: False", "exit, marker written: True"]
    assert lock.marker.read_text() == str(pid)


def test_database_lock_fails(tmp_path: Path) -> None:
    """The parent's own error is raised; the child did nothing under it."""
    lock = Lock(tmp_path / "marker", fail=True)
    with pytest.raises(RuntimeError, match="the recorder refused"):
        worker.run(targets.locked, marker=lock.marker, database_lock=lock)
    assert not lock.marker.exists()


def test_child_dies_holding_lock(tmp_path: Path) -> None:
    """A child killed under the lock: the lock is released, the call fails."""
    lock = Lock(tmp_path / "marker")
    with pytest.raises(errors.WorkerFailedError, match="exit status -9") as caught:
        worker.run(targets.die_holding, database_lock=lock)
    assert lock.events == [
        "enter, marker written: False",
        "exit, marker written: False",
    ]
    assert caught.value.placeholders["exit_status"] == "-9"


def test_child_dies() -> None:
    """A child that exits without an answer is a WorkerFailedError."""
    with pytest.raises(errors.WorkerFailedError, match="exit status 3"):
        worker.run(targets.die)


def test_progress_callback_fails() -> None:
    """An error of the parent's progress callback stops the call with it."""

    def progress(step: float) -> None:
        raise RuntimeError("the loop is closed")

    with pytest.raises(RuntimeError, match="the loop is closed"):
        worker.run(targets.report, progress=progress)


def test_no_interpreter_runs_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without an interpreter to start, the call runs in this thread."""
    monkeypatch.setattr(sys, "executable", "")
    seen: list[float] = []
    assert worker.run(targets.identify, 1) == (os.getpid(), 1)
    assert worker.run(targets.report, progress=seen.append) == 4
    assert seen == [0.25, 0.5, 0.75, 1.0]
    assert "the Python interpreter is unknown" in caplog.text


def test_interpreter_cannot_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An interpreter that cannot be started: the call runs in this thread."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "missing-python"))
    with caplog.at_level(logging.WARNING):
        assert worker.run(targets.identify, 2) == (os.getpid(), 2)
    assert "Could not start a worker process" in caplog.text


def test_interpreter_exits_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A child that dies before it says hello: the call runs in this thread."""
    monkeypatch.setattr(sys, "executable", "/bin/false")
    assert worker.run(targets.identify, 3) == (os.getpid(), 3)
    assert "it exited with 1" in caplog.text


def test_function_not_importable_there(caplog: pytest.LogCaptureFixture) -> None:
    """A function the child cannot import runs in this thread instead."""
    module = types.ModuleType("only_in_this_process")
    exec(  # noqa: S102 - a module that exists in this process only
        "import os\ndef where():\n    return os.getpid()\n", module.__dict__
    )
    sys.modules[module.__name__] = module
    try:
        assert worker.run(module.where) == os.getpid()
    finally:
        del sys.modules[module.__name__]
    assert "ModuleNotFoundError" in caplog.text


# Imported by the child before and after it sets up its import path.
_SHADOWED = ("json", "types", "tarfile", "pickle", "queue")


@pytest.mark.parametrize("where", ["working directory", "import path"])
def test_nothing_shadows_the_standard_library(
    where: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Modules in Home Assistant's directory or on its path never run there.

    ``python -c`` puts the working directory first on the import path, and
    an entry of Home Assistant's own path may hold a ``json.py``: the
    child's standard library comes first all the same.
    """
    shadows = tmp_path / "shadows"
    shadows.mkdir()
    for name in _SHADOWED:
        marker = tmp_path / f"{name} was imported"
        (shadows / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    if where == "working directory":
        monkeypatch.chdir(shadows)
    else:
        monkeypatch.syspath_prepend(str(shadows))
    pid, _ = worker.run(targets.identify, None)
    assert sorted(path.name for path in tmp_path.glob("* was imported")) == []
    assert pid != os.getpid()


def test_environment_is_an_allow_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The child gets what the engine needs of the environment, nothing else."""
    secrets = {
        "SUPERVISOR_TOKEN": "supervisor-secret",
        "HASSIO_TOKEN": "hassio-secret",
        "MQTT_PASSWORD": "mqtt-secret",
        "PYTHONPATH": str(tmp_path),
        "PYTHONSTARTUP": str(tmp_path / "startup.py"),
    }
    needed = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_TIME": "C.UTF-8",
        "TZ": "Europe/Berlin",
        "TMPDIR": str(tmp_path),
        "BACKUP_OFFLOAD_COMPRESSOR": "zlib",
    }
    for name, value in (secrets | needed).items():
        monkeypatch.setenv(name, value)
    seen = worker.run(targets.surroundings)
    environ = seen["environ"]
    assert not secrets.keys() & environ.keys()
    assert {name: environ.get(name) for name in needed} == needed
    assert seen["tempdir"] == str(tmp_path)
    assert seen["cwd"] == "/"
    assert seen["isolated"] == 1


def test_import_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The child's own import path first, this process's absolute entries after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "path", ["", "relative/entry", *sys.path])
    show = "import json, sys; print(json.dumps(sys.path))"
    own = json.loads(
        subprocess.run(
            [sys.executable, "-I", "-c", show],
            cwd="/",
            env={},
            capture_output=True,
            check=True,
        ).stdout
    )
    path = worker.run(targets.surroundings)["path"]
    assert path[: len(own)] == own
    appended = [entry for entry in sys.path if os.path.isabs(entry)]
    assert path[len(own) :] == [
        entry for entry in dict.fromkeys(appended) if entry not in own
    ]
    assert str(tmp_path) in path


def _unstuck(call: Callable[[], object], seconds: float = 60) -> object:
    """Return ``call()``; a call that hangs fails the test instead of hanging it.

    Killing this process's children frees a parent that waits for a child
    that waits for it.
    """
    outcome: list[tuple[bool, object]] = []

    def target() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as err:  # raised again below
            outcome.append((False, err))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for pid in children(os.getpid()):
            os.kill(pid, signal.SIGKILL)
        thread.join()
        pytest.fail(f"the call hung for {seconds} s")
    ((finished, value),) = outcome
    if not finished:
        raise value  # type: ignore[misc]
    return value


@pytest.mark.parametrize("lines", [1, 5000], ids=["a line", "more than a pipe holds"])
def test_output_before_greeting(
    lines: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Something that prints before the worker serves: the call runs here.

    As a ``sitecustomize`` that prints would: the "interpreter" writes lines
    and then becomes the real one.
    """
    wrapper = tmp_path / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        "i=0\n"
        f'while [ "$i" -lt {lines} ]; do echo "hello from sitecustomize"; '
        "i=$((i+1)); done\n"
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    with caplog.at_level(logging.WARNING):
        assert _unstuck(lambda: worker.run(targets.identify, 4)) == (os.getpid(), 4)
    assert "Could not start a worker process" in caplog.text
    assert "hello from" in caplog.text


def test_absurd_length_refused_before_reading() -> None:
    """A length no message has is refused before anything is allocated."""
    read, write = os.pipe()
    with open(write, "wb") as sender:
        sender.write(struct.pack("<Q", 1 << 62) + b"garbage")
    with open(read, "rb") as stream:
        with pytest.raises(worker._FrameError, match=f"a message of {1 << 62} bytes"):
            worker._receive(stream)
        assert stream.read() == b"garbage"  # nothing read after the length


def _frame(message: object) -> bytes:
    data = pickle.dumps(message)
    return struct.pack("<Q", len(data)) + data


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(struct.pack("<Q", 1 << 62) + b"garbage", id="absurd length"),
        pytest.param(struct.pack("<Q", 7) + b"garbage", id="not a pickle"),
        pytest.param(_frame("not a tuple"), id="not a message"),
    ],
)
def test_garbage_from_a_started_worker(garbage: bytes, tmp_path: Path) -> None:
    """Garbage once the call started: WorkerFailedError; the child cleans up."""
    temp = tmp_path / "partial.tmp"
    with pytest.raises(errors.WorkerFailedError, match="could not be read"):
        _unstuck(
            lambda: worker.run(
                targets.send_garbage,
                progress=lambda _: None,
                garbage=garbage,
                temp=temp,
            )
        )
    assert not temp.exists()


def test_newer_than_travels() -> None:
    """The restore's version check is an object the worker can carry."""
    newer = NewerThan("2025.4.4")
    assert pickle.loads(pickle.dumps(newer)) == newer
    assert newer("2025.5.0")
    assert not newer("2025.4.4")
    assert not newer("2024.12.1")


_PARENT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from tests.engine.conftest import _import_without_home_assistant
    _import_without_home_assistant()
    from custom_components.backup_offload.engine import worker
    from tests.engine import worker_targets
    worker.run(
        worker_targets.work_until_stopped, Path(sys.argv[2]), Path(sys.argv[3])
    )
    """
)


def test_parent_killed(tmp_path: Path) -> None:
    """Home Assistant killed: the worker cleans up after itself and exits."""
    temp = tmp_path / "partial.tmp"
    ready = tmp_path / "ready"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(REPO), str(temp), str(ready)]
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert parent.poll() is None
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.01)
        (child,) = children(parent.pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        while running(child):
            assert time.monotonic() < deadline, "the worker did not stop"
            time.sleep(0.01)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert not temp.exists()
