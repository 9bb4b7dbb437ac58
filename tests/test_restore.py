"""The restore action end to end, with Home Assistant's own restore at startup.

A full restore is carried out by ``homeassistant.backup_restore.restore_backup``
(what Home Assistant runs before it starts); these tests run that very
function on the instruction file the integration wrote, on a temporary
config directory, and compare the result with the backup's content.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import hashlib
import json
import os
from pathlib import Path
import re
import sqlite3
import tarfile
import tempfile
import threading
from typing import Any

from homeassistant import backup_restore
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_mock_service,
)

from custom_components.backup_offload import restoring as restorer
from custom_components.backup_offload.const import (
    CONF_PATH,
    CONF_REQUIRE_MOUNT,
    DOMAIN,
    EVENT_BACKUP_CREATED,
    EVENT_RESTORE_FAILED,
    EVENT_RESTORE_STARTED,
    ISSUE_RESTORE_FAILED,
    ISSUE_RESTORE_FAILED_OTHER,
)
from custom_components.backup_offload.engine import jobs
from custom_components.backup_offload.engine.errors import LocationUnavailableError
from custom_components.backup_offload.engine.restore.checks import (
    MARKER_NAME,
    STAGING_DIR,
)

from .common import call, in_executor, run, wait_until
from .engine.helpers import (
    backup_json,
    build_archive,
    inner_offset,
    make_backup,
    member,
)
from .mounts import tmpfs

RESULT = backup_restore.RESTORE_BACKUP_RESULT_FILE
INSTRUCTION = backup_restore.RESTORE_BACKUP_FILE
ROWS = 50

# What a test config directory holds besides the fixture's files.
CONTENT = {
    "automations.yaml": "- alias: Lights on\n  triggers: []\n",
    "scripts.yaml": "hello:\n  sequence: []\n",
    "secrets.yaml": "api_key: 1234\n",
    "packages/lights.yaml": "light: []\n",
    ".storage/core.entity_registry": '{"data": {"entities": []}}\n',
    "www/picture.bin": "0123456789" * 100,
    "home-assistant.log": "log line\n",
}


# --- helpers ------------------------------------------------------------------


async def _call(
    hass: HomeAssistant, entry: MockConfigEntry, service: str = "restore", **data: Any
) -> dict[str, Any]:
    return await call(hass, service, entry, **data)


def tree(root: Path) -> dict[str, str]:
    """Return every entry under ``root``: rel path -> kind and content hash."""
    result: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                result[rel] = "dir"
            else:
                result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def rows(database: Path) -> int:
    """Return the number of rows in the test database."""
    with sqlite3.connect(database) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM states").fetchone()
    db.close()
    return int(count)


def add_rows(database: Path, count: int) -> None:
    """Add rows to the test database (creating it when missing)."""
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE IF NOT EXISTS states (id INTEGER PRIMARY KEY, v)")
        db.executemany("INSERT INTO states (v) VALUES (?)", [("x",)] * count)
    db.close()


def write_files(root: Path, files: dict[str, str]) -> None:
    """Write ``files`` (rel path -> text) under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def config(ha_config_dir: Path) -> Path:
    """Return a config directory with a realistic little content and database."""
    write_files(ha_config_dir, CONTENT)
    add_rows(ha_config_dir / "home-assistant_v2.db", ROWS)
    return ha_config_dir


@pytest.fixture
def restart_calls(hass: HomeAssistant) -> list[Any]:
    """Record `homeassistant.restart` instead of restarting."""
    return async_mock_service(hass, "homeassistant", "restart")


@pytest.fixture
async def loaded(
    hass: HomeAssistant, config: Path, mock_config_entry: MockConfigEntry
) -> MockConfigEntry:
    """Set up the integration on the populated config directory."""
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    return mock_config_entry


async def _add_location(
    hass: HomeAssistant, path: Path, title: str, *, require_mount: bool = False
) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=title,
        data={CONF_PATH: str(path), CONF_REQUIRE_MOUNT: require_mount},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    return entry


async def _backup(hass: HomeAssistant, entry: MockConfigEntry, **data: Any) -> dict:
    response = await _call(hass, entry, "create", **data)
    backup: dict[str, Any] = response["backup"]
    return backup


def _without_runtime_files(content: dict[str, str]) -> dict[str, str]:
    """Drop what a backup leaves out and what the restore itself leaves."""
    return {
        rel: value
        for rel, value in content.items()
        if rel not in ("home-assistant.log", RESULT)
        and not rel.startswith("home-assistant_v2.db")
        and rel.split("/")[0] not in ("backups", STAGING_DIR)
    }


# --- strings ------------------------------------------------------------------


