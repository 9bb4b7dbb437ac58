"""Retention (``engine/retention.py``): which backups stay, and why.

Every test freezes the clock (``now`` is passed in) and names the time zone,
so calendar boundaries are exact: a day, an ISO week, a month and a year
begin at local midnight, also across a change of daylight-saving time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from custom_components.backup_offload.engine.retention import Policy, decide

BERLIN = ZoneInfo("Europe/Berlin")
ME = "this-instance"


@dataclass(frozen=True, slots=True)
class Backup:
    """A backup as retention sees it, and who made it."""

    backup_id: str
    date: str
    owner: str = ME


def at(text: str) -> datetime:
    """Parse an ISO date (with its zone)."""
    return datetime.fromisoformat(text)


def apply(
    backups: list[Backup],
    *,
    now: str,
    time_zone: tzinfo = BERLIN,
    keep: tuple[str, ...] = (),
    **rules: int,
) -> tuple[list[str], dict[str, list[str]]]:
    """Return the ids retention deletes (oldest first) and why it keeps the others."""
    decision = decide(
        backups,
        Policy(**rules),
        now=at(now),
        time_zone=time_zone,
        own=lambda backup: backup.owner == ME,
        keep=keep,
    )
    kept = {item.backup.backup_id: list(item.kept_by) for item in decision.kept}
    return [backup.backup_id for backup in decision.deleted], kept


def daily_at_three(first: int, last: int, month: str = "2026-01") -> list[Backup]:
    """One backup a day at 03:00 Berlin time, ids ``d<day>``."""
    return [
        Backup(f"d{day:02}", f"{month}-{day:02}T03:00:00+01:00")
        for day in range(first, last + 1)
    ]


# --- the rules one by one -----------------------------------------------------


def test_every_option_off_deletes_nothing() -> None:
    """All 0: nothing goes, and each backup says why it stays."""
    backups = daily_at_three(1, 5)
    deleted, kept = apply(backups, now="2027-06-01T12:00:00+02:00")
    assert deleted == []
    assert kept == {
        "d05": ["newest", "retention_off"],
        **{f"d0{day}": ["retention_off"] for day in range(1, 5)},
    }


def test_keep_count_keeps_the_newest() -> None:
    """The newest N stay; the rest go, oldest first."""
    deleted, kept = apply(
        daily_at_three(1, 5), now="2026-01-05T12:00:00+01:00", count=2
    )
    assert deleted == ["d01", "d02", "d03"]
    assert kept == {"d05": ["newest", "count"], "d04": ["count"]}


@pytest.mark.parametrize(
    ("date", "stays"),
    [
        ("2026-01-09T12:00:00+01:00", True),  # a day old
        ("2026-01-03T12:00:01+01:00", True),  # a second less than 7 days
        ("2026-01-03T12:00:00+01:00", True),  # exactly 7 days
        ("2026-01-03T11:59:59+01:00", False),  # a second more
        ("2025-12-01T12:00:00+01:00", False),
    ],
)
def test_keep_days_keeps_what_is_newer(date: str, stays: bool) -> None:
    """Newer than N days (or exactly N) stays; older goes."""
    newest = Backup("newest", "2026-01-10T11:00:00+01:00")
    deleted, kept = apply(
        [newest, Backup("probe", date)], now="2026-01-10T12:00:00+01:00", days=7
    )
    assert kept["newest"] == ["newest", "days"]
    if stays:
        assert (deleted, kept["probe"]) == ([], ["days"])
    else:
        assert (deleted, "probe" in kept) == (["probe"], False)


def test_the_newest_backup_is_always_kept() -> None:
    """Backups stopped a month ago: age alone does not empty the location."""
    backups = [
        Backup("last", "2026-01-01T03:00:00+01:00"),
        Backup("before", "2025-12-31T03:00:00+01:00"),
    ]
    deleted, kept = apply(backups, now="2026-02-01T12:00:00+01:00", days=7)
    assert deleted == ["before"]
    assert kept == {"last": ["newest"]}


def test_the_backup_just_created_is_kept() -> None:
    """``keep`` protects the backup the same create made, whatever its date."""
    backups = [
        Backup("ahead", "2026-01-10T03:00:00+01:00"),
        Backup("created", "2026-01-01T03:00:00+01:00"),
        Backup("old", "2025-12-01T03:00:00+01:00"),
    ]
    deleted, kept = apply(
        backups, now="2026-01-10T12:00:00+01:00", keep=("created",), count=1
    )
    assert deleted == ["old"]
    assert kept == {"ahead": ["newest", "count"], "created": ["just_created"]}


def test_any_rule_keeps_a_backup() -> None:
    """keep_count and keep_days together keep the union, not the intersection."""
    backups = daily_at_three(1, 10)
    deleted, kept = apply(backups, now="2026-01-10T12:00:00+01:00", count=5, days=2)
    # count keeps d06..d10; days (since 8 Jan 12:00) keeps d09, d10.
    assert deleted == ["d01", "d02", "d03", "d04", "d05"]
    assert kept["d10"] == ["newest", "count", "days"]
    assert kept["d09"] == ["count", "days"]
    assert kept["d06"] == ["count"]
    deleted, kept = apply(backups, now="2026-01-10T12:00:00+01:00", count=2, days=5)
    assert deleted == ["d01", "d02", "d03", "d04", "d05"]
    assert kept["d06"] == ["days"]


def test_several_backups_on_one_day() -> None:
    """Daily: the newest of each day; the others of that day go."""
    backups = [
        Backup("jan10-late", "2026-01-10T22:00:00+01:00"),
        Backup("jan10-noon", "2026-01-10T12:00:00+01:00"),
        Backup("jan10-early", "2026-01-10T00:05:00+01:00"),
        Backup("jan09-late", "2026-01-09T23:55:00+01:00"),
        Backup("jan09-early", "2026-01-09T01:00:00+01:00"),
        Backup("jan08", "2026-01-08T12:00:00+01:00"),
    ]
    deleted, kept = apply(backups, now="2026-01-10T23:00:00+01:00", daily=2)
    assert deleted == ["jan08", "jan09-early", "jan10-early", "jan10-noon"]
    assert kept == {"jan10-late": ["newest", "daily"], "jan09-late": ["daily"]}


def test_daily_counts_days_that_have_a_backup() -> None:
    """Gaps of several days: the last N days *with* a backup, not calendar days."""
    backups = [
        Backup("jan20", "2026-01-20T03:00:00+01:00"),
        Backup("jan14", "2026-01-14T03:00:00+01:00"),
        Backup("jan13", "2026-01-13T03:00:00+01:00"),
        Backup("jan02", "2026-01-02T03:00:00+01:00"),
        Backup("dec24", "2025-12-24T03:00:00+01:00"),
    ]
    deleted, kept = apply(backups, now="2026-01-31T12:00:00+01:00", daily=4)
    assert deleted == ["dec24"]
    assert list(kept) == ["jan20", "jan14", "jan13", "jan02"]
    assert all("daily" in why for why in kept.values())


def test_generations_keep_the_newest_of_each_period() -> None:
    """7 daily, 4 weekly, 12 monthly over a year of daily backups."""
    days = [date(2025, 1, 1) + timedelta(days=n) for n in range(365)]
    backups = [
        Backup(day.strftime("%m%d"), datetime.combine(day, time(3), BERLIN).isoformat())
        for day in days
    ]
    deleted, kept = apply(
        backups, now="2025-12-31T12:00:00+01:00", daily=7, weekly=4, monthly=12
    )

    def kept_by(rule: str) -> set[str]:
        return {key for key, why in kept.items() if rule in why}

    # 31 Dec 2025 is a Wednesday (ISO week 1 of 2026).
    assert kept_by("daily") == {f"12{day}" for day in range(25, 32)}
    # The newest of 2026-W01 (Wed 31), W52 (Sun 28), W51 (Sun 21), W50 (Sun 14).
    assert kept_by("weekly") == {"1231", "1228", "1221", "1214"}
    # The last day of each month.
    assert kept_by("monthly") == {
        (date(2025, month % 12 + 1, 1) - timedelta(days=1)).strftime("%m%d")
        for month in range(1, 13)
    }
    assert len(kept) == 7 + 2 + 11
    assert len(deleted) == 365 - len(kept)


# --- calendar boundaries in Home Assistant's time zone ----------------------------


@pytest.mark.parametrize(
    ("time_zone", "expected_deleted"),
    [
        # Berlin: 23:30 and 00:30 are two days.
        (BERLIN, ["jan13"]),
        # UTC: both are 22:30 and 23:30 on the 14th.
        (UTC, ["jan14-2330"]),
    ],
)
def test_day_boundary_is_local_midnight(
    time_zone: tzinfo, expected_deleted: list[str]
) -> None:
    """A day begins at midnight in the given time zone, not in UTC."""
    backups = [
        Backup("jan15-0030", "2026-01-15T00:30:00+01:00"),
        Backup("jan14-2330", "2026-01-14T23:30:00+01:00"),
        Backup("jan13", "2026-01-13T12:00:00+01:00"),
    ]
    deleted, _ = apply(
        backups, now="2026-01-15T12:00:00+01:00", time_zone=time_zone, daily=2
    )
    assert deleted == expected_deleted


def test_iso_week_begins_on_monday() -> None:
    """Sunday and the Monday after are two ISO weeks; Saturday and Sunday one."""
    backups = [
        Backup("mon12", "2026-01-12T12:00:00+01:00"),  # 2026-W03
        Backup("sun11", "2026-01-11T12:00:00+01:00"),  # 2026-W02
        Backup("sat10", "2026-01-10T12:00:00+01:00"),  # 2026-W02
        Backup("sun04", "2026-01-04T12:00:00+01:00"),  # 2026-W01
    ]
    deleted, kept = apply(backups, now="2026-01-12T13:00:00+01:00", weekly=2)
    assert deleted == ["sun04", "sat10"]
    assert kept == {"mon12": ["newest", "weekly"], "sun11": ["weekly"]}


def test_iso_week_spans_new_year() -> None:
    """ISO week 53 of 2026 runs from Monday 28 December to Sunday 3 January."""
    backups = [
        Backup("jan04", "2027-01-04T12:00:00+01:00"),  # 2027-W01
        Backup("jan01", "2027-01-01T12:00:00+01:00"),  # 2026-W53
        Backup("dec28", "2026-12-28T12:00:00+01:00"),  # 2026-W53
        Backup("dec21", "2026-12-21T12:00:00+01:00"),  # 2026-W52
        Backup("dec14", "2026-12-14T12:00:00+01:00"),  # 2026-W51
    ]
    deleted, kept = apply(backups, now="2027-01-04T13:00:00+01:00", weekly=3)
    assert deleted == ["dec14", "dec28"]
    assert list(kept) == ["jan04", "jan01", "dec21"]


def test_week_boundary_is_local_midnight() -> None:
    """Sunday 23:30 in Berlin is in the week before the Monday 00:30 after it."""
    backups = [
        Backup("mon", "2026-01-12T00:30:00+01:00"),  # Sunday 23:30 UTC
        Backup("sun", "2026-01-11T23:30:00+01:00"),
        Backup("sat", "2026-01-10T12:00:00+01:00"),
    ]
    deleted, kept = apply(backups, now="2026-01-12T12:00:00+01:00", weekly=2)
    assert deleted == ["sat"]
    assert list(kept) == ["mon", "sun"]


def test_month_boundary_is_local_midnight() -> None:
    """1 February 00:30 in Berlin is still 31 January in UTC."""
    backups = [
        Backup("feb01", "2026-02-01T00:30:00+01:00"),
        Backup("jan31", "2026-01-31T23:30:00+01:00"),
        Backup("jan15", "2026-01-15T12:00:00+01:00"),
        Backup("dec15", "2025-12-15T12:00:00+01:00"),
    ]
    deleted, kept = apply(backups, now="2026-02-01T12:00:00+01:00", monthly=2)
    assert deleted == ["dec15", "jan15"]
    assert kept == {"feb01": ["newest", "monthly"], "jan31": ["monthly"]}


def test_year_boundary_is_local_midnight() -> None:
    """New Year's Day 00:30 in Berlin is still New Year's Eve in UTC."""
    backups = [
        Backup("new-year", "2027-01-01T00:30:00+01:00"),
        Backup("eve", "2026-12-31T23:30:00+01:00"),
        Backup("june", "2026-06-01T12:00:00+02:00"),
        Backup("older", "2025-06-01T12:00:00+02:00"),
    ]
    deleted, kept = apply(backups, now="2027-01-01T12:00:00+01:00", yearly=3)
    assert deleted == ["june"]
    assert kept == {
        "new-year": ["newest", "yearly"],
        "eve": ["yearly"],
        "older": ["yearly"],
    }


# --- daylight-saving time -----------------------------------------------------


def test_days_across_the_spring_change() -> None:
    """Berlin moves from +01:00 to +02:00 on 29 March 2026 at 02:00.

    Asked in summer time, the days before the change still end at their own
    midnight (+01:00): a fixed offset would move 23:30 into the next day.
    """
    backups = [
        Backup("mar29-0030", "2026-03-29T00:30:00+01:00"),
        Backup("mar28-2330", "2026-03-28T23:30:00+01:00"),
        Backup("mar27", "2026-03-27T12:00:00+01:00"),
    ]
    deleted, kept = apply(backups, now="2026-04-05T12:00:00+02:00", daily=2)
    assert deleted == ["mar27"]
    assert list(kept) == ["mar29-0030", "mar28-2330"]


def test_days_across_the_autumn_change() -> None:
    """25 October 2026 has 25 hours in Berlin: 02:30 happens twice."""
    backups = [
        Backup("oct26-0030", "2026-10-26T00:30:00+01:00"),  # 25 Oct in UTC
        Backup("oct25-2330", "2026-10-25T23:30:00+01:00"),
        Backup("oct25-0230-second", "2026-10-25T02:30:00+01:00"),
        Backup("oct25-0230-first", "2026-10-25T02:30:00+02:00"),
        Backup("oct24-2330", "2026-10-24T23:30:00+02:00"),  # 24 Oct in UTC
    ]
    deleted, kept = apply(backups, now="2026-10-26T12:00:00+01:00", daily=3)
    assert deleted == ["oct25-0230-first", "oct25-0230-second"]
    assert list(kept) == ["oct26-0030", "oct25-2330", "oct24-2330"]


def test_keep_days_counts_calendar_days_across_the_change() -> None:
    """Seven days before noon on 30 March (+02:00) is noon on 23 March (+01:00).

    That is 167 hours, not 168: a backup at 11:30 on 23 March is older.
    """
    backups = [
        Backup("newest", "2026-03-30T11:00:00+02:00"),
        Backup("mar23-1230", "2026-03-23T12:30:00+01:00"),
        Backup("mar23-1130", "2026-03-23T11:30:00+01:00"),
    ]
    deleted, kept = apply(backups, now="2026-03-30T12:00:00+02:00", days=7)
    assert deleted == ["mar23-1130"]
    assert kept == {"newest": ["newest", "days"], "mar23-1230": ["days"]}


# --- whose backups ------------------------------------------------------------


def test_backups_of_others_are_kept_and_not_counted() -> None:
    """Another instance's and foreign backups stay and take no rule's place."""
    backups = [
        Backup("theirs-new", "2026-01-10T04:00:00+01:00", owner="other-instance"),
        Backup("mine-new", "2026-01-10T03:00:00+01:00"),
        Backup("foreign", "2026-01-09T04:00:00+01:00", owner=""),
        Backup("mine-mid", "2026-01-09T03:00:00+01:00"),
        Backup("mine-old", "2026-01-01T03:00:00+01:00"),
        Backup("theirs-old", "2025-01-01T03:00:00+01:00", owner="other-instance"),
    ]
    deleted, kept = apply(
        backups, now="2026-01-10T12:00:00+01:00", count=2, days=3, daily=2
    )
    assert deleted == ["mine-old"]
    assert kept == {
        "theirs-new": ["not_own"],
        "mine-new": ["newest", "count", "days", "daily"],
        "foreign": ["not_own"],
        "mine-mid": ["count", "days", "daily"],
        "theirs-old": ["not_own"],
    }


def test_only_backups_of_others() -> None:
    """With none of ours, nothing is deleted, whatever the rules."""
    backups = [Backup("theirs", "2020-01-01T03:00:00+01:00", owner="x")]
    deleted, kept = apply(backups, now="2026-01-10T12:00:00+01:00", count=1)
    assert (deleted, kept) == ([], {"theirs": ["not_own"]})


# --- dates in the future ------------------------------------------------------


def test_a_date_in_the_future_counts_as_now() -> None:
    """A backup dated 2099 does not push every new one out of keep_count."""
    backups = [
        Backup("planted", "2099-01-01T00:00:00+00:00"),
        Backup("today", "2026-01-10T03:00:00+01:00"),
        Backup("yesterday", "2026-01-09T03:00:00+01:00"),
    ]
    deleted, kept = apply(backups, now="2026-01-10T12:00:00+01:00", count=2, daily=1)
    assert deleted == ["yesterday"]
    # Ranked as made now, on today: today's newest, ahead of "today".
    assert kept == {"planted": ["newest", "count", "daily"], "today": ["count"]}


def test_decision_lists_every_backup_once() -> None:
    """Kept newest first and deleted oldest first, together all of them."""
    backups: list[Any] = daily_at_three(1, 9)
    backups.append(Backup("theirs", "2026-01-05T04:00:00+01:00", owner="x"))
    decision = decide(
        list(reversed(backups)),
        Policy(weekly=1),
        now=at("2026-01-09T12:00:00+01:00"),
        time_zone=BERLIN,
        own=lambda backup: backup.owner == ME,
    )
    kept = [item.backup for item in decision.kept]
    assert sorted(kept + decision.deleted, key=id) == sorted(backups, key=id)
    assert [b.date for b in kept] == sorted((b.date for b in kept), reverse=True)
    assert [b.date for b in decision.deleted] == sorted(
        b.date for b in decision.deleted
    )


def test_the_readme_example() -> None:
    """The README's worked example (daily 7, weekly 4, monthly 6) holds."""
    dates = [
        "2026-03-15 03:00", "2026-03-14 18:10", "2026-03-14 03:00",
        "2026-03-13 03:00", "2026-03-12 03:00", "2026-03-08 03:00",
        "2026-03-07 03:00", "2026-03-06 03:00", "2026-03-02 03:00",
        "2026-03-01 03:00", "2026-02-28 03:00", "2026-02-22 03:00",
        "2026-02-15 03:00", "2026-02-08 03:00", "2026-01-31 03:00",
        "2026-01-18 03:00", "2025-12-31 03:00", "2025-11-30 03:00",
        "2025-10-31 03:00", "2025-09-30 03:00",
    ]  # fmt: skip
    backups = [
        Backup(text, datetime.fromisoformat(text).replace(tzinfo=BERLIN).isoformat())
        for text in dates
    ]
    deleted, kept = apply(
        backups, now="2026-03-15T12:00:00+01:00", daily=7, weekly=4, monthly=6
    )
    assert deleted == [
        "2025-09-30 03:00",
        "2026-01-18 03:00",
        "2026-02-08 03:00",
        "2026-02-15 03:00",
        "2026-03-02 03:00",
        "2026-03-14 03:00",
    ]
    assert kept["2026-03-15 03:00"] == ["newest", "daily", "weekly", "monthly"]
    assert kept["2026-03-14 18:10"] == ["daily"]
    assert kept["2026-03-01 03:00"] == ["weekly"]
    assert kept["2025-12-31 03:00"] == ["monthly"]
    assert [key for key, why in kept.items() if "daily" in why] == [
        "2026-03-15 03:00",
        "2026-03-14 18:10",
        "2026-03-13 03:00",
        "2026-03-12 03:00",
        "2026-03-08 03:00",
        "2026-03-07 03:00",
        "2026-03-06 03:00",
    ]


def test_the_readme_example_of_count_and_days() -> None:
    """Keep 3 and 7 days: the newest 3 and the last week, not the intersection."""
    backups = [
        Backup("mar15", "2026-03-15T03:00:00+01:00"),
        Backup("mar01", "2026-03-01T03:00:00+01:00"),
        Backup("feb28", "2026-02-28T03:00:00+01:00"),
        Backup("feb27", "2026-02-27T03:00:00+01:00"),
    ]
    deleted, kept = apply(backups, now="2026-03-15T12:00:00+01:00", count=3, days=7)
    assert deleted == ["feb27"]
    assert kept == {
        "mar15": ["newest", "count", "days"],
        "mar01": ["count"],
        "feb28": ["count"],
    }
