"""The time module on its own: send moments across DST in both directions, gaps, folds."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from workflows import timing

PARIS = "Europe/Paris"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(moment: datetime, tz: str) -> str:
    return moment.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %z")


def test_first_touchpoint_goes_out_today_when_its_time_is_still_ahead() -> None:
    entered = utc(2027, 3, 10, 7, 0)  # 08:00 in Paris
    assert (
        local(timing.first_send_at(entered, time(9, 0), PARIS), PARIS) == "2027-03-10 09:00 +0100"
    )


def test_first_touchpoint_waits_for_tomorrow_when_its_time_has_passed() -> None:
    entered = utc(2027, 3, 10, 8, 0)  # exactly 09:00 in Paris: not ahead any more
    assert (
        local(timing.first_send_at(entered, time(9, 0), PARIS), PARIS) == "2027-03-11 09:00 +0100"
    )


def test_first_touchpoint_uses_the_local_date_not_the_utc_date() -> None:
    entered = utc(2027, 3, 10, 23, 30)  # already 00:30 on the 11th in Paris
    assert (
        local(timing.first_send_at(entered, time(9, 0), PARIS), PARIS) == "2027-03-11 09:00 +0100"
    )


def test_nine_stays_nine_across_the_end_of_daylight_saving_time() -> None:
    previous = utc(2027, 10, 29, 7, 0)  # Friday 09:00 CEST
    due = timing.next_send_at(previous, 3, time(9, 0), PARIS)
    assert due == utc(2027, 11, 1, 8, 0)  # Monday 09:00 CET: 73 hours later, not 72
    assert local(due, PARIS) == "2027-11-01 09:00 +0100"


def test_nine_stays_nine_across_the_start_of_daylight_saving_time() -> None:
    previous = utc(2027, 3, 26, 8, 0)  # Friday 09:00 CET
    due = timing.next_send_at(previous, 3, time(9, 0), PARIS)
    assert due == utc(2027, 3, 29, 7, 0)  # Monday 09:00 CEST: 71 hours later
    assert local(due, PARIS) == "2027-03-29 09:00 +0200"


def test_a_time_that_does_not_exist_moves_forward_to_the_first_that_does() -> None:
    # 2027-03-28 in Paris: 02:00 jumps to 03:00, so 02:30 does not exist that day.
    due = timing.next_send_at(utc(2027, 3, 27, 1, 30), 1, time(2, 30), PARIS)
    assert local(due, PARIS) == "2027-03-28 03:00 +0200"
    assert due == utc(2027, 3, 28, 1, 0)


def test_a_time_that_occurs_twice_is_its_first_occurrence() -> None:
    # 2027-10-31 in Paris: 03:00 goes back to 02:00, so 02:30 happens twice.
    due = timing.next_send_at(utc(2027, 10, 30, 0, 30), 1, time(2, 30), PARIS)
    assert due == utc(2027, 10, 31, 0, 30)  # 02:30 CEST, not 02:30 CET an hour later
    assert local(due, PARIS) == "2027-10-31 02:30 +0200"


def test_new_york_keeps_its_local_time_across_both_changes() -> None:
    tz = "America/New_York"
    spring = timing.next_send_at(utc(2027, 3, 13, 14, 0), 1, time(9, 0), tz)
    autumn = timing.next_send_at(utc(2027, 11, 6, 13, 0), 1, time(9, 0), tz)
    assert (local(spring, tz), local(autumn, tz)) == (
        "2027-03-14 09:00 -0400",
        "2027-11-07 09:00 -0500",
    )


def test_half_hour_zones_and_their_gaps() -> None:
    # Adelaide (+10:30 / +09:30) moves clocks forward from 02:00 to 03:00 on 2027-10-03.
    tz = "Australia/Adelaide"
    due = timing.next_send_at(utc(2027, 10, 1, 22, 0), 1, time(2, 15), tz)
    assert local(due, tz) == "2027-10-03 03:00 +1030"
    # India has no DST: 09:00 IST is 03:30 UTC every day.
    assert timing.next_send_at(utc(2027, 1, 1), 30, time(9, 0), "Asia/Kolkata") == utc(
        2027, 1, 31, 3, 30
    )


@pytest.mark.parametrize("days", [1, 7, 30, 100])
def test_intervals_count_calendar_days_in_the_local_zone(days: int) -> None:
    previous = utc(2027, 1, 15, 8, 0)  # 09:00 CET
    due = timing.next_send_at(previous, days, time(9, 0), PARIS)
    expected_day = (previous.astimezone(ZoneInfo(PARIS)) + timedelta(days=days)).date()
    assert due.astimezone(ZoneInfo(PARIS)).date() == expected_day
    assert due.astimezone(ZoneInfo(PARIS)).time() == time(9, 0)


def test_resume_continues_the_wait_then_snaps_to_the_send_time_of_that_day() -> None:
    # Paused with 2 days and 1 hour left; resumed on the 10th at 15:00 local.
    resumed = utc(2027, 2, 10, 14, 0)
    due = timing.resume_send_at(timedelta(days=2, hours=1), resumed, time(9, 0), PARIS)
    # The wait ends on the 12th at 16:00: that day's send time.
    assert local(due, PARIS) == "2027-02-12 09:00 +0100"


def test_a_pause_a_little_over_whole_days_keeps_the_day() -> None:
    paused, due_before = utc(2027, 2, 1, 11, 0), utc(2027, 2, 3, 8, 0)
    resumed = paused + timedelta(days=4, seconds=1)
    due = timing.resume_send_at(due_before - paused, resumed, time(9, 0), PARIS)
    assert local(due, PARIS) == "2027-02-07 09:00 +0100"


def test_resume_of_a_whole_number_of_days_lands_on_the_send_time() -> None:
    paused, due_before = utc(2027, 2, 1, 8, 0), utc(2027, 2, 4, 8, 0)
    resumed = paused + timedelta(days=5)
    assert timing.resume_send_at(due_before - paused, resumed, time(9, 0), PARIS) == (
        due_before + timedelta(days=5)
    )


def test_resume_after_the_send_was_due_goes_out_at_the_next_send_time_not_at_once() -> None:
    resumed = utc(2027, 2, 10, 14, 0)  # 15:00 local
    due = timing.resume_send_at(timedelta(hours=-3), resumed, time(9, 0), PARIS)
    assert local(due, PARIS) == "2027-02-11 09:00 +0100"


def test_local_label_reads_like_a_person_writes_it() -> None:
    assert timing.local_label(utc(2027, 3, 29, 7, 0), PARIS) == "2027-03-29 09:00 Europe/Paris"


def test_a_delay_in_days_keeps_the_local_time_across_dst_and_one_in_hours_does_not() -> None:
    # Friday 27 March 2026 10:00 in Paris; clocks go forward on Sunday the 29th.
    moved = datetime(2026, 3, 27, 9, 0, tzinfo=UTC)
    assert local(timing.after_days(moved, 3, PARIS), PARIS) == "2026-03-30 10:00 +0200"
    assert local(timing.after_hours(moved, 72), PARIS) == "2026-03-30 11:00 +0200"
