"""The worker process: calls behave as if they ran in the calling thread.

Every test starts real child processes of the same interpreter, as Home
Assistant does; nothing is mocked but, in two tests, how the child is found.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import logging
import os
from pathlib import Path
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest

from custom_components.backup_offload import errors, worker
from custom_components.backup_offload.archive import create_backup, verify_backup
from custom_components.backup_offload.restore import NewerThan

from . import worker_targets as targets
from .helpers import children, running

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
        name="in a worker",
        password="secret",
        include_database=True,
        excludes=[],
        compress=True,
        homeassistant_version="2025.4.4",
        instance_id="test",
        progress=progress.append,
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
    from custom_components.backup_offload import worker
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
