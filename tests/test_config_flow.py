"""The config flow: add, reconfigure and tune a location."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import errno
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import traceback
from unittest.mock import patch

from homeassistant.config_entries import SOURCE_USER, ConfigFlowResult
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.backup_offload import config_flow
from custom_components.backup_offload.const import (
    CONF_COMPRESS,
    CONF_EXCLUDE,
    CONF_INCLUDE_DATABASE,
    CONF_KEEP_COUNT,
    CONF_KEEP_DAILY,
    CONF_KEEP_DAYS,
    CONF_KEEP_MONTHLY,
    CONF_KEEP_WEEKLY,
    CONF_KEEP_YEARLY,
    CONF_OVERDUE_HOURS,
    CONF_PASSWORD,
    CONF_PATH,
    CONF_REQUIRE_MOUNT,
    DOMAIN,
)

from .common import in_executor, run
from .mounts import fuse_passthrough, loop_ext4, read_only, tmpfs


@pytest.fixture(autouse=True)
def _config_dir(ha_config_dir: Path) -> None:
    """Every flow test runs with its own config directory."""


async def _start(hass: HomeAssistant) -> str:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}
    return str(result["flow_id"])


async def test_user_flow_on_a_mount(hass: HomeAssistant, tmp_path: Path) -> None:
    """A mounted disk is accepted with the mount requirement on."""
    image = tmp_path / "disk.img"
    async with in_executor(hass, loop_ext4(tmp_path / "nas", image)) as nas:
        flow_id = await _start(hass)
        result = await hass.config_entries.flow.async_configure(
            flow_id, {"name": "NAS", CONF_PATH: str(nas), CONF_REQUIRE_MOUNT: True}
        )
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert result["title"] == "NAS"
        assert result["data"] == {CONF_PATH: str(nas), CONF_REQUIRE_MOUNT: True}
        assert result["result"].unique_id == str(nas)
        await hass.config_entries.async_unload(result["result"].entry_id)


async def _confirm_in_ram(
    hass: HomeAssistant, result: ConfigFlowResult, path: Path
) -> ConfigFlowResult:
    """Check the warning about a location in memory, and accept it."""
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "in_ram"
    assert result["description_placeholders"] == {
        "path": str(path),
        "file_system": "tmpfs",
    }
    return await hass.config_entries.flow.async_configure(result["flow_id"], {})


async def test_user_flow_warns_about_a_ram_disk(
    hass: HomeAssistant, tmp_path: Path
) -> None:
    """A tmpfs is accepted, after a warning that its backups vanish at boot."""
    async with in_executor(hass, tmpfs(tmp_path / "nas")) as nas:
        flow_id = await _start(hass)
        result = await hass.config_entries.flow.async_configure(
            flow_id, {"name": "NAS", CONF_PATH: str(nas), CONF_REQUIRE_MOUNT: True}
        )
        assert hass.config_entries.async_entries(DOMAIN) == []
        result = await _confirm_in_ram(hass, result, nas)
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert result["title"] == "NAS"
        assert result["data"] == {CONF_PATH: str(nas), CONF_REQUIRE_MOUNT: True}
        assert result["result"].unique_id == str(nas)
        await hass.config_entries.async_unload(result["result"].entry_id)


@pytest.fixture
def in_dev_shm() -> Iterator[Path]:
    """Return a new directory in /dev/shm; remove it after the test."""
    path = Path(tempfile.mkdtemp(prefix="backup_offload_test.", dir="/dev/shm"))
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize("path", ["/dev", "/dev/shm", "/run", "/var/run", "below"])
@pytest.mark.parametrize("require_mount", [True, False])
async def test_user_flow_refuses_system_folders_in_memory(
    hass: HomeAssistant,
    location_dir: Path,
    in_dev_shm: Path,
    path: str,
    require_mount: bool,
) -> None:
    """/dev, /dev/shm and /run (and below) are refused: RAM of the system."""
    if path == "below":
        path = str(in_dev_shm)
    flow_id = await _start(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {"name": "NAS", CONF_PATH: path, CONF_REQUIRE_MOUNT: require_mount}
    )
    assert result["errors"] == {CONF_PATH: "system_folder"}
    assert await run(hass, os.listdir, in_dev_shm) == []
    result = await hass.config_entries.flow.async_configure(
        flow_id,
        {"name": "NAS", CONF_PATH: str(location_dir), CONF_REQUIRE_MOUNT: False},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


def _long_directory(base: Path, length: int) -> Path:
    """Create a real directory whose path is ``length`` bytes long."""
    path = base / "long"
    while len(os.fsencode(path)) + 201 <= length:
        path /= "d" * 200
    path /= "d" * (length - len(os.fsencode(path)) - 1)
    path.mkdir(parents=True)
    return path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda tmp: tmp / ("x" * 256), id="name-too-long"),
        pytest.param(lambda tmp: tmp / (("d" * 200 + "/") * 21), id="beyond-path-max"),
        pytest.param(lambda tmp: _long_directory(tmp, 3900), id="no-room-for-names"),
    ],
)
async def test_user_flow_path_too_long(
    hass: HomeAssistant, tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    """A path too long, or without room for file names, has its own error."""
    path = await run(hass, make, tmp_path)
    flow_id = await _start(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {"name": "NAS", CONF_PATH: str(path), CONF_REQUIRE_MOUNT: False}
    )
    assert result["errors"] == {CONF_PATH: "path_too_long"}


async def test_user_flow_resolves_symlinks(
    hass: HomeAssistant, location_dir: Path, tmp_path: Path
) -> None:
    """The unique id and stored path are the real path; the title defaults to it."""
    link = tmp_path / "link"
    await run(hass, link.symlink_to, location_dir)
    flow_id = await _start(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {"name": " ", CONF_PATH: str(link), CONF_REQUIRE_MOUNT: False}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == str(location_dir)
    assert result["data"][CONF_PATH] == str(location_dir)


@pytest.mark.parametrize(
    ("path", "require_mount", "error"),
    [
        ("relative/path", False, "not_absolute"),
        ("{tmp}/missing", False, "not_found"),
        ("{tmp}/file", False, "not_a_directory"),
        ("{tmp}/location", True, "not_a_mount"),
        ("{config}/backups", False, "inside_config"),
        ("{tmp}", False, "inside_config"),
    ],
)
async def test_user_flow_errors_recover(
    hass: HomeAssistant,
    tmp_path: Path,
    ha_config_dir: Path,
    location_dir: Path,
    path: str,
    require_mount: bool,
    error: str,
) -> None:
    """Each bad path shows its error; a good path afterwards succeeds."""
    await run(hass, (tmp_path / "file").write_text, "x")
    await run(hass, (ha_config_dir / "backups").mkdir)
    flow_id = await _start(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id,
        {
            "name": "NAS",
            CONF_PATH: path.format(tmp=tmp_path, config=ha_config_dir),
            CONF_REQUIRE_MOUNT: require_mount,
        },
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_PATH: error}

    result = await hass.config_entries.flow.async_configure(
        flow_id,
        {"name": "NAS", CONF_PATH: str(location_dir), CONF_REQUIRE_MOUNT: False},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_flow_read_only(hass: HomeAssistant, tmp_path: Path) -> None:
    """A read-only mount is refused as not writable."""
    async with (
        in_executor(hass, tmpfs(tmp_path / "nas")) as nas,
        in_executor(hass, read_only(nas)),
    ):
        flow_id = await _start(hass)
        result = await hass.config_entries.flow.async_configure(
            flow_id, {"name": "NAS", CONF_PATH: str(nas), CONF_REQUIRE_MOUNT: True}
        )
    assert result["errors"] == {CONF_PATH: "not_writable"}


def _fill(path: Path, size: int) -> None:
    """Write more than ``size`` bytes into ``path``: its file system is full."""
    with pytest.raises(OSError) as err:
        (path / "filler").write_bytes(bytes(size + 65536))
    assert err.value.errno == errno.ENOSPC


def _killed(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


async def _configure(hass: HomeAssistant, flow_id: str, path: Path) -> dict[str, str]:
    result = await hass.config_entries.flow.async_configure(
        flow_id, {"name": "NAS", CONF_PATH: str(path), CONF_REQUIRE_MOUNT: True}
    )
    assert result["type"] is FlowResultType.FORM
    return dict(result["errors"])


async def test_user_flow_full_disk(hass: HomeAssistant, tmp_path: Path) -> None:
    """A full share is refused as full, and accepted once there is room."""
    async with in_executor(hass, tmpfs(tmp_path / "nas", size="256k")) as nas:
        await run(hass, _fill, nas, 256 * 1024)
        flow_id = await _start(hass)
        assert await _configure(hass, flow_id, nas) == {CONF_PATH: "no_space"}
        await run(hass, (nas / "filler").unlink)
        result = await hass.config_entries.flow.async_configure(
            flow_id, {"name": "NAS", CONF_PATH: str(nas), CONF_REQUIRE_MOUNT: True}
        )
        result = await _confirm_in_ram(hass, result, nas)
        assert result["type"] is FlowResultType.CREATE_ENTRY
        await hass.config_entries.async_unload(result["result"].entry_id)


async def test_user_flow_share_gone(
    hass: HomeAssistant, tmp_path: Path, location_dir: Path
) -> None:
    """A share whose FUSE daemon died (ENOTCONN) is reported as unreachable."""
    async with in_executor(hass, fuse_passthrough(tmp_path / "nas")) as daemon:
        await run(hass, _killed, daemon)
        flow_id = await _start(hass)
        errors = await _configure(hass, flow_id, tmp_path / "nas")
    assert errors == {CONF_PATH: "unreachable"}
    result = await hass.config_entries.flow.async_configure(
        flow_id,
        {"name": "NAS", CONF_PATH: str(location_dir), CONF_REQUIRE_MOUNT: False},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


def _checking() -> int:
    """Return how many threads are inside ``validate_location`` now."""
    return sum(
        any(frame.name == "validate_location" for frame in traceback.extract_stack(f))
        for f in sys._current_frames().values()
    )


async def test_user_flow_share_hangs(
    hass: HomeAssistant,
    tmp_path: Path,
    location_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A share that does not answer: "not_responding", one thread, however often."""
    monkeypatch.setattr(config_flow, "PROBE_TIMEOUT", 0.5)
    hung = tmp_path / "nas"
    async with in_executor(hass, fuse_passthrough(hung, delay=3600)) as daemon:
        flow_id = await _start(hass)
        for _ in range(3):
            errors = await _configure(hass, flow_id, hung)
            assert errors == {CONF_PATH: "not_responding"}
        assert await run(hass, _checking) == 1
        # The daemon dies: the waiting check fails, and its thread is free.
        await run(hass, _killed, daemon)
        assert await _configure(hass, flow_id, hung) == {CONF_PATH: "unreachable"}
        assert await run(hass, _checking) == 0
    result = await hass.config_entries.flow.async_configure(
        flow_id,
        {"name": "NAS", CONF_PATH: str(location_dir), CONF_REQUIRE_MOUNT: False},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_flow_unknown_error_recovers(
    hass: HomeAssistant, location_dir: Path
) -> None:
    """An unexpected error shows "unknown" and the user can try again."""

    def boom(*args: object, **kwargs: object) -> str:
        raise RuntimeError("boom")

    flow_id = await _start(hass)
    with patch(
        "custom_components.backup_offload.config_flow.validate_location", new=boom
    ):
        result = await hass.config_entries.flow.async_configure(
            flow_id,
            {"name": "NAS", CONF_PATH: str(location_dir), CONF_REQUIRE_MOUNT: False},
        )
    assert result["errors"] == {"base": "unknown"}
    result = await hass.config_entries.flow.async_configure(
        flow_id,
        {"name": "NAS", CONF_PATH: str(location_dir), CONF_REQUIRE_MOUNT: False},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_flow_already_configured(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry, location_dir: Path
) -> None:
    """The same directory cannot be added twice."""
    mock_config_entry.add_to_hass(hass)
    flow_id = await _start(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id,
        {"name": "Again", CONF_PATH: str(location_dir), CONF_REQUIRE_MOUNT: False},
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_reconfigure(
    hass: HomeAssistant, init_integration: MockConfigEntry, tmp_path: Path
) -> None:
    """A location moves to another directory; errors recover."""
    new = tmp_path / "new"
    await run(hass, new.mkdir)
    result = await init_integration.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure"
    flow_id = result["flow_id"]

    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_PATH: str(tmp_path / "missing"), CONF_REQUIRE_MOUNT: False}
    )
    assert result["errors"] == {CONF_PATH: "not_found"}

    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_PATH: str(new), CONF_REQUIRE_MOUNT: False}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert init_integration.data[CONF_PATH] == str(new)
    assert init_integration.unique_id == str(new)


