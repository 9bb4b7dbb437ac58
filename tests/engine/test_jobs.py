"""The jobs (``engine/jobs.py``): each probes its location, then acts.

Real backups on a real tmpfs where a mount matters: a share that is not
mounted leaves its mount point behind as an ordinary directory, and what
sits there (a backup written while the share was away) must be neither
listed, nor restored, nor deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
import os
from pathlib import Path
import time
from typing import Any

import pytest

from custom_components.backup_offload.engine import jobs
from custom_components.backup_offload.engine.errors import (
    InsufficientSpaceError,
    LocationUnavailableError,
)
from custom_components.backup_offload.engine.listing import BackupScanner
from custom_components.backup_offload.engine.metadata import TEMP_PREFIX
from custom_components.backup_offload.engine.restore.checks import NewerThan
from custom_components.backup_offload.engine.restore.full import discard_staged
from custom_components.backup_offload.engine.restore.partial import discard_extracted
from tests import mounts

from .helpers import (
    HA_VERSION,
    backup_json,
    build_archive,
    make_backup,
    member,
    tree,
    write,
)

INSTANCE = "this-instance"
NOW = datetime.now(UTC)
STALE = 120.0
IS_NEWER = NewerThan("2025.4.4")


def names(path: Path) -> list[str]:
    """Return the sorted names in ``path``."""
    return sorted(p.name for p in path.iterdir())


class Checked:
    """A job's ``checked`` callback: records what the location held when called."""

    def __init__(self, location: Path) -> None:
        """Watch ``location``."""
        self.location = location
        self.seen: list[list[str]] = []

    def __call__(self) -> None:
        """The probe passed: note the location's files at that moment."""
        self.seen.append(names(self.location))


def retention(**changes: Any) -> jobs.Retention:
    """Return retention settings of this instance (keep 1, no age limit)."""
    settings = jobs.Retention(keep_count=1, keep_days=0, instance_id=INSTANCE, now=NOW)
    return replace(settings, **changes)


@pytest.fixture
def small_config(config_dir: Path) -> Path:
    """A config directory with two small files (fast backups)."""
    write(config_dir / "configuration.yaml", "homeassistant:\n")
    write(config_dir / "automations.yaml", "- alias: Lights\n")
    return config_dir


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Path]:
    """A mounted tmpfs: a location that requires a mount and has one."""
    with mounts.tmpfs(tmp_path / "share", size="64m") as path:
        yield path


def at(path: Path, config: Path, *, require_mount: bool = True) -> jobs.Location:
    """Return the location at ``path``, probed as its settings say."""
    return jobs.Location(
        path=path,
        require_mount=require_mount,
        scanner=BackupScanner(),
        config_dir=config,
    )


def create(
    where: jobs.Location, policy: jobs.Retention, checked: Callable[[], None]
) -> jobs.CreateOutcome:
    """Run the create job with small test settings."""
    return jobs.create(
        where,
        policy,
        checked,
        name="Job",
        password=None,
        include_database=True,
        excludes=[],
        compress=True,
        homeassistant_version=HA_VERSION,
    )


# --- refresh and prepare ------------------------------------------------------


def test_refresh_probes_and_lists(share: Path, small_config: Path) -> None:
    """A fresh state: the probe's findings, the backups, the invalid files."""
    where = at(share, small_config)
    empty = jobs.refresh(where)
    assert empty.available
    assert empty.status is not None
    assert empty.status.mounted is True
    assert empty.status.file_system == "tmpfs"
    assert empty.backups == []

    info, _ = make_backup(small_config, share)
    write(share / "broken.tar", "not a backup")
    state = jobs.refresh(where)
    assert state is not empty
    assert [b.backup_id for b in state.backups] == [info.backup_id]
    assert list(state.invalid) == ["broken.tar"]
    assert state.used_bytes == info.size
    assert empty.backups == []  # an earlier state is not changed


