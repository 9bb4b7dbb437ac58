"""Many action calls at once on two locations: each succeeds or is `busy`.

Complements tests/test_services.py::test_two_creates_at_once (two creates
on one location): here 20 calls of every kind land on two real mounts at
staggered moments, so operations overlap on one location and run side by
side on the other; afterwards the state is consistent and the listing is
exactly what is on disk.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
import random
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
)

from custom_components.backup_offload.const import (
    DOMAIN,
    EVENT_BACKUP_CREATED,
    EVENT_BACKUP_DELETED,
    EVENT_BACKUP_FAILED,
)
from tests.common import run

from .conftest import Share
from .helpers import backups_on_disk, call, setup_location, state, write_random

CALLS_PER_LOCATION = 10
# Calls start at random moments in this window (seconds), so that some
# overlap and some follow each other.
SPREAD = 0.6
SEED = 20261127


def _plan(verify_id: str, delete_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The calls for one location: every action, creates most often."""
    plan: list[tuple[str, dict[str, Any]]] = [
        ("create", {"name": "c1"}),
        ("create", {"name": "c2"}),
        ("create", {"name": "c3"}),
        ("create", {"name": "c4"}),
        ("list", {}),
        ("list", {}),
        ("verify", {"backup_id": verify_id}),
        ("verify", {"backup_id": verify_id}),
        ("delete", {"backup_id": delete_id}),
        ("purge", {}),
    ]
    assert len(plan) == CALLS_PER_LOCATION
    return plan


async def _delayed(
    hass: HomeAssistant, delay: float, service: str, entry: MockConfigEntry, **data: Any
) -> dict[str, Any]:
    await asyncio.sleep(delay)
    return await call(hass, service, entry, **data)


async def test_concurrent_calls_on_two_locations(
    hass: HomeAssistant, ha_config_dir: Path, make_share: Callable[..., Share]
) -> None:
    """20 calls: success or busy each; consistent state; listing == disk."""
    # A few MiB so that a backup takes long enough for calls to overlap.
    await run(hass, write_random, ha_config_dir / "media.bin", 4 << 20)
    shares = [await run(hass, make_share, name) for name in ("nas_a", "nas_b")]
    entries = [
        await setup_location(hass, share.path, title=title)
        for share, title in zip(shares, ("NAS A", "NAS B"), strict=True)
    ]
    # Each location starts with two backups: one to verify, one to delete.
    kept: dict[str, dict[str, Any]] = {}
    doomed: dict[str, dict[str, Any]] = {}
    for entry in entries:
        kept[entry.entry_id] = (await call(hass, "create", entry, name="kept"))[
            "backup"
        ]
        doomed[entry.entry_id] = (await call(hass, "create", entry, name="doomed"))[
            "backup"
        ]
    created = async_capture_events(hass, EVENT_BACKUP_CREATED)
    deleted = async_capture_events(hass, EVENT_BACKUP_DELETED)
    failed = async_capture_events(hass, EVENT_BACKUP_FAILED)

    rng = random.Random(SEED)  # noqa: S311 - reproducible timing, not secrets
    calls: list[tuple[float, MockConfigEntry, str, dict[str, Any]]] = []
    for entry in entries:
        plan = _plan(
            kept[entry.entry_id]["backup_id"], doomed[entry.entry_id]["backup_id"]
        )
        # The first two creates start together (the second must be busy);
        # the others at random moments.
        delays = [0.0, 0.0, *(rng.uniform(0, SPREAD) for _ in plan[2:])]
        calls += [
            (delay, entry, service, data)
            for delay, (service, data) in zip(delays, plan, strict=True)
        ]
    assert len(calls) == 20
    results = await asyncio.gather(
        *(
            _delayed(hass, delay, service, entry, **data)
            for delay, entry, service, data in calls
        ),
        return_exceptions=True,
    )

    outcomes: Counter[tuple[str, str, str]] = Counter()
    for (_, entry, service, _), result in zip(calls, results, strict=True):
        if isinstance(result, HomeAssistantError):
            assert result.translation_key == "busy", (service, result)
            assert result.translation_placeholders["location"] == entry.title
            outcomes[entry.title, service, "busy"] += 1
        else:
            assert isinstance(result, dict), (service, result)
            outcomes[entry.title, service, "ok"] += 1
    # Both outcomes happened on each location: the calls really overlapped.
    for entry in entries:
        assert outcomes[entry.title, "create", "ok"] >= 1, outcomes
        assert outcomes[entry.title, "create", "busy"] >= 1, outcomes

    for entry, share in zip(entries, shares, strict=True):
        title = entry.title
        slug = title.lower().replace(" ", "_")
        # No operation left running, nothing broken.
        manager = entry.runtime_data.manager
        runner = entry.runtime_data.coordinator.runner
        assert not manager.busy
        assert not runner.running
        assert not runner.stuck
        assert state(hass, f"sensor.{slug}_state") == "idle"
        assert state(hass, f"sensor.{slug}_last_failure") == "unknown"
        assert state(hass, f"binary_sensor.{slug}_connected") == "on"

        # The listing is exactly what is on disk, and every backup is sound.
        listing = await call(hass, "list", entry)
        assert listing["invalid"] == {}
        listed = {b["file"] for b in listing["backups"]}
        archives, sidecars, temporary = await run(hass, backups_on_disk, share.path)
        assert listed == archives
        assert sidecars == {f"{name}.sha256" for name in archives}
        assert temporary == set()
        for backup in listing["backups"]:
            verified = await call(hass, "verify", entry, backup_id=backup["backup_id"])
            assert verified["valid"] is True, backup
        assert state(hass, f"sensor.{slug}_backups") == str(len(archives))

        # What happened is what the answers said.
        creates = outcomes[title, "create", "ok"]
        deletes = outcomes[title, "delete", "ok"]
        ids = {b["backup_id"] for b in listing["backups"]}
        assert len(ids) == 2 + creates - deletes
        assert kept[entry.entry_id]["backup_id"] in ids
        assert (doomed[entry.entry_id]["backup_id"] in ids) == (deletes == 0)
        mine = [e for e in created if e.data["config_entry_id"] == entry.entry_id]
        assert len(mine) == creates
        assert {e.data["backup_id"] for e in mine} <= ids
        gone = [e for e in deleted if e.data["config_entry_id"] == entry.entry_id]
        assert len(gone) == deletes
        # A create refused as busy is reported as a failed backup, no other.
        refused = [e for e in failed if e.data["config_entry_id"] == entry.entry_id]
        assert len(refused) == outcomes[title, "create", "busy"]
    assert not ir.async_get(hass).issues.keys() & {
        (DOMAIN, f"location_unavailable_{entry.entry_id}") for entry in entries
    }
    for entry in entries:
        await hass.config_entries.async_unload(entry.entry_id)