async def test_reconfigure_same_path(
    hass: HomeAssistant, init_integration: MockConfigEntry, location_dir: Path
) -> None:
    """Keeping the path and changing the mount requirement is allowed.

    The location is now a tmpfs: the flow warns before it changes anything.
    """
    result = await init_integration.start_reconfigure_flow(hass)
    async with in_executor(hass, tmpfs(location_dir)):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_PATH: str(location_dir), CONF_REQUIRE_MOUNT: True}
        )
        assert init_integration.data[CONF_REQUIRE_MOUNT] is False
        result = await _confirm_in_ram(hass, result, location_dir)
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "reconfigure_successful"
        await hass.async_block_till_done()
        assert init_integration.data[CONF_REQUIRE_MOUNT] is True
        await hass.config_entries.async_unload(init_integration.entry_id)


async def test_reconfigure_to_another_location(
    hass: HomeAssistant, init_integration: MockConfigEntry, tmp_path: Path
) -> None:
    """A location cannot be moved onto another configured location."""
    other = tmp_path / "other"
    await run(hass, other.mkdir)
    MockConfigEntry(domain=DOMAIN, unique_id=str(other), data={}).add_to_hass(hass)
    result = await init_integration.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_PATH: str(other), CONF_REQUIRE_MOUNT: False}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_options(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    """Options are stored; a bad glob shows an error and recovers."""
    result = await hass.config_entries.options.async_init(init_integration.entry_id)
    assert result["step_id"] == "init"
    options = {
        CONF_PASSWORD: "secret",
        CONF_KEEP_COUNT: 3,
        CONF_KEEP_DAYS: 30,
        CONF_KEEP_DAILY: 7,
        CONF_KEEP_WEEKLY: 4,
        CONF_KEEP_MONTHLY: 12,
        CONF_KEEP_YEARLY: 2,
        CONF_OVERDUE_HOURS: 26,
        CONF_INCLUDE_DATABASE: False,
        CONF_EXCLUDE: ["../etc/*"],
        CONF_COMPRESS: True,
    }
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], options
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_EXCLUDE: "invalid_glob"}
    # The form names the pattern that is wrong.
    assert result["description_placeholders"] == {"pattern": "../etc/*"}

    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**options, CONF_EXCLUDE: [" www/cameras/** "]}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert init_integration.options == {
        **options,
        CONF_EXCLUDE: ["www/cameras/**"],
    }