def test_prepare_removes_what_a_crash_left(share: Path, small_config: Path) -> None:
    """A stale temporary file goes; a young one and the backups stay."""
    info, _ = make_backup(small_config, share)
    stale = write(share / f"{TEMP_PREFIX}old.tar.tmp", "partial")
    os.utime(stale, (time.time() - 2 * STALE,) * 2)
    young = write(share / f"{TEMP_PREFIX}young.tar.tmp", "partial")
    removed, state = jobs.prepare(at(share, small_config), stale_after=STALE)
    assert removed == [stale.name]
    assert [b.backup_id for b in state.backups] == [info.backup_id]
    assert names(share) == sorted([info.file, f"{info.file}.sha256", young.name])


# --- a location that is down --------------------------------------------------


def _jobs(
    where: jobs.Location, backup_id: str, checked: Checked, temp: Path
) -> dict[str, Callable[[], object]]:
    """Every job, ready to run on ``where``."""
    return {
        "refresh": lambda: jobs.refresh(where),
        "prepare": lambda: jobs.prepare(where, stale_after=-1),
        "create": lambda: create(where, retention(keep_count=1), checked),
        "delete": lambda: jobs.delete(where, backup_id, checked),
        "verify": lambda: jobs.verify(where, backup_id, None, checked),
        "purge": lambda: jobs.purge(where, retention(keep_count=1), checked),
        "restore_stage": lambda: jobs.restore_stage(
            where,
            backup_id,
            None,
            checked,
            is_newer=IS_NEWER,
            temp_dir=temp,
            restore_database=True,
        ),
        "restore_preview": lambda: jobs.restore_preview(
            where,
            backup_id,
            None,
            checked,
            patterns=None,
            restore_database=True,
            is_newer=IS_NEWER,
            temp_dir=temp,
        ),
        "restore_extract": lambda: jobs.restore_extract(
            where, backup_id, None, checked, patterns=["automations.yaml"]
        ),
    }


JOBS = (
    "refresh",
    "prepare",
    "create",
    "delete",
    "verify",
    "purge",
    "restore_stage",
    "restore_preview",
    "restore_extract",
)


@pytest.mark.parametrize("job", JOBS)
def test_every_job_refuses_an_unmounted_share(
    tmp_path: Path, small_config: Path, job: str
) -> None:
    """The share is not mounted: its bare mount point is left alone.

    The mount point holds backups of this instance (written while the share
    was away) and a stale temporary file: without the probe, each job would
    list, clean, write, delete, verify or restore them on the local disk.
    """
    mount_point = tmp_path / "share"
    mount_point.mkdir()
    info, _ = make_backup(
        small_config, mount_point, instance_id=INSTANCE, date=NOW - timedelta(days=9)
    )
    make_backup(small_config, mount_point, instance_id=INSTANCE)
    write(mount_point / f"{TEMP_PREFIX}old.tar.tmp", "partial")
    before, config_before = tree(mount_point), tree(small_config)
    temp = tmp_path / "temp"
    temp.mkdir()
    checked = Checked(mount_point)
    where = at(mount_point, small_config)
    with pytest.raises(LocationUnavailableError) as err:
        _jobs(where, info.backup_id, checked, temp)[job]()
    assert err.value.location_reason == "not_a_mount"
    assert checked.seen == []
    assert tree(mount_point) == before
    assert tree(small_config) == config_before
    assert names(temp) == []


@pytest.mark.parametrize("job", JOBS)
def test_every_job_refuses_a_location_that_is_gone(
    tmp_path: Path, small_config: Path, job: str
) -> None:
    """The location's directory is gone: not found, nothing created."""
    gone = tmp_path / "gone"
    checked = Checked(gone)
    temp = tmp_path / "temp"
    temp.mkdir()
    where = at(gone, small_config, require_mount=False)
    with pytest.raises(LocationUnavailableError) as err:
        _jobs(where, "abcd1234", checked, temp)[job]()
    assert err.value.location_reason == "not_found"
    assert checked.seen == []
    assert not gone.exists()
    assert names(temp) == []


# --- create, delete, purge ----------------------------------------------------


def test_create_probes_then_writes(share: Path, small_config: Path) -> None:
    """``checked`` comes before the archive; the new state lists it."""
    old, _ = make_backup(small_config, share, instance_id=INSTANCE)
    checked = Checked(share)
    outcome = create(at(share, small_config), retention(keep_count=0), checked)
    assert checked.seen == [sorted([old.file, f"{old.file}.sha256"])]
    new = outcome.result.info
    assert new.is_own(INSTANCE)
    assert outcome.purged == []
    assert [b.backup_id for b in outcome.snapshot.backups] == [
        new.backup_id,
        old.backup_id,
    ]
    assert outcome.snapshot.status is not None
    assert outcome.snapshot.status.mounted is True


