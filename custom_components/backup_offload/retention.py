"""Which backups a location's retention settings delete (pure logic)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol


class Dated(Protocol):
    """What retention needs to know of a backup."""

    @property
    def date(self) -> str:
        """ISO 8601 date with time zone."""

    @property
    def backup_id(self) -> str:
        """The backup's id."""


def select_for_deletion[T: Dated](
    own_backups: Sequence[T], *, keep_count: int, keep_days: int, now: datetime
) -> list[T]:
    """Return the backups to delete, oldest first.

    Only pass backups this instance made: retention never deletes anyone
    else's. A backup goes when it is beyond the newest ``keep_count`` or older
    than ``keep_days`` (0 = no limit). The newest backup is always kept, so a
    location whose backups stopped for a while is not emptied by age alone.
    """
    newest_first = sorted(own_backups, key=_date, reverse=True)
    doomed: list[T] = []
    cutoff = now - timedelta(days=keep_days) if keep_days > 0 else None
    for index, backup in enumerate(newest_first):
        if index == 0:
            continue
        beyond_count = keep_count > 0 and index >= keep_count
        too_old = cutoff is not None and _date(backup) < cutoff
        if beyond_count or too_old:
            doomed.append(backup)
    doomed.reverse()
    return doomed


def _date(backup: Dated) -> datetime:
    return datetime.fromisoformat(backup.date)
