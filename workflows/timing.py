"""When a touchpoint goes out: pure arithmetic on aware datetimes, across DST, no I/O.

Every function takes its `now` or `previous` as an argument (workflow.now() in workflows,
the API's clock in the API, fixed datetimes in tests) and answers an aware UTC datetime.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# A DST gap is at most a few hours; a day bounds the search for the first existing minute.
_MAX_GAP = timedelta(days=1)


def _exists(local: datetime) -> bool:
    """A wall time exists in its zone when it survives a round trip through UTC."""
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def local_moment(day: date, at: time, tz: str) -> datetime:
    """The UTC instant of `at` on `day` in `tz`.

    A wall time that occurs twice (the fold when clocks go back) is its first occurrence;
    one that does not exist (the gap when clocks go forward) moves forward to the first
    minute of that day that does.
    """
    zone = ZoneInfo(tz)
    local = datetime.combine(day, at, tzinfo=zone).replace(fold=0)
    limit = local + _MAX_GAP
    while not _exists(local) and local < limit:
        local += timedelta(minutes=1)
    return local.astimezone(UTC)


def first_send_at(entered_at: datetime, at: time, tz: str) -> datetime:
    """The first touchpoint: at its send time on the first day that moment is still ahead."""
    day = entered_at.astimezone(ZoneInfo(tz)).date()
    moment = local_moment(day, at, tz)
    if moment <= entered_at:
        moment = local_moment(day + timedelta(days=1), at, tz)
    return moment


def next_send_at(previous: datetime, interval_days: int, at: time, tz: str) -> datetime:
    """A later touchpoint: `interval_days` calendar days after the previous one's local
    date, at its own send time (09:00 stays 09:00 local across DST)."""
    day = previous.astimezone(ZoneInfo(tz)).date() + timedelta(days=interval_days)
    return local_moment(day, at, tz)


def resume_send_at(remaining: timedelta, resumed_at: datetime, at: time, tz: str) -> datetime:
    """After a pause: the wait that was left continues from the resume, then snaps to the
    send time of the day it ends on; never before the resume itself, so a touchpoint that
    fell due during the pause goes out at its next send time, not at once."""
    due = resumed_at + max(remaining, timedelta(0))
    day = due.astimezone(ZoneInfo(tz)).date()
    moment = local_moment(day, at, tz)
    if moment <= resumed_at:
        moment = local_moment(day + timedelta(days=1), at, tz)
    return moment


def local_label(moment: datetime, tz: str) -> str:
    """`2027-03-29 09:00 Europe/Paris`: how a send moment reads to a person."""
    return f"{moment.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M} {tz}"


def after_hours(moment: datetime, hours: int) -> datetime:
    """`hours` of elapsed time later (a DST change does not stretch or shrink them)."""
    return moment + timedelta(hours=hours)


def after_days(moment: datetime, days: int, tz: str) -> datetime:
    """`days` calendar days later at the same local time in `tz`: a move at 10:00 has its
    3-day action at 10:00, across DST too."""
    local = moment.astimezone(ZoneInfo(tz))
    return local_moment(local.date() + timedelta(days=days), local.time().replace(tzinfo=None), tz)