def test_restore_errors_and_issues_translated() -> None:
    """Every restore error and issue has text, with only known placeholders."""
    package = Path(restorer.__file__).parent
    strings = json.loads((package / "strings.json").read_text())
    source = (package / "engine" / "restore" / "checks.py").read_text()
    reasons = set(re.findall(r'reason = "([a-z_]+)"', source))
    assert reasons <= set(strings["exceptions"])
    given = {
        ISSUE_RESTORE_FAILED: {"name", "location", "error", "safety_backup"},
        ISSUE_RESTORE_FAILED_OTHER: {"error"},
    }
    for key, placeholders in given.items():
        issue = strings["issues"][key]
        text = issue["title"] + issue["description"]
        assert set(re.findall(r"{(\w+)}", text)) <= placeholders, key


# --- full restore -------------------------------------------------------------


@pytest.mark.parametrize("restore_database", [True, False])
async def test_full_restore_end_to_end(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    restart_calls: list[Any],
    restore_database: bool,
) -> None:
    """Validate, safety backup, stage, instruction; Home Assistant restores it."""
    started = async_capture_events(hass, EVENT_RESTORE_STARTED)
    created = async_capture_events(hass, EVENT_BACKUP_CREATED)
    backup = await _backup(hass, loaded, name="Before the update")
    expected = _without_runtime_files(await run(hass, tree, config))

    # The configuration moves on after the backup.
    def change() -> None:
        (config / "automations.yaml").write_text("- alias: Broken\n")
        (config / "scripts.yaml").unlink()
        (config / "new.yaml").write_text("new: true\n")
        add_rows(config / "home-assistant_v2.db", 7)

    await run(hass, change)

    response = await _call(
        hass,
        loaded,
        backup_id=backup["backup_id"],
        restore_database=restore_database,
    )
    assert response["status"] == "restarting"
    assert response["backup"] == backup
    assert response["restore_database"] is restore_database
    safety = response["safety_backup"]
    assert safety["name"] == "Safety backup before restoring Before the update"
    assert len(restart_calls) == 1
    assert [e.data for e in started] == [
        {
            "config_entry_id": loaded.entry_id,
            "location": "NAS",
            "backup_id": backup["backup_id"],
            "name": "Before the update",
            "restart": True,
        }
    ]
    assert [e.data["name"] for e in created] == [backup["name"], safety["name"]]
    listing = await _call(hass, loaded, "list")
    assert {b["name"] for b in listing["backups"]} == {backup["name"], safety["name"]}
    assert hass.states.get("sensor.nas_state").state == "idle"

    def instruction() -> tuple[dict[str, Any], int, bool]:
        path = config / INSTRUCTION
        content = json.loads(path.read_text())
        return content, path.stat().st_mode, Path(content["path"]).is_file()

    content, mode, staged_exists = await run(hass, instruction)
    assert content == {
        "path": response["staged_file"],
        "password": None,
        "remove_after_restore": True,
        "restore_database": restore_database,
        "restore_homeassistant": True,
    }
    assert staged_exists
    assert Path(content["path"]).parent == config / STAGING_DIR
    assert mode & 0o077 == 0  # it may hold a password

    # What Home Assistant does at its next start.
    assert await run(hass, backup_restore.restore_backup, str(config)) is True

    after = await run(hass, tree, config)
    assert _without_runtime_files(after) == expected
    assert "new.yaml" not in after
    assert INSTRUCTION not in after
    assert not any(rel.startswith(STAGING_DIR + "/") for rel in after)
    database = config / "home-assistant_v2.db"
    assert await run(hass, rows, database) == (ROWS if restore_database else ROWS + 7)
    result = json.loads(await run(hass, (config / RESULT).read_text))
    assert result["success"] is True

    # After the restart: success is logged, nothing alarming, reported once.
    failed = async_capture_events(hass, EVENT_RESTORE_FAILED)
    await restorer.async_report_restore_result(hass)
    assert not await run(hass, (config / RESULT).exists)
    assert failed == []
    assert not ir.async_get(hass).issues


async def test_full_restore_encrypted_without_restart(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    restart_calls: list[Any],
) -> None:
    """An encrypted backup: the instruction carries the password; no restart."""
    backup = await _backup(hass, loaded, password="s3cret")
    await run(hass, (config / "automations.yaml").write_text, "[]\n")
    response = await _call(
        hass,
        loaded,
        backup_id=backup["backup_id"],
        password="s3cret",
        restart=False,
        safety_backup=False,
    )
    assert response["status"] == "pending_restart"
    assert response["safety_backup"] is None
    assert restart_calls == []
    content = json.loads(await run(hass, (config / INSTRUCTION).read_text))
    assert content["password"] == "s3cret"
    assert await run(hass, backup_restore.restore_backup, str(config)) is True
    assert (
        await run(hass, (config / "automations.yaml").read_text)
        == (CONTENT["automations.yaml"])
    )


async def test_unencrypted_backup_gets_no_password(
    hass: HomeAssistant, loaded: MockConfigEntry, config: Path, restart_calls: list
) -> None:
    """A location password set after an unencrypted backup is not passed on."""
    backup = await _backup(hass, loaded)
    hass.config_entries.async_update_entry(loaded, options={"password": "later"})
    await _call(hass, loaded, backup_id=backup["backup_id"], safety_backup=False)
    content = json.loads(await run(hass, (config / INSTRUCTION).read_text))
    assert content["password"] is None
    assert await run(hass, backup_restore.restore_backup, str(config)) is True


