"""A real Home Assistant process, driven through its REST API.

Started with `python -m homeassistant -c <tmp>` (only the integrations the
tests need, HTTP on 127.0.0.1) and stopped cleanly; the `instance` fixture
(tests/conftest.py) gives one to a test. For end-to-end tests and for the
crash tests, which kill it.

As a pytest plugin (`pytest --noconftest -p tests.live_hass
tests/test_e2e.py`) this module alone gives the end-to-end test its
`instance`: for a Home Assistant release that Home Assistant's test harness
(pytest-homeassistant-custom-component) does not support yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
import json
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import time
from typing import Any
import urllib.error
import urllib.parse
import urllib.request

import pytest

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120.0

CONFIGURATION = """
homeassistant:
  name: E2E
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
logger:
  default: warning
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Instance:
    """A running Home Assistant and how to talk to it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    token: str = ""

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send a JSON request; return the decoded answer."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310
            raw = resp.read()
        return json.loads(raw) if raw else None

    def form(self, path: str, fields: dict[str, str]) -> Any:
        """Send a form request (the token endpoint wants one)."""
        req = urllib.request.Request(  # noqa: S310
            self.url + path, data=urllib.parse.urlencode(fields).encode()
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return json.loads(resp.read())


def _wait_until_up(instance: Instance) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            pytest.fail(f"Home Assistant exited:\n{instance.log.read_text()[-4000:]}")
        try:
            instance.request("GET", "/api/onboarding")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
            continue
        return
    pytest.fail(f"Home Assistant did not start:\n{instance.log.read_text()[-4000:]}")


@contextmanager
def started(tmp_path: Path) -> Iterator[Instance]:
    """Start Home Assistant on a config directory in ``tmp_path``; stop it after."""
    config = tmp_path / "config"
    config.mkdir()
    port = _free_port()
    (config / "configuration.yaml").write_text(CONFIGURATION.format(port=port))
    (config / "custom_components").symlink_to(REPO / "custom_components")
    log = tmp_path / "hass.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "homeassistant", "-c", str(config), "--skip-pip"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": ""},
            # Its own process group, with its worker processes: a test can
            # kill them all at once, as a power cut would.
            start_new_session=True,
        )
    hass = Instance(url=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        _wait_until_up(hass)
        yield hass
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def onboard(hass: Instance) -> None:
    """Create the owner account; later requests use its token."""
    client_id = hass.url + "/"
    user = hass.request(
        "POST",
        "/api/onboarding/users",
        {
            "client_id": client_id,
            "name": "Admin",
            "username": "admin",
            "password": "e2e-password",
            "language": "en",
        },
    )
    token = hass.form(
        "/auth/token",
        {
            "grant_type": "authorization_code",
            "code": user["auth_code"],
            "client_id": client_id,
        },
    )
    hass.token = token["access_token"]


def call_action(hass: Instance, service: str, **data: Any) -> dict[str, Any]:
    """Call one of our actions; return its response."""
    answer = hass.request(
        "POST", f"/api/services/backup_offload/{service}?return_response", data
    )
    return dict(answer["service_response"])


def entity_state(hass: Instance, entity_id: str) -> str:
    """Return an entity's state."""
    return str(hass.request("GET", f"/api/states/{entity_id}")["state"])


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    """Start a real Home Assistant process; stop it after (plugin use only)."""
    with started(tmp_path) as hass:
        yield hass
