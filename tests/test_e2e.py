"""End to end: a real Home Assistant process driven through its REST API.

Home Assistant is started (tests/live_hass.py), onboarded through the REST API,
a location is added through the config-flow REST API, the actions are called
with `return_response`, entity states are read, and Home Assistant is
stopped cleanly.
"""

from __future__ import annotations

from pathlib import Path
import signal

from .live_hass import Instance, call_action, entity_state, onboard


def test_real_home_assistant(instance: Instance, tmp_path: Path) -> None:
    """Add a location and run every action through the REST API."""
    onboard(instance)
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

    created = call_action(instance, "create", config_entry_id=entry_id, name="E2E")
    backup = created["backup"]
    assert backup["name"] == "E2E"
    assert (location / backup["file"]).is_file()
    assert (location / (backup["file"] + ".sha256")).is_file()

    listing = call_action(instance, "list", config_entry_id=entry_id)
    assert [b["backup_id"] for b in listing["backups"]] == [backup["backup_id"]]

    verified = call_action(
        instance, "verify", config_entry_id=entry_id, backup_id=backup["backup_id"]
    )
    assert verified["valid"] is True

    assert entity_state(instance, "binary_sensor.nas_connected") == "on"
    assert entity_state(instance, "sensor.nas_backups") == "1"
    assert entity_state(instance, "sensor.nas_state") == "idle"
    assert entity_state(instance, "sensor.nas_last_backup") != "unknown"

    call_action(
        instance, "delete", config_entry_id=entry_id, backup_id=backup["backup_id"]
    )
    assert list(location.iterdir()) == []
    assert entity_state(instance, "sensor.nas_backups") == "0"

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
