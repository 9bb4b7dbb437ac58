"""An OpenSSH server of the test's own on 127.0.0.1, for a real network share.

`ssh_server` starts ``sshd -D`` with its own host key, its own authorized
client key and its own configuration, all in a temporary directory, on a
random loopback port; sshfs then mounts a directory through it (see
``tests.mounts.sshfs``). `SshServer.stop` freezes the server with SIGSTOP,
the listener and every process serving a connection, which is what a NAS
that stops answering looks like to the client: requests are sent and never
answered. `SshServer.resume` lets it go on. The server is always resumed
and ended on exit, also when the test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
import os
from pathlib import Path
import random
import signal
import subprocess
import time

from tests.mounts import require_command, require_root

# How long sshd may take to listen.
START_TIMEOUT = 10.0
# Ports are drawn at random from this range; a taken one is drawn again.
_PORTS = (20000, 60000)
_ATTEMPTS = 5
# sshd's privilege separation directory (Debian's build); sshd refuses to
# start without it. A system directory: created when missing, never removed.
_PRIVSEP_DIR = Path("/run/sshd")

CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
AddressFamily inet
HostKey {dir}/host_ed25519
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
"""


@dataclass
class SshServer:
    """A running sshd and the client key that logs in to it as root."""

    port: int
    identity: Path
    process: subprocess.Popen[bytes]
    log: Path

    def pids(self) -> list[int]:
        """Return sshd's listener and every process below it (sessions)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # Gone meanwhile.
            # "pid (comm) state ppid ...": comm may contain spaces and ")".
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        found: list[int] = []
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def _signal_all(self, signum: signal.Signals) -> list[int]:
        pids = self.pids()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signum)
        return pids

    def stop(self) -> list[int]:
        """Freeze the server (SIGSTOP), connections included; return the pids.

        Returns once every process is stopped, so the next request to the
        share is certain not to be answered.
        """
        pids = self._signal_all(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while not all(_state(pid) in {"T", None} for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd processes {pids} did not stop")
            time.sleep(0.01)
        return pids

    def resume(self) -> None:
        """Let the server go on (SIGCONT)."""
        if self.process.poll() is None:
            self._signal_all(signal.SIGCONT)

    @property
    def frozen(self) -> bool:
        """Return True while every sshd process is stopped."""
        return all(_state(pid) in {"T", None} for pid in self.pids())


def _state(pid: int) -> str | None:
    """Return a process's state letter (R, S, T, ...), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _listening(port: int) -> bool:
    """Return True when something listens on 127.0.0.1:``port`` (TCP)."""
    wanted = f"0100007F:{port:04X}"
    with Path("/proc/net/tcp").open() as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
                return True
    return False


def _keygen(path: Path, sshkeygen: str) -> None:
    subprocess.run(
        [sshkeygen, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _start(sshd: str, workdir: Path, identity: Path, log: Path) -> SshServer | None:
    """Start sshd on a random free port; None if the port was taken meanwhile."""
    port = random.randint(*_PORTS)  # noqa: S311 - not for security
    while _listening(port):
        port = random.randint(*_PORTS)  # noqa: S311
    config = workdir / "sshd_config"
    config.write_text(CONFIG.format(port=port, dir=workdir))
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = SshServer(port=port, identity=identity, process=process, log=log)
    deadline = time.monotonic() + START_TIMEOUT
    while not _listening(port):
        if process.poll() is not None:
            if "Address already in use" in log.read_text(errors="replace"):
                return None
            raise RuntimeError(
                f"sshd exited with {process.returncode}:"
                f" {log.read_text(errors='replace').strip()}"
            )
        if time.monotonic() > deadline:
            _end(server)
            raise RuntimeError(f"sshd is not listening after {START_TIMEOUT}s")
        time.sleep(0.02)
    return server


def _end(server: SshServer) -> None:
    """Resume and end sshd and every session process, whatever their state."""
    pids = server.pids()
    for pid in reversed(pids):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    # Session processes are not ours to wait for (they are sshd's children),
    # but none may outlive the test: kill what is left.
    for pid in pids[1:]:
        with suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().startswith("sshd"):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def ssh_server(workdir: Path) -> Iterator[SshServer]:
    """Run an sshd of our own on 127.0.0.1; yield it; end it on exit."""
    require_root()
    sshd = require_command("sshd", "openssh-server")
    sshkeygen = require_command("ssh-keygen", "openssh-client")
    workdir.mkdir(parents=True, exist_ok=True)
    _PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    _keygen(workdir / "host_ed25519", sshkeygen)
    identity = workdir / "client_ed25519"
    _keygen(identity, sshkeygen)
    (workdir / "authorized_keys").write_bytes(identity.with_suffix(".pub").read_bytes())
    log = workdir / "sshd.log"
    server = None
    for _ in range(_ATTEMPTS):
        server = _start(sshd, workdir, identity, log)
        if server is not None:
            break
    if server is None:
        raise RuntimeError(f"sshd found no free port in {_ATTEMPTS} attempts")
    try:
        yield server
    finally:
        _end(server)