async def test_restart_refused(
    hass: HomeAssistant, loaded: MockConfigEntry, config: Path
) -> None:
    """A restart that fails leaves the restore staged for the next start."""
    async_mock_service(
        hass,
        "homeassistant",
        "restart",
        raise_exception=HomeAssistantError("configuration invalid"),
    )
    backup = await _backup(hass, loaded)
    response = await _call(
        hass, loaded, backup_id=backup["backup_id"], safety_backup=False
    )
    assert response["status"] == "pending_restart"
    assert response["restart_error"] == "configuration invalid"
    assert await run(hass, (config / INSTRUCTION).is_file)


# --- refusals: nothing changes ------------------------------------------------


def _unsafe(location: Path) -> str:
    build_archive(
        location / "unsafe.tar",
        [
            member("data", kind=tarfile.DIRTYPE),
            member("data/ok.yaml", b"ok: true\n"),
            member("data/escape", kind=tarfile.SYMTYPE, linkname="../../etc"),
        ],
        metadata=backup_json(slug="badc0de1"),
    )
    return "badc0de1"


def _too_new(location: Path) -> str:
    build_archive(
        location / "new.tar",
        [member("data", kind=tarfile.DIRTYPE), member("data/a.yaml", b"a: 1\n")],
        metadata=backup_json(
            slug="2e2e2e2e",
            homeassistant={"version": "2999.1.0", "exclude_database": False},
        ),
    )
    return "2e2e2e2e"


