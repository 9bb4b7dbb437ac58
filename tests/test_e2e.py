"""End to end: a real Home Assistant process driven through its REST API.

Home Assistant is started with `python -m homeassistant -c <tmp>` (only the
integrations this needs, HTTP on 127.0.0.1), onboarded through the REST API,
a location is added through the config-flow REST API, the actions are called
with `return_response`, entity states are read, and Home Assistant is
stopped cleanly.
"""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture
def instance(tmp_path: Path, socket_enabled: None) -> Iterator[Instance]:
    """Start Home Assistant on a temporary config directory; stop it after."""
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


def _onboard(hass: Instance) -> None:
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


def _call(hass: Instance, service: str, **data: Any) -> dict[str, Any]:
    answer = hass.request(
        "POST", f"/api/services/backup_offload/{service}?return_response", data
    )
    return dict(answer["service_response"])


def _state(hass: Instance, entity_id: str) -> str:
    return str(hass.request("GET", f"/api/states/{entity_id}")["state"])


def test_real_home_assistant(instance: Instance, tmp_path: Path) -> None:
    """Add a location and run every action through the REST API."""
    _onboard(instance)
    handlers = instance.request("GET", "/api/config/config_entries/flow_handlers")
    assert "backup_offload" in handlers

    location = tmp_path / "nas"
    location.mkdir()
    flow = instance.request(
        "POST", "/api/config/config_entries/flow", {"handler": "backup_offload"}
    )
    assert flow["step_id"] == "user"
    result = instance.request(
        "POST",
        f"/api/config/config_entries/flow/{flow['flow_id']}",
        {"name": "NAS", "path": str(location), "require_mount": False},
    )
    assert result["type"] == "create_entry"
    entry_id = result["result"]["entry_id"]

    created = _call(instance, "create", config_entry_id=entry_id, name="E2E")
    backup = created["backup"]
    assert backup["name"] == "E2E"
    assert (location / backup["file"]).is_file()
    assert (location / (backup["file"] + ".sha256")).is_file()

    listing = _call(instance, "list", config_entry_id=entry_id)
    assert [b["backup_id"] for b in listing["backups"]] == [backup["backup_id"]]

    verified = _call(
        instance, "verify", config_entry_id=entry_id, backup_id=backup["backup_id"]
    )
    assert verified["valid"] is True

    assert _state(instance, "binary_sensor.nas_connected") == "on"
    assert _state(instance, "sensor.nas_backups") == "1"
    assert _state(instance, "sensor.nas_state") == "idle"
    assert _state(instance, "sensor.nas_last_backup") != "unknown"

    _call(instance, "delete", config_entry_id=entry_id, backup_id=backup["backup_id"])
    assert list(location.iterdir()) == []
    assert _state(instance, "sensor.nas_backups") == "0"

    # A clean stop: Home Assistant exits by itself with status 0.
    instance.process.send_signal(signal.SIGTERM)
    assert instance.process.wait(timeout=60) == 0
    # Nothing of ours was logged as an error (the camera's missing
    # libturbojpeg on this machine is not ours).
    errors = [
        line
        for line in instance.log.read_text().splitlines()
        if " ERROR " in line and "backup_offload" in line
    ]
    assert errors == []
