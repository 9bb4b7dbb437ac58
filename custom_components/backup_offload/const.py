"""Constants of Backup Offload."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
import logging
from typing import Final

DOMAIN: Final = "backup_offload"
LOGGER = logging.getLogger(__package__)

# Config entry data.
CONF_PATH: Final = "path"
CONF_REQUIRE_MOUNT: Final = "require_mount"

# Config entry options.
CONF_PASSWORD: Final = "password"  # noqa: S105
CONF_KEEP_COUNT: Final = "keep_count"
CONF_KEEP_DAYS: Final = "keep_days"
CONF_KEEP_DAILY: Final = "keep_daily"
CONF_KEEP_WEEKLY: Final = "keep_weekly"
CONF_KEEP_MONTHLY: Final = "keep_monthly"
CONF_KEEP_YEARLY: Final = "keep_yearly"
CONF_OVERDUE_HOURS: Final = "overdue_hours"
CONF_INCLUDE_DATABASE: Final = "include_database"
CONF_EXCLUDE: Final = "exclude"
CONF_COMPRESS: Final = "compress"

DEFAULT_REQUIRE_MOUNT: Final = True
DEFAULT_KEEP_COUNT: Final = 0
DEFAULT_KEEP_DAYS: Final = 0
DEFAULT_KEEP_GENERATIONS: Final = 0
DEFAULT_OVERDUE_HOURS: Final = 0
DEFAULT_INCLUDE_DATABASE: Final = True
DEFAULT_COMPRESS: Final = True

# How often the location is probed and listed (the listing reads every
# archive's header on a slow share: not something to do every few seconds).
SCAN_INTERVAL: Final = timedelta(minutes=5)
# Between listings, a cheap probe (mount check and statvfs, no listing) tells
# whether the location is still there. While it is usable, every 30 s: a share
# that goes away shows as disconnected within a minute, also on a hung share
# whose probe takes PROBE_TIMEOUT to fail (30 + 10 s).
PROBE_INTERVAL: Final = 30.0
# While it is not usable, sooner, so that a share mounted again shows within
# 30 s: the first retry after PROBE_RETRY_FIRST seconds, then each wait twice
# the last, up to PROBE_RETRY_MAX (5, 10, 20, 20, ...). 20 s leaves 10 s of
# the 30 for the probe and the listing the location's return starts; a probe
# that fails at once costs next to nothing, so more back-off saves little.
PROBE_RETRY_FIRST: Final = 5.0
PROBE_RETRY_MAX: Final = 20.0
# A probe that takes longer reports the location as not responding.
PROBE_TIMEOUT: Final = 10.0
# A refresh of an idle location removes the temporary files of ours that
# nobody has written to for this long and whose lock nobody holds: the
# leftovers of a crash. A backup that this or another Home Assistant writes
# keeps its file locked; where the file system has no locks, its fresh
# modification time alone protects it.
STALE_TEMP_AGE: Final = 120.0
# How long unloading a location (a reload, say) waits for its running
# operation. A longer one goes on; the location's manager outlives the
# entry's load, so the location stays busy, and shows it, until it ends.
UNLOAD_TIMEOUT: Final = 30.0

# Events.
EVENT_BACKUP_CREATED: Final = f"{DOMAIN}_backup_created"
EVENT_BACKUP_FAILED: Final = f"{DOMAIN}_backup_failed"
EVENT_BACKUP_DELETED: Final = f"{DOMAIN}_backup_deleted"
EVENT_RESTORE_STARTED: Final = f"{DOMAIN}_restore_started"
EVENT_RESTORE_FAILED: Final = f"{DOMAIN}_restore_failed"
EVENT_BACKUP_OVERDUE: Final = f"{DOMAIN}_backup_overdue"
EVENT_BACKUP_COPIED: Final = f"{DOMAIN}_backup_copied"

# Repair issues of a restore that failed at startup.
ISSUE_RESTORE_FAILED: Final = "restore_failed"
ISSUE_RESTORE_FAILED_OTHER: Final = "restore_failed_other"


class OperationState(StrEnum):
    """What a location is doing right now (the `state` sensor)."""

    IDLE = "idle"
    CREATING = "creating"
    RESTORING = "restoring"
    VERIFYING = "verifying"
    DELETING = "deleting"
    PURGING = "purging"
    COPYING = "copying"
