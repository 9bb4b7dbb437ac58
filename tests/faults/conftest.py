"""Fixtures of the fault-injection tests: shares that can fail on demand.

A `Share` is a NAS share in miniature: its data lives on a tmpfs (the
"server's disk") and is bind-mounted on the location's mount point, so the
share can be unmounted (the mount point is then a bare local directory, as
on a real machine) and mounted again with its data still there. An
`SshfsShare` is a real network share: sshfs to an sshd of the test's own on
127.0.0.1, whose server can be frozen with SIGSTOP.

Every mount and process is removed at the end of the test, also when it
fails; where this machine cannot mount, the tests skip (or fail, with
BACKUP_OFFLOAD_REQUIRE_MOUNTS=1, as in CI).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
import subprocess

from homeassistant.core import HomeAssistant
import pytest

from tests.mounts import bind_mount, lazy_unmount, sshfs, tmpfs, unmount

from .helpers import DirectoryWatch
from .sshd import SshServer, ssh_server


@dataclass
class Share:
    """A share with persistent data that can be unmounted and mounted again."""

    path: Path
    """The mount point: what the location is configured with."""
    disk: Path
    """The tmpfs holding the share's data (the server's disk)."""
    store: Path
    """The shared directory on that disk; mounted on ``path``."""
    bare: DirectoryWatch
    """inotify on the mount point's own (bare, local) directory."""
    _stack: ExitStack = field(default_factory=ExitStack)

    def mount(self) -> None:
        """Mount the share (blocking)."""
        self._stack.enter_context(bind_mount(self.store, self.path))

    def unmount(self) -> None:
        """Unmount the share, as a NAS that went away (blocking)."""
        unmount(self.path)

    def lazy_unmount(self) -> None:
        """Detach the share at once, even while files on it are open."""
        lazy_unmount(self.path)


@pytest.fixture
def make_share(tmp_path: Path) -> Iterator[Callable[..., Share]]:
    """Return a factory of mounted shares (blocking: call it in the executor)."""
    with ExitStack() as stack:

        def make(name: str = "nas", size: str = "256m") -> Share:
            disk = tmp_path / f"{name}-disk"
            stack.enter_context(tmpfs(disk, size=size))
            store = disk / "share"
            store.mkdir()
            path = tmp_path / name
            path.mkdir()
            bare = DirectoryWatch.start(path)
            stack.callback(bare.close)
            share = Share(path=path, disk=disk, store=store, bare=bare)
            # Unmounted before the disk below it (the stack runs backwards).
            stack.enter_context(share._stack)
            share.mount()
            return share

        yield make


@pytest.fixture
def share(make_share: Callable[..., Share]) -> Share:
    """Return a mounted share of 256 MiB."""
    return make_share()


@dataclass
class SshfsShare:
    """A directory served by our sshd and mounted with sshfs."""

    path: Path
    """The mount point: what the location is configured with."""
    export: Path
    """The directory on the server side."""
    server: SshServer
    sshfs: subprocess.Popen[bytes]


@pytest.fixture
def sshfs_share(hass: HomeAssistant, tmp_path: Path) -> Iterator[SshfsShare]:
    """Mount a directory over sshfs from an sshd of our own on 127.0.0.1.

    Depends on ``hass`` so that it is torn down first: the server is resumed
    (threads blocked on the share return) before Home Assistant stops.
    """
    export = tmp_path / "export"
    export.mkdir()
    with ExitStack() as stack:
        server = stack.enter_context(ssh_server(tmp_path / "sshd"))
        process = stack.enter_context(
            sshfs(
                tmp_path / "nas-sshfs",
                f"root@127.0.0.1:{export}",
                port=server.port,
                identity=server.identity,
                log=tmp_path / "sshfs.log",
                # Every request reaches the server: no cached directory
                # listing hides a frozen server from the probe. A server
                # frozen for minutes (a test killed meanwhile) ends the
                # connection, so no thread waits on it forever.
                options=("dir_cache=no", "ServerAliveInterval=60"),
            )
        )
        # Runs first on the way out: threads blocked on the share return,
        # and the unmount below does not wait on a frozen server.
        stack.callback(server.resume)
        yield SshfsShare(
            path=tmp_path / "nas-sshfs", export=export, server=server, sshfs=process
        )