def _damage(location: Path, backup: dict[str, Any], sidecar: bool) -> None:
    """Flip a byte in the middle of the Home Assistant archive's data."""
    path = location / backup["file"]
    offset, size = inner_offset(path)
    data = bytearray(path.read_bytes())
    data[offset + size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    if not sidecar:
        Path(str(path) + ".sha256").unlink()


def _move_away(location: Path) -> None:
    location.rename(location.with_name("gone"))


REFUSALS: dict[str, tuple[str, type[Exception]]] = {
    "wrong_password": ("wrong_password", ServiceValidationError),
    "missing_password": ("wrong_password", ServiceValidationError),
    "corrupt_with_checksum": ("corrupt_backup", HomeAssistantError),
    "corrupt_without_checksum": ("corrupt_backup", HomeAssistantError),
    "too_new": ("backup_too_new", ServiceValidationError),
    "unsafe_members": ("unsafe_archive", HomeAssistantError),
    "location_down": ("location_not_found", HomeAssistantError),
    "no_such_backup": ("backup_not_found", ServiceValidationError),
}


async def _refusal_case(
    hass: HomeAssistant, entry: MockConfigEntry, location: Path, case: str
) -> tuple[str, dict[str, Any]]:
    """Prepare a backup that ``case`` refuses; return its id and extra data."""
    if case in ("wrong_password", "missing_password"):
        backup_id = (await _backup(hass, entry, password="right"))["backup_id"]
        return backup_id, {"password": "wrong"} if case == "wrong_password" else {}
    if case.startswith("corrupt"):
        backup = await _backup(hass, entry)
        await run(hass, _damage, location, backup, case == "corrupt_with_checksum")
        return backup["backup_id"], {}
    if case == "too_new":
        return await run(hass, _too_new, location), {}
    if case == "unsafe_members":
        return await run(hass, _unsafe, location), {}
    if case == "location_down":
        backup_id = (await _backup(hass, entry))["backup_id"]
        await run(hass, _move_away, location)
        return backup_id, {}
    return "0a0a0a0a", {}


@pytest.mark.parametrize("case", list(REFUSALS))
@pytest.mark.parametrize("mode", ["full", "partial", "dry_run"])
async def test_refusals_change_nothing(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    location_dir: Path,
    restart_calls: list[Any],
    case: str,
    mode: str,
) -> None:
    """Every refusal leaves the config byte for byte, and no instruction."""
    backup_id, data = await _refusal_case(hass, loaded, location_dir, case)
    if mode == "partial":
        data["paths"] = ["a.yaml" if case == "too_new" else "automations.yaml"]
    if mode == "dry_run":
        data["dry_run"] = True
    key, error_type = REFUSALS[case]
    failed = async_capture_events(hass, EVENT_RESTORE_FAILED)
    before = await run(hass, tree, config)

    if case == "too_new" and mode == "partial":
        # Restoring a plain file does not depend on the version.
        response = await _call(hass, loaded, backup_id=backup_id, **data)
        assert response["restored"] == ["a.yaml"]
        return
    with pytest.raises(error_type) as err:
        await _call(hass, loaded, backup_id=backup_id, **data)
    assert err.value.translation_key == key
    assert str(err.value)  # translated, with its placeholders
    assert await run(hass, tree, config) == before
    assert INSTRUCTION not in before
    assert restart_calls == []
    # A dry run is no restore: it does not report a failed one.
    assert len(failed) == (0 if mode == "dry_run" else 1)
    assert all(e.data["backup_id"] == backup_id for e in failed)
    assert hass.states.get("sensor.nas_state").state == "idle"
    assert not hass.data.get(DOMAIN, {}).get("restoring")


async def test_no_local_space(
    hass: HomeAssistant, tmp_path: Path, location_dir: Path, restart_calls: list[Any]
) -> None:
    """A backup that does not fit on this machine is refused before copying."""
    config = tmp_path / "small-config"
    big = tmp_path / "big"

    def big_backup() -> str:
        big.mkdir()
        (big / "configuration.yaml").write_text("homeassistant:\n")
        (big / "video.bin").write_bytes(os.urandom(3 << 20))
        info, _ = make_backup(big, location_dir, name="Big", compress=False)
        return info.backup_id

    backup_id = await run(hass, big_backup)
    async with in_executor(hass, tmpfs(config, size="2m")):
        await run(hass, write_files, config, {"configuration.yaml": "x:\n"})
        hass.config.config_dir = str(config)
        entry = await _add_location(hass, location_dir, "NAS")
        before = await run(hass, tree, config)
        for data in ({}, {"safety_backup": False, "restart": False}):
            with pytest.raises(HomeAssistantError) as err:
                await _call(hass, entry, backup_id=backup_id, **data)
            assert err.value.translation_key == "restore_no_space"
            assert await run(hass, tree, config) == before
        await hass.config_entries.async_unload(entry.entry_id)
    assert restart_calls == []


async def test_startup_space_refused_with_the_numbers(
    hass: HomeAssistant,
    tmp_path: Path,
    location_dir: Path,
    restart_calls: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The configuration and the temporary directory on one small disk.

    Home Assistant's restore would unpack 26 MiB twice and copy it in once
    more: on 100 MiB, refused before anything changes, with the numbers. The
    temporary directory is this process's, as Home Assistant's restore at
    startup uses it (the worker process has another one).
    """

    def big_backup() -> str:
        source = tmp_path / "source"
        write_files(source, {"configuration.yaml": "new: true\n"})
        (source / "video.bin").write_bytes(os.urandom(26 << 20))
        return make_backup(source, location_dir)[0].backup_id

    backup_id = await run(hass, big_backup)
    async with in_executor(hass, tmpfs(tmp_path / "disk", size="100m")) as disk:
        config, temp = disk / "config", disk / "tmp"
        await run(hass, write_files, config, {"configuration.yaml": "old: true\n"})
        await run(hass, temp.mkdir)
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        hass.config.config_dir = str(config)
        entry = await _add_location(hass, location_dir, "NAS")
        before = await run(hass, tree, config)

        preview = await _call(hass, entry, backup_id=backup_id, dry_run=True)
        assert preview["bytes"] > 26 << 20
        (space,) = preview["space"]
        assert space["path"] == str(config)
        assert space["fits"] is False
        assert space["needed"] > 4 * (26 << 20) > space["free"]
        assert space["files_needed"] > 3
        assert space["files_free"] > 0

        with pytest.raises(HomeAssistantError) as err:
            await _call(
                hass, entry, backup_id=backup_id, safety_backup=False, restart=False
            )
        assert err.value.translation_key == "restore_startup_no_space"
        placeholders = err.value.translation_placeholders
        assert placeholders["path"] == str(config)
        assert placeholders["needed"].endswith("MiB")
        assert placeholders["free"].endswith("MiB")
        assert f"needs {placeholders['needed']}" in str(err.value)
        assert await run(hass, tree, config) == before
        await hass.config_entries.async_unload(entry.entry_id)
    assert restart_calls == []


async def test_partial_restore_that_does_not_fit(
    hass: HomeAssistant, tmp_path: Path, location_dir: Path
) -> None:
    """Files that expand beyond the free space are refused, nothing restored."""

    def plant() -> None:
        zeros = bytes(1 << 20)
        members = [member("data", kind=tarfile.DIRTYPE)]
        members += [member(f"data/big/{i}.bin", zeros) for i in range(100)]
        build_archive(location_dir / "zeros.tar", members)

    await run(hass, plant)
    async with in_executor(hass, tmpfs(tmp_path / "config", size="64m")) as config:
        await run(hass, write_files, config, {"configuration.yaml": "old: true\n"})
        hass.config.config_dir = str(config)
        entry = await _add_location(hass, location_dir, "NAS")
        before = await run(hass, tree, config)
        preview = await _call(
            hass, entry, backup_id="abcd1234", paths=["big"], dry_run=True
        )
        assert preview["bytes"] == 100 << 20
        assert preview["added"]["count"] == 100
        assert preview["space"][0]["fits"] is False
        with pytest.raises(HomeAssistantError) as err:
            await _call(
                hass, entry, backup_id="abcd1234", paths=["big"], safety_backup=False
            )
        assert err.value.translation_key == "restore_files_no_space"
        assert err.value.translation_placeholders["path"] == str(config)
        assert await run(hass, tree, config) == before
        await hass.config_entries.async_unload(entry.entry_id)


async def test_safety_backup_failure_aborts(
    hass: HomeAssistant, config: Path, tmp_path: Path, restart_calls: list[Any]
) -> None:
    """A location too full for the safety backup: the restore is cancelled."""
    nas = tmp_path / "nas"
    async with in_executor(hass, tmpfs(nas, size="8m")):
        info, _ = await run(hass, make_backup, config, nas)
        backup_id = info.backup_id
        entry = await _add_location(hass, nas, "NAS", require_mount=True)
        before = await run(hass, tree, config)
        for paths in ({}, {"paths": ["automations.yaml"]}):
            with pytest.raises(HomeAssistantError) as err:
                await _call(hass, entry, backup_id=backup_id, **paths)
            assert err.value.translation_key == "safety_backup_failed"
            assert "NAS" in str(err.value)
            assert await run(hass, tree, config) == before
        state = hass.states.get("sensor.nas_last_failure")
        assert state.attributes["operation"] == "restoring"
        await hass.config_entries.async_unload(entry.entry_id)
    assert restart_calls == []


async def test_location_lost_during_safety_backup(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The share goes away after staging: cancelled, and shown as down."""
    backup = await _backup(hass, loaded)
    before = await run(hass, tree, config)

    def gone(*args: Any, **kwargs: Any) -> None:
        raise LocationUnavailableError("share gone", "unreachable")

    monkeypatch.setattr(jobs, "create", gone)
    with pytest.raises(HomeAssistantError) as err:
        await _call(hass, loaded, backup_id=backup["backup_id"])
    assert err.value.translation_key == "safety_backup_failed"
    assert await run(hass, tree, config) == before
    assert hass.states.get("binary_sensor.nas_connected").state == "off"


async def test_unknown_instruction_format(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Home Assistant that reads other fields: refused, nothing written."""

    @dataclasses.dataclass
    class Future:
        backup_file_path: Path
        key: bytes

    monkeypatch.setattr(backup_restore, "RestoreBackupFileContent", Future)
    backup = await _backup(hass, loaded)
    before = await run(hass, tree, config)
    for data in ({}, {"dry_run": True}):
        with pytest.raises(HomeAssistantError) as err:
            await _call(hass, loaded, backup_id=backup["backup_id"], **data)
        assert err.value.translation_key == "restore_unsupported"
    assert await run(hass, tree, config) == before


def _hold(gate: threading.Event, original: Callable[..., Any]) -> Callable[..., Any]:
    """Return a job that passes its probe, then waits for ``gate``."""

    def held(*args: Any, **kwargs: Any) -> Any:
        *job_args, checked = args  # the runner passes it last
        checked()
        gate.wait(10)
        return original(*job_args, lambda: None, **kwargs)

    return held


async def test_restore_is_exclusive(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    tmp_path: Path,
    restart_calls: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a restore runs, every location refuses everything: busy."""
    other_dir = tmp_path / "other"
    await run(hass, other_dir.mkdir)
    other = await _add_location(hass, other_dir, "USB")
    backup = await _backup(hass, loaded)
    other_backup = await _backup(hass, other)

    gate = threading.Event()
    monkeypatch.setattr(jobs, "restore_stage", _hold(gate, jobs.restore_stage))
    first = hass.async_create_task(
        _call(hass, loaded, backup_id=backup["backup_id"], safety_backup=False)
    )
    await wait_until(lambda: hass.states.get("sensor.nas_state").state == "restoring")
    before = await run(hass, tree, config)
    for entry, service, data in (
        (other, "restore", {"backup_id": other_backup["backup_id"]}),
        (other, "restore", {"backup_id": other_backup["backup_id"], "dry_run": True}),
        (other, "create", {}),
        (loaded, "restore", {"backup_id": backup["backup_id"]}),
        (loaded, "create", {}),
    ):
        with pytest.raises(HomeAssistantError) as err:
            await _call(hass, entry, service, **data)
        assert err.value.translation_key == "busy"
        assert err.value.translation_placeholders == {
            "location": "NAS",
            "state": "restoring",
        }
    assert await run(hass, tree, config) == before
    gate.set()
    assert (await first)["status"] == "restarting"
    # Done: the other location works again.
    assert (await _call(hass, other, "list"))["backups"]


async def test_restore_refused_while_another_location_is_busy(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restore does not start while another location makes a backup."""
    other_dir = tmp_path / "other"
    await run(hass, other_dir.mkdir)
    other = await _add_location(hass, other_dir, "USB")
    backup = await _backup(hass, loaded)

    gate = threading.Event()
    monkeypatch.setattr(jobs, "create", _hold(gate, jobs.create))
    creating = hass.async_create_task(_call(hass, other, "create"))
    await wait_until(lambda: hass.states.get("sensor.usb_state").state == "creating")
    with pytest.raises(HomeAssistantError) as err:
        await _call(hass, loaded, backup_id=backup["backup_id"])
    assert err.value.translation_key == "busy"
    assert err.value.translation_placeholders == {
        "location": "USB",
        "state": "creating",
    }
    gate.set()
    await creating
    assert not await run(hass, (config / INSTRUCTION).exists)


# --- partial restore ----------------------------------------------------------


async def test_partial_restore_of_automations(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    restart_calls: list[Any],
) -> None:
    """One file comes back, live; nothing else changes; no restart."""
    started = async_capture_events(hass, EVENT_RESTORE_STARTED)
    backup = await _backup(hass, loaded, name="Good")

    def change() -> None:
        (config / "automations.yaml").write_text("- alias: Broken\n")
        (config / "scripts.yaml").write_text("changed: true\n")

    await run(hass, change)
    before = await run(hass, tree, config)
    response = await _call(
        hass, loaded, backup_id=backup["backup_id"], paths=["automations.yaml"]
    )
    assert response["restored"] == ["automations.yaml"]
    assert response["backup"]["backup_id"] == backup["backup_id"]
    assert response["safety_backup"]["name"] == "Safety backup before restoring Good"
    after = await run(hass, tree, config)
    assert (
        await run(hass, (config / "automations.yaml").read_text)
        == (CONTENT["automations.yaml"])
    )
    changed = {rel for rel in {*before, *after} if before.get(rel) != after.get(rel)}
    assert changed == {"automations.yaml"}
    assert restart_calls == []
    assert [e.data["paths"] for e in started] == [["automations.yaml"]]
    assert hass.states.get("sensor.nas_state").state == "idle"


async def test_partial_restore_of_a_directory_and_globs(
    hass: HomeAssistant, loaded: MockConfigEntry, config: Path
) -> None:
    """A directory brings its files back; globs match like exclude patterns."""
    backup = await _backup(hass, loaded)

    def change() -> None:
        (config / "packages" / "lights.yaml").unlink()
        (config / "packages").rmdir()
        (config / "secrets.yaml").write_text("changed\n")

    await run(hass, change)
    response = await _call(
        hass,
        loaded,
        backup_id=backup["backup_id"],
        paths=["packages", "secret*.yaml"],
        safety_backup=False,
    )
    assert sorted(response["restored"]) == ["packages/lights.yaml", "secrets.yaml"]
    assert response["safety_backup"] is None
    assert (
        await run(hass, (config / "packages/lights.yaml").read_text)
        == (CONTENT["packages/lights.yaml"])
    )


@pytest.mark.parametrize(
    ("paths", "key"),
    [
        ([".storage/core.config"], "restore_path_forbidden"),
        ([".storage/**"], "restore_path_forbidden"),
        (["home-assistant_v2.db"], "restore_path_forbidden"),
        (["*"], "restore_path_not_allowed"),
        (["**"], "restore_path_not_allowed"),
        (["../configuration.yaml"], "invalid_restore_path"),
        (["/etc/passwd"], "invalid_restore_path"),
        ([], "restore_paths_empty"),
        (["nothing.yaml"], "restore_nothing_matched"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
async def test_partial_restore_refused_paths(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    paths: list[str],
    key: str,
    dry_run: bool,
) -> None:
    """.storage, the database, outside paths and no match: clear errors."""
    backup = await _backup(hass, loaded)
    before = await run(hass, tree, config)
    with pytest.raises(ServiceValidationError) as err:
        await _call(
            hass, loaded, backup_id=backup["backup_id"], paths=paths, dry_run=dry_run
        )
    assert err.value.translation_key == key
    assert str(err.value)
    assert await run(hass, tree, config) == before
    assert hass.states.get("sensor.nas_last_failure").state == "unknown"


async def test_partial_restore_through_symlink_out_of_config(
    hass: HomeAssistant, loaded: MockConfigEntry, config: Path, tmp_path: Path
) -> None:
    """A directory of the config that leads elsewhere is not written through."""
    backup = await _backup(hass, loaded)
    outside = tmp_path / "outside"

    def redirect() -> None:
        outside.mkdir()
        (config / "packages" / "lights.yaml").unlink()
        (config / "packages").rmdir()
        (config / "packages").symlink_to(outside)

    await run(hass, redirect)
    before = await run(hass, tree, config)
    for dry_run in (False, True):
        with pytest.raises(ServiceValidationError) as err:
            await _call(
                hass,
                loaded,
                backup_id=backup["backup_id"],
                paths=["packages/*"],
                dry_run=dry_run,
            )
        assert err.value.translation_key == "restore_path_not_allowed"
    assert await run(hass, tree, config) == before
    assert await run(hass, lambda: list(outside.iterdir())) == []


# --- dry run ------------------------------------------------------------------


async def test_dry_run_full(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    location_dir: Path,
    restart_calls: list[Any],
) -> None:
    """A dry run reports added, changed and removed paths and changes nothing."""
    backup = await _backup(hass, loaded)

    def change() -> None:
        (config / "automations.yaml").write_text("- alias: Broken\n")
        (config / "scripts.yaml").unlink()
        (config / "new.yaml").write_text("new: true\n")
        (config / "backups").mkdir()
        (config / "backups" / "kept.tar").write_text("kept")

    await run(hass, change)
    before = await run(hass, tree, config)
    location_before = await run(hass, tree, location_dir)
    response = await _call(hass, loaded, backup_id=backup["backup_id"], dry_run=True)
    assert response["dry_run"] is True
    assert response["mode"] == "full"
    assert response["added"] == {"count": 1, "paths": ["scripts.yaml"]}
    # The database is a snapshot: it may differ from the live file.
    assert set(response["changed"]["paths"]) - {"home-assistant_v2.db"} == {
        "automations.yaml"
    }
    # The log is not in the backup: Home Assistant's restore removes it.
    assert response["removed"] == {
        "count": 2,
        "paths": ["home-assistant.log", "new.yaml"],
    }
    assert response["unchanged"] > 3
    assert await run(hass, tree, config) == before
    assert await run(hass, tree, location_dir) == location_before
    assert restart_calls == []
    assert hass.states.get("sensor.nas_state").state == "idle"

    kept_db = await _call(
        hass,
        loaded,
        backup_id=backup["backup_id"],
        dry_run=True,
        restore_database=False,
    )
    assert kept_db["changed"]["paths"] == ["automations.yaml"]


async def test_dry_run_partial(
    hass: HomeAssistant, loaded: MockConfigEntry, config: Path
) -> None:
    """A partial dry run lists only the chosen files and removes nothing."""
    backup = await _backup(hass, loaded)
    await run(hass, (config / "automations.yaml").write_text, "[]\n")
    before = await run(hass, tree, config)
    response = await _call(
        hass,
        loaded,
        backup_id=backup["backup_id"],
        paths=["*.yaml"],
        dry_run=True,
    )
    assert response["mode"] == "partial"
    assert response["changed"] == {"count": 1, "paths": ["automations.yaml"]}
    assert response["added"]["count"] == 0
    assert response["removed"] == {"count": 0, "paths": []}
    assert await run(hass, tree, config) == before


# --- after the restart --------------------------------------------------------


async def test_failed_restore_is_reported_once(
    hass: HomeAssistant,
    loaded: MockConfigEntry,
    config: Path,
    restart_calls: list[Any],
) -> None:
    """Home Assistant's restore fails: event, last_failure, repair issue."""
    backup = await _backup(hass, loaded, name="Yesterday")
    response = await _call(hass, loaded, backup_id=backup["backup_id"], restart=False)
    before = await run(hass, tree, config)

    def restore_at_start_fails() -> None:
        # The staged copy is lost (a failing SD card, say).
        Path(response["staged_file"]).unlink()
        with pytest.raises(ValueError, match="does not exist"):
            backup_restore.restore_backup(str(config))

    await run(hass, restore_at_start_fails)
    failed = async_capture_events(hass, EVENT_RESTORE_FAILED)
    await restorer.async_report_restore_result(hass)
    await hass.async_block_till_done()
    assert len(failed) == 1
    assert failed[0].data == {
        "config_entry_id": loaded.entry_id,
        "location": "NAS",
        "backup_id": backup["backup_id"],
        "name": "Yesterday",
        "error": failed[0].data["error"],
    }
    assert "does not exist" in failed[0].data["error"]
    issue = ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_RESTORE_FAILED)
    assert issue is not None
    assert issue.translation_placeholders["name"] == "Yesterday"
    assert (
        issue.translation_placeholders["safety_backup"]
        == (response["safety_backup"]["name"])
    )
    state = hass.states.get("sensor.nas_last_failure")
    assert state.state != "unknown"
    assert state.attributes["operation"] == "restoring"
    assert "does not exist" in state.attributes["error"]
    # The marker and the result are consumed, the staged copy was lost:
    # the configuration is what it was before the restart.
    staged = Path(response["staged_file"]).relative_to(config).as_posix()
    gone = {INSTRUCTION, f"{STAGING_DIR}/{MARKER_NAME}", staged}
    assert await run(hass, tree, config) == {
        rel: value for rel, value in before.items() if rel not in gone
    }
    await restorer.async_report_restore_result(hass)
    await hass.async_block_till_done()
    assert len(failed) == 1

    # A new restore clears the issue.
    await _call(hass, loaded, backup_id=backup["backup_id"], safety_backup=False)
    assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_RESTORE_FAILED) is None


def _fake_start(
    config: Path, result: dict[str, Any] | None, marker: dict[str, Any] | None
) -> None:
    """Leave what Home Assistant's restore at startup leaves behind."""
    if result is not None:
        (config / RESULT).write_text(json.dumps(result))
    if marker is not None:
        (config / STAGING_DIR).mkdir(exist_ok=True)
        (config / STAGING_DIR / MARKER_NAME).write_text(json.dumps(marker))
        (config / STAGING_DIR / "backup_offload_abcd.tar").write_text("staged")


FAILED = {"success": False, "error": "Disk full", "error_type": "OSError"}


async def test_failure_reported_before_the_location_loads(
    hass: HomeAssistant, config: Path, mock_config_entry: MockConfigEntry
) -> None:
    """Reported at setup, the failure reaches the location once it loads."""
    marker = {
        "config_entry_id": mock_config_entry.entry_id,
        "location": "NAS",
        "backup_id": "abcd",
        "name": "Nightly",
        "safety_backup": None,
    }
    await run(hass, _fake_start, config, FAILED, marker)
    failed = async_capture_events(hass, EVENT_RESTORE_FAILED)
    await restorer.async_report_restore_result(hass)
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    assert [e.data["error"] for e in failed] == ["Disk full"]
    state = hass.states.get("sensor.nas_last_failure")
    assert state.attributes["error"] == "Disk full"
    # The staged copy and the marker are cleaned up.
    assert await run(hass, lambda: list((config / STAGING_DIR).iterdir())) == []


async def test_marker_without_result_is_a_failure(
    hass: HomeAssistant, config: Path
) -> None:
    """Our restore did not complete and nobody said why: still reported."""
    await run(hass, _fake_start, config, None, {"unreadable": True})
    failed = async_capture_events(hass, EVENT_RESTORE_FAILED)
    await restorer.async_report_restore_result(hass)
    await hass.async_block_till_done()
    assert len(failed) == 1
    assert "did not complete" in failed[0].data["error"]
    assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_RESTORE_FAILED)


async def test_failure_of_another_restore(hass: HomeAssistant, config: Path) -> None:
    """A restore that was not ours (or wiped our record) raises a repair issue."""
    await run(hass, _fake_start, config, FAILED, None)
    failed = async_capture_events(hass, EVENT_RESTORE_FAILED)
    await restorer.async_report_restore_result(hass)
    assert failed == []
    issue = ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_RESTORE_FAILED_OTHER)
    assert issue is not None
    assert issue.translation_placeholders == {"error": "Disk full"}
    assert not await run(hass, (config / RESULT).exists)


