"""Which backups a location's retention settings delete (pure logic)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Final, Protocol

CLOCK_SKEW: Final = timedelta(minutes=5)
"""How far ahead another machine's clock may be before a date is flagged."""


class Dated(Protocol):
    """What retention needs to know of a backup."""

    @property
    def date(self) -> str:
        """ISO 8601 date with time zone."""

    @property
    def backup_id(self) -> str:
        """The backup's id."""


def select_for_deletion[T: Dated](
    own_backups: Sequence[T],
    *,
    keep_count: int,
    keep_days: int,
    now: datetime,
    keep: Collection[str] = (),
) -> list[T]:
    """Return the backups to delete, oldest first.

    Only pass backups this instance made: retention never deletes anyone
    else's. A backup goes when it is beyond the newest ``keep_count`` or older
    than ``keep_days`` (0 = no limit). The newest backup is always kept, so a
    location whose backups stopped for a while is not emptied by age alone,
    and so is every backup whose id is in ``keep`` (the one just created).

    A date in the future counts as ``now``: one backup dated 2099 (a board
    that once booted without a real-time clock, or planted: the instance id
    is in every backup.json) must not rank above every new backup and make
    retention delete each one as it is made.
    """
    newest_first = sorted(
        own_backups, key=lambda backup: _date(backup, now), reverse=True
    )
    doomed: list[T] = []
    cutoff = now - timedelta(days=keep_days) if keep_days > 0 else None
    for index, backup in enumerate(newest_first):
        if index == 0 or backup.backup_id in keep:
            continue
        beyond_count = keep_count > 0 and index >= keep_count
        too_old = cutoff is not None and _date(backup, now) < cutoff
        if beyond_count or too_old:
            doomed.append(backup)
    doomed.reverse()
    return doomed


def in_future(backup: Dated, now: datetime) -> bool:
    """Return whether a backup's date lies ahead of ``now`` (beyond clock skew)."""
    return datetime.fromisoformat(backup.date) > now + CLOCK_SKEW


def _date(backup: Dated, now: datetime) -> datetime:
    return min(datetime.fromisoformat(backup.date), now)