def test_create_refuses_when_the_last_backup_would_not_fit(
    tmp_path: Path, small_config: Path
) -> None:
    """The newest backup's size is the estimate: refused before writing."""
    # 40 MiB: free space beyond the margin, but not for another 16 MiB.
    with mounts.tmpfs(tmp_path / "small", size="40m") as small:
        write(small_config / "video.bin", bytes(range(256)) * (16 << 12))  # 16 MiB
        make_backup(small_config, small, compress=False)
        (small_config / "video.bin").unlink()
        before = tree(small)
        checked = Checked(small)
        with pytest.raises(InsufficientSpaceError):
            create(at(small, small_config), retention(), checked)
        assert checked.seen == []
        assert tree(small) == before


@pytest.fixture
def dated(share: Path, small_config: Path) -> dict[str, str]:
    """Backups of several dates and owners; return their ids by role.

    ``ahead`` is this instance's, dated after any new backup (another
    machine's clock ahead): it ranks first, so a new backup is second.
    """
    made = {
        "ahead": (INSTANCE, NOW + timedelta(days=10)),
        "older": (INSTANCE, NOW - timedelta(days=1)),
        "foreign": ("another-instance", NOW - timedelta(days=400)),
    }
    ids = {}
    for role, (owner, date) in made.items():
        info, _ = make_backup(small_config, share, instance_id=owner, date=date)
        ids[role] = info.backup_id
    return ids


def test_create_retention_keeps_what_it_made(
    share: Path, small_config: Path, dated: dict[str, str]
) -> None:
    """Keep one: the newest stays, and so does the backup just made."""
    policy = retention(keep_count=1, now=NOW + timedelta(days=30))
    outcome = create(at(share, small_config), policy, Checked(share))
    new = outcome.result.info.backup_id
    assert [b.backup_id for b in outcome.purged] == [dated["older"]]
    listed = {b.backup_id for b in outcome.snapshot.backups}
    assert listed == {dated["ahead"], new, dated["foreign"]}
    refreshed = jobs.refresh(at(share, small_config))
    assert {b.backup_id for b in refreshed.backups} == listed


def test_keep_all_deletes_nothing(
    share: Path, small_config: Path, dated: dict[str, str]
) -> None:
    """A safety backup's retention deletes nothing; the next purge does."""
    policy = retention(
        keep_count=1,
        keep_days=7,
        keep_daily=1,
        keep_weekly=1,
        keep_monthly=1,
        keep_yearly=1,
        now=NOW + timedelta(days=30),
    )
    safe = jobs.keep_all(policy)
    assert not safe.policy.active
    assert (safe.instance_id, safe.now) == (policy.instance_id, policy.now)
    assert policy.policy.active

    outcome = create(at(share, small_config), safe, Checked(share))
    assert outcome.purged == []
    assert len(outcome.snapshot.backups) == 4

    checked = Checked(share)
    policy = replace(policy, keep_days=0, keep_daily=0, keep_weekly=0)
    decision, state = jobs.purge(at(share, small_config), policy, checked)
    assert len(checked.seen) == 1
    assert {b.backup_id for b in decision.deleted} == {
        dated["older"],
        outcome.result.info.backup_id,
    }
    assert {b.backup_id for b in state.backups} == {dated["ahead"], dated["foreign"]}


def _plant_foreign(share: Path, name: str, slug: str, date: datetime) -> None:
    """A backup nobody's Backup Offload made (no block of ours in extra)."""
    build_archive(
        share / name,
        [member("data/configuration.yaml", b"homeassistant:\n")],
        metadata=backup_json(slug=slug, name=name, date=date.isoformat()),
    )


