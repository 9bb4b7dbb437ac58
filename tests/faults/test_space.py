"""A full disk and a share that turns read-only.

Complements tests/test_services.py::test_create_on_full_disk (ENOSPC on a
tmpfs without an earlier backup): here the space estimate refuses a backup
before a byte is written, ENOSPC hits a real block-device file system
(ext4 on a loop device, journal and reserved blocks included), and a share
remounted read-only refuses every write but can still be read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import os
from pathlib import Path

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import async_capture_events

from custom_components.backup_offload.const import DOMAIN, EVENT_BACKUP_FAILED
from custom_components.backup_offload.engine.location import (
    PROBE_PREFIX,
    SPACE_MARGIN_BYTES,
)
from custom_components.backup_offload.engine.metadata import TEMP_PREFIX
from tests.common import in_executor, run
from tests.mounts import loop_ext4, read_only

from .conftest import Share
from .helpers import (
    DirectoryWatch,
    attributes,
    backups_on_disk,
    call,
    call_error,
    listdir,
    repair_issue,
    setup_location,
    state,
    write_random,
)


def _free_bytes(path: Path) -> int:
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize


@pytest.fixture
def ext4_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB ext4 file system on a loop device, mounted."""
    with loop_ext4(tmp_path / "disk", tmp_path / "disk.img", size_mb=16) as disk:
        yield disk


async def test_insufficient_space_detected_before_writing(
    hass: HomeAssistant, ha_config_dir: Path, make_share: Callable[..., Share]
) -> None:
    """The newest backup's size does not fit: refused before writing anything."""
    share = await run(hass, make_share, "nas", "48m")
    await run(hass, write_random, ha_config_dir / "media.bin", 20 << 20)
    entry = await setup_location(hass, share.path)
    first = (await call(hass, "create", entry, name="first"))["backup"]
    free = await run(hass, _free_bytes, share.path)
    assert free < first["size"] + SPACE_MARGIN_BYTES  # the estimate cannot fit

    watch = await run(hass, DirectoryWatch.start, share.store)
    try:
        err = await call_error(hass, "create", entry, name="second")
        created = await run(hass, watch.created)
    finally:
        await run(hass, watch.close)
    assert not isinstance(err, ServiceValidationError)
    assert err.translation_key == "insufficient_space"
    assert err.translation_placeholders["needed"] == str(first["size"])
    # Only the probe's write test touched the share; no archive was started.
    assert created
    assert all(name.startswith(PROBE_PREFIX) for name in created), created
    assert not any(name.startswith(TEMP_PREFIX) for name in created)
    assert await listdir(hass, share.path) == sorted(
        [first["file"], first["file"] + ".sha256"]
    )
    assert await run(hass, _free_bytes, share.path) == free
    # A full location is not a location that is down.
    assert state(hass, "binary_sensor.nas_connected") == "on"
    assert state(hass, "sensor.nas_backups") == "1"
    assert attributes(hass, "sensor.nas_last_failure")["operation"] == "creating"
    await hass.config_entries.async_unload(entry.entry_id)


async def test_disk_full_in_the_middle(
    hass: HomeAssistant, ha_config_dir: Path, ext4_disk: Path
) -> None:
    """ENOSPC while writing on ext4: a clear error, no partial file, space back."""
    await run(hass, write_random, ha_config_dir / "media.bin", 24 << 20)
    entry = await setup_location(hass, ext4_disk)
    failed = async_capture_events(hass, EVENT_BACKUP_FAILED)
    before = await run(hass, _free_bytes, ext4_disk)
    assert before < 24 << 20  # no earlier backup: nothing to estimate from

    watch = await run(hass, DirectoryWatch.start, ext4_disk)
    try:
        err = await call_error(hass, "create", entry, name="too big")
        created = await run(hass, watch.created)
    finally:
        await run(hass, watch.close)
    assert err.translation_key == "insufficient_space"
    assert "ENOSPC" in err.translation_placeholders["error"]
    # The archive was started (this is the mid-write case) and removed again.
    assert any(name.startswith(TEMP_PREFIX) for name in created), created
    assert await listdir(hass, ext4_disk) == ["lost+found"]
    # The space is given back (within a few blocks of journal and metadata).
    assert await run(hass, _free_bytes, ext4_disk) >= before - (256 << 10)
    assert [e.data["name"] for e in failed] == ["too big"]
    assert state(hass, "binary_sensor.nas_connected") == "on"
    assert repair_issue(hass, entry) is None

    # A backup that fits still works on the same file system.
    backup = (await call(hass, "create", entry, exclude=["media.bin"]))["backup"]
    archives, sidecars, temporary = await run(hass, backups_on_disk, ext4_disk)
    assert archives == {backup["file"]}
    assert sidecars == {backup["file"] + ".sha256"}
    assert temporary == set()
    await hass.config_entries.async_unload(entry.entry_id)


async def test_read_only_remount(
    hass: HomeAssistant, ha_config_dir: Path, share: Share
) -> None:
    """A share remounted read-only: writes refused as not_writable, reads work."""
    entry = await setup_location(hass, share.path)
    backup = (await call(hass, "create", entry, name="kept"))["backup"]
    backup_id = backup["backup_id"]
    on_disk = await listdir(hass, share.path)

    async with in_executor(hass, read_only(share.disk)):
        for service, data in (
            ("create", {}),
            ("delete", {"backup_id": backup_id}),
            ("purge", {}),
        ):
            err = await call_error(hass, service, entry, **data)
            assert not isinstance(err, ServiceValidationError), service
            assert err.translation_key == "location_not_writable", service
        assert await listdir(hass, share.path) == on_disk
        # Reading still works.
        assert (await call(hass, "list", entry))["backups"] == [backup]
        verified = await call(hass, "verify", entry, backup_id=backup_id)
        assert verified["valid"] is True
        # It stays readable (listed), but not usable for backups: not
        # connected, and the repair issue raised by the refused writes stays
        # until it is writable again.
        await entry.runtime_data.coordinator.async_refresh()
        assert state(hass, "binary_sensor.nas_connected") == "off"
        assert (
            hass.states.get("binary_sensor.nas_connected").attributes["reason"]
            == "not_writable"
        )
        assert state(hass, "sensor.nas_backups") == "1"
        issue = repair_issue(hass, entry)
        assert issue is not None
        assert issue.translation_placeholders["reason"] == "not_writable"
        # A start while it is read-only raises it too.
        ir.async_delete_issue(hass, DOMAIN, f"location_unavailable_{entry.entry_id}")
        assert await hass.config_entries.async_reload(entry.entry_id)
        await hass.async_block_till_done()
        assert state(hass, "binary_sensor.nas_connected") == "off"
        assert repair_issue(hass, entry) is not None

    await entry.runtime_data.coordinator.async_refresh()
    assert repair_issue(hass, entry) is None
    assert state(hass, "binary_sensor.nas_connected") == "on"
    # Writable again: the next backup works.
    second = (await call(hass, "create", entry, name="after"))["backup"]
    listing = await call(hass, "list", entry)
    assert {b["backup_id"] for b in listing["backups"]} == {
        backup_id,
        second["backup_id"],
    }
    await hass.config_entries.async_unload(entry.entry_id)