_NUMBERS = (
    CONF_KEEP_COUNT,
    CONF_KEEP_DAYS,
    CONF_KEEP_DAILY,
    CONF_KEEP_WEEKLY,
    CONF_KEEP_MONTHLY,
    CONF_KEEP_YEARLY,
    CONF_OVERDUE_HOURS,
)


async def test_options_retention_and_overdue_fields(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Every keep option and the overdue alarm: 0 (off) by default, whole numbers.

    The number boxes hand over floats; the options keep integers. Saved
    values fill the form the next time.
    """
    result = await hass.config_entries.options.async_init(init_integration.entry_id)
    schema = result["data_schema"].schema
    defaults = {str(key): key.default() for key in schema if str(key) in _NUMBERS}
    assert defaults == dict.fromkeys(_NUMBERS, 0)
    hours = next(value for key, value in schema.items() if key == CONF_OVERDUE_HOURS)
    assert hours.config["unit_of_measurement"] == "h"

    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            **{key: float(n + 1) for n, key in enumerate(_NUMBERS)},
            CONF_INCLUDE_DATABASE: True,
            CONF_COMPRESS: True,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    stored = {key: init_integration.options[key] for key in _NUMBERS}
    assert stored == {key: n + 1 for n, key in enumerate(_NUMBERS)}
    assert all(type(value) is int for value in stored.values())

    result = await hass.config_entries.options.async_init(init_integration.entry_id)
    schema = result["data_schema"].schema
    assert {str(key): key.default() for key in schema if str(key) in _NUMBERS} == stored


async def test_options_older_entry_without_the_new_fields(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """A form submitted without the new fields stores them as 0 (off)."""
    result = await hass.config_entries.options.async_init(init_integration.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            CONF_KEEP_COUNT: 2,
            CONF_KEEP_DAYS: 0,
            CONF_INCLUDE_DATABASE: True,
            CONF_COMPRESS: True,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert init_integration.options[CONF_KEEP_COUNT] == 2
    assert {key: init_integration.options[key] for key in _NUMBERS[2:]} == (
        dict.fromkeys(_NUMBERS[2:], 0)
    )


async def test_options_refuse_negative_keep_count(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """A negative number of backups to keep is refused by the form."""
    result = await hass.config_entries.options.async_init(init_integration.entry_id)
    with pytest.raises(InvalidData):
        await hass.config_entries.options.async_configure(
            result["flow_id"],
            {
                CONF_KEEP_COUNT: -1,
                CONF_KEEP_DAYS: 0,
                CONF_INCLUDE_DATABASE: True,
                CONF_COMPRESS: True,
            },
        )
