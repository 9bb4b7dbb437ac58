"""A guard that fails a test the moment a blocking call runs on the event loop.

Home Assistant's own detection of blocking I/O is switched off for `open`,
`listdir`, `scandir` and `pathlib` under tests, so the test harness alone
would let file I/O on the loop pass. We use `blockbuster` (it wraps the
blocking functions and raises `BlockingError` when one is called from a
thread that runs an asyncio loop) and add what it does not cover: the
`open` call itself (on a hung NFS share it is `open` that hangs), `os.open`,
`os.lstat`, `os.chmod`, `os.fsync`, the `os.scandir` call, `os.utime`,
`os.truncate`, `os.makedirs` and `shutil`'s copy/move/rmtree/disk_usage.
Everything built on these (`os.path.exists`/`isdir`/`isfile`, `os.walk`,
`pathlib.Path` methods, `glob`, `tarfile`, `securetar`) is covered through
them.

Only code in the project and Home Assistant's backup path is expected to be
clean. Where Home Assistant's own code or the test harness blocks on the loop
(not ours), exactly that call site is allowed in `ALLOWED_CALL_SITES`, each
with the reason.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
import contextlib
import io
import os
import shutil
import traceback

from blockbuster import BlockBuster, BlockBusterFunction, BlockingError
import blockbuster.blockbuster as _blockbuster_module

__all__ = ["BlockingError", "LoopGuard", "loop_guard"]

# Functions blockbuster does not wrap by itself, as "module.attribute" paths.
EXTRA_FUNCTIONS = (
    (builtins, "open"),
    (io, "open"),
    (os, "open"),
    (os, "lstat"),
    (os, "chmod"),
    (os, "fsync"),
    (os, "scandir"),
    (os, "utime"),
    (os, "truncate"),
    (os, "makedirs"),
    (shutil, "copyfile"),
    (shutil, "copy"),
    (shutil, "copy2"),
    (shutil, "copytree"),
    (shutil, "move"),
    (shutil, "rmtree"),
    (shutil, "disk_usage"),
)

# (function, file name suffix, functions in that file allowed to call it).
# Each entry is a call site in Home Assistant or the test harness, not in our
# code, that runs on the loop by design of the harness.
ALLOWED_CALL_SITES: tuple[tuple[str, str, frozenset[str]], ...] = (
    # Python's import machinery reads source files and stats directories on
    # whatever thread imports first; Home Assistant imports platforms lazily.
    (
        "builtins.open",
        "<frozen importlib._bootstrap_external>",
        frozenset({"get_data"}),
    ),
    ("io.open", "<frozen importlib._bootstrap_external>", frozenset({"get_data"})),
    ("os.lstat", "<frozen importlib._bootstrap_external>", frozenset({"_path_stat"})),
    (
        "os.scandir",
        "<frozen importlib._bootstrap_external>",
        frozenset({"_fill_cache"}),
    ),
    # Tracebacks and warnings read source lines for their messages.
    ("builtins.open", "linecache.py", frozenset({"updatecache"})),
    ("io.open", "tokenize.py", frozenset({"open"})),
    ("builtins.open", "tokenize.py", frozenset({"open"})),
    # pytest rewrites assertions in test modules imported during a test.
    (
        "builtins.open",
        "_pytest/assertion/rewrite.py",
        frozenset({"_read_pyc", "_rewrite_test"}),
    ),
    # Log records reach a stream handler directly under the test harness;
    # a running Home Assistant logs through a queue handler instead.
    ("io.TextIOWrapper.write", "logging/__init__.py", frozenset({"emit"})),
    ("io.BufferedWriter.write", "logging/__init__.py", frozenset({"emit"})),
    # coverage.py records line data under a lock that its tracer takes in
    # every thread; with many threads (the parallel compressor) the loop
    # thread can find it held for a moment. Only under coverage.
    ("lock.acquire", "coverage/collector.py", frozenset({"lock_data"})),
    ("lock.acquire_lock", "coverage/collector.py", frozenset({"lock_data"})),
    # coverage.py traces files from whatever thread runs them.
    ("os.lstat", "coverage/control.py", frozenset({"_should_trace"})),
    ("os.lstat", "coverage/files.py", frozenset({"canonical_filename", "abs_file"})),
)


def _build() -> BlockBuster:
    guard = BlockBuster()
    for module, name in EXTRA_FUNCTIONS:
        # blockbuster's own "os.scandir" wraps the iterator's __next__; ours
        # wraps the call, so the keys get a suffix to keep both.
        guard.functions[f"{module.__name__}.{name}()"] = BlockBusterFunction(
            module, name
        )
    for name, filename, functions in ALLOWED_CALL_SITES:
        for function in guard.functions.values():
            if function.full_name == name:
                function.can_block_in(filename, functions)
    return guard


class LoopGuard:
    """The active guard and every blocking call it caught.

    The calls are recorded as well as raised, so a blocking call whose
    `BlockingError` is swallowed by a broad `except` still fails the test.
    """

    def __init__(self) -> None:
        """Start with no violations."""
        self.violations: list[str] = []


@contextlib.contextmanager
def loop_guard() -> Iterator[LoopGuard]:
    """Activate the guard for the duration of the block."""
    state = LoopGuard()

    class RecordingBlockingError(BlockingError):
        def __init__(self, func: str) -> None:
            super().__init__(func)
            state.violations.append(
                f"{func}\n{''.join(traceback.format_stack(limit=12)[:-1])}"
            )

    guard = _build()
    guard.activate()
    # blockbuster raises the module-global name: point it at our subclass.
    _blockbuster_module.BlockingError = RecordingBlockingError  # type: ignore[misc]
    try:
        yield state
    finally:
        _blockbuster_module.BlockingError = BlockingError  # type: ignore[misc]
        guard.deactivate()