async def test_nothing_to_report(hass: HomeAssistant, config: Path) -> None:
    """A normal start: nothing happens."""
    before = await run(hass, tree, config)
    await restorer.async_report_restore_result(hass)
    assert not ir.async_get(hass).issues
    assert await run(hass, tree, config) == before


async def test_report_survives_errors(
    hass: HomeAssistant, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking the result never fails the integration's setup."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("denied")

    monkeypatch.setattr(restorer.restore_outcome, "collect_outcome", broken)
    await restorer.async_report_restore_result(hass)
    assert not ir.async_get(hass).issues


async def test_pending_restore_is_left_alone(hass: HomeAssistant, config: Path) -> None:
    """An instruction still waiting: its staged copy and marker stay."""
    staged = config / STAGING_DIR / "backup_offload_abcd.tar"

    def pending() -> None:
        _fake_start(config, None, {"name": "x"})
        (config / STAGING_DIR / ".backup_offload-abcd-1.tar.tmp").write_text("tmp")
        (config / INSTRUCTION).write_text(json.dumps({"path": str(staged)}))

    await run(hass, pending)
    await restorer.async_report_restore_result(hass)
    names = await run(hass, lambda: sorted(p.name for p in staged.parent.iterdir()))
    assert names == [MARKER_NAME, staged.name]
    assert not ir.async_get(hass).issues


# The backup component saves its store with a delay.
@pytest.mark.parametrize("expected_lingering_timers", [True])
async def test_result_read_by_home_assistants_backup_integration(
    hass: HomeAssistant, config: Path
) -> None:
    """Home Assistant's backup integration reads the result first: still reported."""
    try:
        from homeassistant.helpers.backup import (  # type: ignore[attr-defined,unused-ignore]
            async_initialize_backup,
        )
    except ImportError:  # Home Assistant 2026: the component does it
        pass
    else:
        async_initialize_backup(hass)
    marker = {"name": "Nightly", "location": "NAS"}
    await run(hass, _fake_start, config, FAILED, marker)
    assert await async_setup_component(hass, "backup", {})
    await hass.async_block_till_done()
    assert not await run(hass, (config / RESULT).exists)  # consumed by it

    failed = async_capture_events(hass, EVENT_RESTORE_FAILED)
    await restorer.async_report_restore_result(hass)
    await hass.async_block_till_done()
    assert [(e.data["name"], e.data["error"]) for e in failed] == [
        ("Nightly", "Disk full")
    ]
    await hass.async_block_till_done(wait_background_tasks=True)