def test_purge_leaves_backups_of_others_alone(share: Path, small_config: Path) -> None:
    """Another instance's and a foreign backup, older than ours, stay on disk.

    Each has its own name and id, so a test that a name survived cannot
    pass because one of ours has the same name.
    """
    ours = [
        make_backup(
            small_config, share, instance_id=INSTANCE, name=f"Ours {n}", date=date
        )[0]
        for n, date in enumerate(NOW - timedelta(days=d) for d in (1, 2, 3))
    ]
    theirs, _ = make_backup(
        small_config,
        share,
        instance_id="another-instance",
        name="Theirs",
        date=NOW - timedelta(days=50),
    )
    _plant_foreign(share, "foreign.tar", "f0f0f0f0", NOW - timedelta(days=60))
    decision, state = jobs.purge(
        at(share, small_config), retention(keep_count=1, keep_days=0), Checked(share)
    )
    assert [b.backup_id for b in decision.deleted] == [
        ours[2].backup_id,
        ours[1].backup_id,
    ]
    assert {kept.backup.backup_id: kept.kept_by for kept in decision.kept} == {
        ours[0].backup_id: ("newest", "count"),
        theirs.backup_id: ("not_own",),
        "f0f0f0f0": ("not_own",),
    }
    assert {b.name for b in state.backups} == {"Ours 0", "Theirs", "foreign.tar"}
    assert sorted(p.name for p in share.glob("*.tar")) == sorted(
        [ours[0].file, theirs.file, "foreign.tar"]
    )


def test_purge_dry_run_deletes_nothing(share: Path, small_config: Path) -> None:
    """A dry run decides as the real purge does, deletes nothing, needs no writes."""
    for days in (0, 1, 8, 9, 40):
        make_backup(
            small_config, share, instance_id=INSTANCE, date=NOW - timedelta(days=days)
        )
    policy = retention(keep_count=0, keep_daily=2, keep_monthly=2)
    before = tree(share)
    with mounts.read_only(share):
        dry, state = jobs.purge(
            at(share, small_config), policy, Checked(share), dry_run=True
        )
        with pytest.raises(LocationUnavailableError):
            jobs.purge(at(share, small_config), policy, Checked(share))
    assert tree(share) == before
    assert len(state.backups) == 5
    real, state = jobs.purge(at(share, small_config), policy, Checked(share))
    assert dry == real
    assert len(real.deleted) >= 1
    assert {b.backup_id for b in state.backups} == {
        kept.backup.backup_id for kept in real.kept
    }


def test_delete_probes_then_deletes(share: Path, small_config: Path) -> None:
    """The backup is still there when ``checked`` is called; then it is gone."""
    info, _ = make_backup(small_config, share)
    other, _ = make_backup(small_config, share)
    checked = Checked(share)
    deleted, state = jobs.delete(at(share, small_config), info.backup_id, checked)
    assert deleted.backup_id == info.backup_id
    assert info.file in checked.seen[0]
    assert [b.backup_id for b in state.backups] == [other.backup_id]
    assert names(share) == sorted([other.file, f"{other.file}.sha256"])


# --- verify and restore -------------------------------------------------------


def test_verify_and_restore_jobs_read_the_backup(
    share: Path, small_config: Path, tmp_path: Path
) -> None:
    """Each finds the backup after its probe and reads it in full."""
    info, _ = make_backup(small_config, share)
    where = at(share, small_config)
    checked = Checked(share)
    backup, verified = jobs.verify(where, info.backup_id, None, checked)
    assert backup == info
    assert verified.checksum is True

    backup, preview = jobs.restore_preview(
        where,
        info.backup_id,
        None,
        checked,
        patterns=["automations.yaml"],
        restore_database=True,
        is_newer=IS_NEWER,
        temp_dir=tmp_path,
    )
    assert backup == info
    assert preview.unchanged == 1

    extracted = jobs.restore_extract(
        where, info.backup_id, None, checked, patterns=["automations.yaml"]
    )
    assert extracted.files == ["automations.yaml"]
    discard_extracted(extracted)

    staged = jobs.restore_stage(
        where,
        info.backup_id,
        None,
        checked,
        is_newer=IS_NEWER,
        temp_dir=tmp_path,
        restore_database=True,
    )
    assert staged.backup == info
    assert staged.path.is_relative_to(small_config)
    discard_staged(staged)
    assert len(checked.seen) == 4
