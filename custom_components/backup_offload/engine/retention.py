"""Which backups a location's retention keeps, and why (pure logic).

Generational retention as restic's ``forget --keep-*``: a backup is kept
when *any* rule keeps it, and each kept backup carries the names of the
rules that keep it, so that every decision can be shown.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Final, Protocol

CLOCK_SKEW: Final = timedelta(minutes=5)
"""How far ahead another machine's clock may be before a date is flagged."""

# Why a backup is kept: the names a response shows in ``kept_by``.
NEWEST: Final = "newest"
JUST_CREATED: Final = "just_created"
COUNT: Final = "count"
DAYS: Final = "days"
DAILY: Final = "daily"
WEEKLY: Final = "weekly"
MONTHLY: Final = "monthly"
YEARLY: Final = "yearly"
RETENTION_OFF: Final = "retention_off"
NOT_OWN: Final = "not_own"


class Dated(Protocol):
    """What retention needs to know of a backup."""

    @property
    def date(self) -> str:
        """ISO 8601 date with time zone."""

    @property
    def backup_id(self) -> str:
        """The backup's id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A location's retention options; each 0 is off."""

    count: int = 0
    """Keep the newest this many."""
    days: int = 0
    """Keep everything newer than this many days."""
    daily: int = 0
    """Keep the newest of each of the last this many days that have one."""
    weekly: int = 0
    """Likewise for ISO weeks."""
    monthly: int = 0
    """Likewise for calendar months."""
    yearly: int = 0
    """Likewise for calendar years."""

    @property
    def active(self) -> bool:
        """Return whether any rule is on (all off: nothing is deleted)."""
        return any(
            value > 0
            for value in (
                self.count,
                self.days,
                self.daily,
                self.weekly,
                self.monthly,
                self.yearly,
            )
        )


@dataclass(frozen=True, slots=True)
class Kept[T]:
    """A backup retention keeps, and the rules that keep it."""

    backup: T
    kept_by: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision[T]:
    """What retention does to a location's backups."""

    deleted: list[T] = field(default_factory=list)
    """The backups to delete, oldest first."""
    kept: list[Kept[T]] = field(default_factory=list)
    """Every other backup, newest first."""


def _iso_week(day: date) -> Hashable:
    year, week, _ = day.isocalendar()
    return year, week


def _month(day: date) -> Hashable:
    return day.year, day.month


def _year(day: date) -> Hashable:
    return day.year


def decide[T: Dated](
    backups: Sequence[T],
    policy: Policy,
    *,
    now: datetime,
    time_zone: tzinfo,
    own: Callable[[T], bool],
    keep: Collection[str] = (),
) -> Decision[T]:
    """Return which of a location's backups retention deletes and keeps.

    Only backups for which ``own`` is true are ever deleted: the others are
    kept as ``not_own``. Among its own, a backup is kept when any rule keeps
    it: among the newest ``count``; newer than ``days`` calendar days; the
    newest of each of the last ``daily`` days that have a backup, likewise
    for ISO weeks, months and years, all in ``time_zone``. With every rule
    off nothing is deleted. The newest backup is always kept, so a location
    whose backups stopped for a while is not emptied by age alone, and so is
    every backup whose id is in ``keep`` (the one just created). Unlike newer
    restic releases, a rule with periods left over does not also keep the
    oldest backup: each rule keeps exactly what it says.

    A date in the future counts as ``now``: one backup dated 2099 (a board
    that once booted without a real-time clock, or planted: the instance id
    is in every backup.json) must not rank above every new backup and make
    retention delete each one as it is made.
    """
    # Among dates in the future (all ranked as now), the furthest first; the
    # id settles a tie, so the order never depends on the listing's.
    newest_first = sorted(
        backups,
        key=lambda backup: (_date(backup, now), _raw(backup), backup.backup_id),
        reverse=True,
    )
    mine = [backup for backup in newest_first if own(backup)]
    reasons = iter(_reasons(mine, policy, now=now, time_zone=time_zone, keep=keep))
    decision: Decision[T] = Decision()
    for backup in newest_first:
        if not own(backup):
            decision.kept.append(Kept(backup, (NOT_OWN,)))
        elif why := next(reasons):
            decision.kept.append(Kept(backup, why))
        else:
            decision.deleted.append(backup)
    decision.deleted.reverse()
    return decision


def _reasons(
    newest_first: Sequence[Dated],
    policy: Policy,
    *,
    now: datetime,
    time_zone: tzinfo,
    keep: Collection[str],
) -> list[tuple[str, ...]]:
    """Return the rules that keep each backup, in the order given."""
    reasons: list[list[str]] = [[] for _ in newest_first]
    # Calendar days in the local zone: across a change of daylight-saving
    # time, "7 days ago" is the same wall-clock time a week back.
    cutoff = now.astimezone(time_zone) - timedelta(days=policy.days)
    for index, backup in enumerate(newest_first):
        why = reasons[index]
        if index == 0:
            why.append(NEWEST)
        if backup.backup_id in keep:
            why.append(JUST_CREATED)
        if index < policy.count:
            why.append(COUNT)
        if policy.days > 0 and _date(backup, now) >= cutoff:
            why.append(DAYS)
        if not policy.active:
            why.append(RETENTION_OFF)
    days = [_date(backup, now).astimezone(time_zone).date() for backup in newest_first]
    for rule, periods, period in (
        (DAILY, policy.daily, date.toordinal),
        (WEEKLY, policy.weekly, _iso_week),
        (MONTHLY, policy.monthly, _month),
        (YEARLY, policy.yearly, _year),
    ):
        for index in _newest_per_period(days, periods, period):
            reasons[index].append(rule)
    return [tuple(why) for why in reasons]


def _newest_per_period(
    days: Sequence[date], periods: int, period: Callable[[date], Hashable]
) -> list[int]:
    """Return the newest backup of each of the last ``periods`` that have one.

    ``days``: the backups' local dates, newest first; the result: indices.
    """
    chosen: list[int] = []
    last: Hashable = None
    for index, day in enumerate(days):
        if len(chosen) >= periods:
            break
        current = period(day)
        if current != last:
            chosen.append(index)
            last = current
    return chosen


def in_future(backup: Dated, now: datetime) -> bool:
    """Return whether a backup's date lies ahead of ``now`` (beyond clock skew)."""
    return datetime.fromisoformat(backup.date) > now + CLOCK_SKEW


def _raw(backup: Dated) -> datetime:
    return datetime.fromisoformat(backup.date)


def _date(backup: Dated, now: datetime) -> datetime:
    return min(_raw(backup), now)
