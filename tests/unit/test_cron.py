"""Standard crontab semantics on top of APScheduler, checked against a known calendar.

December 2026: the 6th is a Sunday, the 7th a Monday. November 13th 2026 is a Friday.
"""

from __future__ import annotations

import datetime
import zoneinfo

import pytest
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from dramatiq_triggers.cron import CronError, has_seconds, latest_fire_time, parse_cron

UTC = datetime.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
TICK = datetime.timedelta(microseconds=1)


def at(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
    tz: datetime.tzinfo = UTC,
) -> datetime.datetime:
    return datetime.datetime(year, month, day, hour, minute, second, microsecond, tzinfo=tz)


def fires(expression: str, start: datetime.datetime, count: int, **kwargs: object) -> list:
    trigger = parse_cron(expression, **kwargs)  # type: ignore[arg-type]
    times = []
    cursor = start
    for _ in range(count):
        fire = trigger.get_next_fire_time(None, cursor)
        times.append(fire)
        cursor = fire + TICK
    return times


def days(expression: str, start: datetime.datetime, count: int) -> list[datetime.date]:
    return [fire.date() for fire in fires(expression, start, count)]


# Day of week


def test_zero_in_day_of_week_means_sunday() -> None:
    assert fires("0 0 * * 0", at(2026, 12, 7), 2) == [at(2026, 12, 13), at(2026, 12, 20)]


def test_seven_in_day_of_week_also_means_sunday() -> None:
    assert fires("0 0 * * 7", at(2026, 12, 7), 2) == [at(2026, 12, 13), at(2026, 12, 20)]


def test_one_in_day_of_week_means_monday() -> None:
    assert fires("0 0 * * 1", at(2026, 12, 1), 2) == [at(2026, 12, 7), at(2026, 12, 14)]


def test_six_in_day_of_week_means_saturday() -> None:
    assert fires("0 0 * * 6", at(2026, 12, 1), 1) == [at(2026, 12, 5)]


@pytest.mark.parametrize(
    ("name", "day"),
    [("sun", 6), ("MON", 7), ("Tue", 8), ("wed", 9), ("thu", 10), ("fri", 11), ("sAt", 12)],
)
def test_day_names_are_case_insensitive(name: str, day: int) -> None:
    assert fires(f"0 0 * * {name}", at(2026, 12, 6), 1) == [at(2026, 12, day)]


def test_mon_fri_skips_the_weekend() -> None:
    assert [d.day for d in days("0 9 * * mon-fri", at(2026, 12, 5), 6)] == [7, 8, 9, 10, 11, 14]


def test_numeric_weekday_range_uses_cron_numbering() -> None:
    assert [d.day for d in days("0 9 * * 1-5", at(2026, 12, 5), 6)] == [7, 8, 9, 10, 11, 14]


def test_step_over_day_of_week_starts_on_sunday() -> None:
    # */2 is Sunday, Tuesday, Thursday, Saturday.
    assert [d.day for d in days("0 0 * * */2", at(2026, 12, 6), 5)] == [6, 8, 10, 12, 13]


def test_range_ending_on_sunday_closes_the_week() -> None:
    assert [d.day for d in days("0 0 * * fri-sun", at(2026, 12, 7), 4)] == [11, 12, 13, 18]


def test_weekday_list_mixes_numbers_and_names() -> None:
    assert [d.day for d in days("0 0 * * 0,wed,6", at(2026, 12, 7), 4)] == [9, 12, 13, 16]


def test_full_weekday_range_fires_every_day() -> None:
    assert [d.day for d in days("0 0 * * 0-7", at(2026, 12, 6), 3)] == [6, 7, 8]


# Other fields


def test_month_names_and_ranges_are_accepted() -> None:
    assert days("0 0 1 JUN-aug *", at(2026, 12, 6), 3) == [
        datetime.date(2027, 6, 1),
        datetime.date(2027, 7, 1),
        datetime.date(2027, 8, 1),
    ]


def test_ranges_steps_and_lists_combine_in_one_field() -> None:
    assert [f.minute for f in fires("0-10/5,30,*/20 * * * *", at(2026, 12, 6), 6)] == [
        0,
        5,
        10,
        20,
        30,
        40,
    ]


def test_start_and_step_runs_to_the_end_of_the_field() -> None:
    assert [f.hour for f in fires("0 20/2 * * *", at(2026, 12, 6), 3)] == [20, 22, 20]


def test_five_fields_fire_at_second_zero() -> None:
    assert fires("15 10 * * *", at(2026, 12, 6), 1) == [at(2026, 12, 6, 10, 15, 0)]


def test_six_fields_put_the_seconds_first() -> None:
    assert fires("30 15 10 * * *", at(2026, 12, 6), 2) == [
        at(2026, 12, 6, 10, 15, 30),
        at(2026, 12, 7, 10, 15, 30),
    ]


def test_every_second_fires_every_second() -> None:
    start = at(2026, 12, 6, 12, 0, 0)
    assert fires("* * * * * *", start, 3) == [
        start,
        start + datetime.timedelta(seconds=1),
        start + datetime.timedelta(seconds=2),
    ]


def test_has_seconds_is_true_only_for_the_six_field_form() -> None:
    assert has_seconds("0 * * * * *")
    assert not has_seconds("* * * * *")
    assert not has_seconds("@hourly")


def test_surrounding_whitespace_is_ignored() -> None:
    assert fires("  0 0 * * 0\n", at(2026, 12, 7), 1) == [at(2026, 12, 13)]


# Macros


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@yearly", at(2027, 1, 1)),
        ("@annually", at(2027, 1, 1)),
        ("@monthly", at(2027, 1, 1)),
        ("@weekly", at(2026, 12, 13)),
        ("@daily", at(2026, 12, 8)),
        ("@midnight", at(2026, 12, 8)),
        ("@hourly", at(2026, 12, 7, 11)),
        ("@DAILY", at(2026, 12, 8)),
    ],
)
def test_macros_fire_when_cron_would(macro: str, expected: datetime.datetime) -> None:
    assert fires(macro, at(2026, 12, 7, 10, 30), 1) == [expected]


def test_weekly_macro_fires_on_sunday_at_midnight() -> None:
    assert fires("@weekly", at(2026, 12, 6, 0, 0, 1), 2) == [at(2026, 12, 13), at(2026, 12, 20)]


# Day of month OR day of week


def test_day_of_month_and_day_of_week_both_restricted_fire_on_either() -> None:
    # Every Friday, every 13th, and Friday the 13th only once.
    assert [d.isoformat() for d in days("0 0 13 * 5", at(2026, 11, 1), 8)] == [
        "2026-11-06",
        "2026-11-13",
        "2026-11-20",
        "2026-11-27",
        "2026-12-04",
        "2026-12-11",
        "2026-12-13",
        "2026-12-18",
    ]


def test_both_days_restricted_gives_an_or_trigger() -> None:
    assert isinstance(parse_cron("0 0 13 * 5"), OrTrigger)


@pytest.mark.parametrize("expression", ["0 0 13 * *", "0 0 * * 5", "* * * * *", "@weekly"])
def test_one_day_field_unrestricted_gives_a_single_cron_trigger(expression: str) -> None:
    assert isinstance(parse_cron(expression), CronTrigger)


def test_day_of_month_starting_with_star_is_anded_like_cron_does() -> None:
    # Odd days of the month that are Mondays, as in Vixie cron and cronie.
    assert [d.isoformat() for d in days("0 0 */2 * 1", at(2026, 12, 1), 3)] == [
        "2026-12-07",
        "2026-12-21",
        "2027-01-11",
    ]


def test_either_day_rule_still_respects_month_and_time() -> None:
    assert fires("30 6 13 jan fri", at(2026, 12, 1), 3) == [
        at(2027, 1, 1, 6, 30),
        at(2027, 1, 8, 6, 30),
        at(2027, 1, 13, 6, 30),
    ]


def test_leap_day_is_accepted() -> None:
    assert days("0 0 29 2 *", at(2026, 12, 6), 1) == [datetime.date(2028, 2, 29)]


# Time zones


def test_cron_in_paris_fires_at_the_paris_instant_in_winter() -> None:
    fire = fires("0 9 * * *", at(2026, 12, 6), 1, timezone="Europe/Paris")[0]
    assert fire == at(2026, 12, 6, 8)
    assert fire.astimezone(PARIS).hour == 9


def test_cron_in_paris_follows_summer_time() -> None:
    assert fires("0 9 * * *", at(2027, 7, 1), 1, timezone="Europe/Paris") == [at(2027, 7, 1, 7)]


def test_timezone_can_be_a_tzinfo_object() -> None:
    assert fires("0 9 * * *", at(2026, 12, 6), 1, timezone=PARIS) == [at(2026, 12, 6, 8)]


def test_timezone_applies_to_both_halves_of_the_either_day_rule() -> None:
    # 00:30 Paris on Friday 4 December and on Sunday the 13th is 23:30 UTC the day before.
    assert fires("30 0 13 * fri", at(2026, 12, 1), 2, timezone="Europe/Paris") == [
        at(2026, 12, 3, 23, 30),
        at(2026, 12, 10, 23, 30),
    ]


def test_default_timezone_is_utc() -> None:
    assert fires("0 9 * * *", at(2026, 12, 6), 1) == [at(2026, 12, 6, 9)]


# Errors


def test_cron_error_is_a_value_error() -> None:
    assert issubclass(CronError, ValueError)


@pytest.mark.parametrize(("expression", "count"), [("* * * *", 4), ("* * * * * * *", 7)])
def test_wrong_field_count_names_the_count_and_both_forms(expression: str, count: int) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expression)
    message = str(info.value)
    assert repr(expression) in message
    assert f"has {count} fields" in message
    assert "minute hour day-of-month month day-of-week" in message
    assert "second minute hour day-of-month month day-of-week" in message


@pytest.mark.parametrize("expression", ["", "   "])
def test_empty_expression_is_an_error(expression: str) -> None:
    with pytest.raises(CronError, match="is empty"):
        parse_cron(expression)


@pytest.mark.parametrize(
    ("expression", "field", "allowed"),
    [
        ("60 * * * * *", "second", "0-59"),
        ("60 * * * *", "minute", "0-59"),
        ("0 24 * * *", "hour", "0-23"),
        ("0 0 0 * *", "day-of-month", "1-31"),
        ("0 0 32 * *", "day-of-month", "1-31"),
        ("0 0 * 13 *", "month", "1-12 or jan-dec"),
        ("0 0 * 0 *", "month", "1-12 or jan-dec"),
        ("0 0 * * 8", "day-of-week", "0-7"),
        ("0 0 * * 1-9", "day-of-week", "0-7"),
    ],
)
def test_out_of_range_value_names_the_field_and_its_range(
    expression: str, field: str, allowed: str
) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expression)
    message = str(info.value)
    assert repr(expression) in message
    assert f"{field} value" in message
    assert "out of range" in message
    assert allowed in message


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("abc * * * *", "'abc' in the minute field is not a number; use 0-59"),
        ("0 0 * foo *", "'foo' in the month field is not a number or a name; use 1-12"),
        ("0 0 * * funday", "'funday' in the day-of-week field is not a number or a name"),
        ("0 0 * * jan", "'jan' in the day-of-week field"),
        ("0 mon * * *", "'mon' in the hour field is not a number"),
        ("0 0 L * *", "'L' in the day-of-month field"),
        ("-1 * * * *", "'' in the minute field is not a number"),
        ("1-2-3 * * * *", "'1-2-3' in the minute field is not a range"),
        ("1,,2 * * * *", "the minute field has an empty item"),
        ("*/0 * * * *", "step '0' in the minute field is not a positive whole number"),
        ("*/x * * * *", "step 'x' in the minute field is not a positive whole number"),
        ("*/2/3 * * * *", "step '2/3'"),
        ("*/90 * * * *", "step 90 in the minute field is larger than the field"),
        ("30-10 * * * *", "range '30-10' in the minute field runs backwards"),
        ("0 22-2 * * *", "'22-23,0-2'"),
        ("0 0 * * 5-1", "'5-7,0-1'"),
        ("0 0 * * sat-mon", "'sat-7,0-mon'"),
        ("0 0 30 2 *", "day-of-month 30 never occurs"),
        ("0 0 31 apr,jun *", "day-of-month 31 never occurs"),
        ("@fortnightly", "'@fortnightly' is not a known macro; use one of @annually"),
        ("@reboot", "@reboot is not a schedule"),
    ],
)
def test_garbage_is_an_error_that_says_what_is_wrong(expression: str, fragment: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expression)
    message = str(info.value)
    assert message.startswith(f"Cron expression {expression!r} is invalid: ")
    assert fragment in message
    assert message.endswith(".")


def test_unknown_timezone_is_an_error() -> None:
    with pytest.raises(CronError) as info:
        parse_cron("0 0 * * *", timezone="Mars/Olympus_Mons")
    message = str(info.value)
    assert "'0 0 * * *'" in message
    assert "'Mars/Olympus_Mons'" in message
    assert "Europe/Paris" in message


def test_malformed_timezone_name_is_an_error() -> None:
    with pytest.raises(CronError, match="not a known IANA time zone"):
        parse_cron("0 0 * * *", timezone="../etc/passwd")


def test_impossible_day_of_month_is_fine_when_the_day_of_week_can_fire() -> None:
    # Standard cron: Mondays in February, plus the (non-existent) 30th.
    assert days("0 0 30 2 1", at(2026, 12, 6), 1) == [datetime.date(2027, 2, 1)]


# latest_fire_time


def test_latest_fire_time_finds_the_last_tick_in_the_window() -> None:
    trigger = parse_cron("0 * * * *")
    now = at(2026, 12, 6, 10, 30)
    assert latest_fire_time(trigger, now, within=datetime.timedelta(hours=2)) == at(2026, 12, 6, 10)


def test_latest_fire_time_is_none_when_nothing_fires_in_the_window() -> None:
    trigger = parse_cron("0 * * * *")
    now = at(2026, 12, 6, 10, 30)
    assert latest_fire_time(trigger, now, within=datetime.timedelta(minutes=20)) is None


def test_latest_fire_time_includes_now() -> None:
    trigger = parse_cron("0 * * * *")
    now = at(2026, 12, 6, 10)
    assert latest_fire_time(trigger, now, within=datetime.timedelta(minutes=1)) == now


def test_latest_fire_time_excludes_the_start_of_the_window() -> None:
    trigger = parse_cron("0 * * * *")
    now = at(2026, 12, 6, 10, 30)
    assert latest_fire_time(trigger, now, within=datetime.timedelta(minutes=30)) is None
    assert latest_fire_time(trigger, now, within=datetime.timedelta(minutes=31)) == at(
        2026, 12, 6, 10
    )


def test_latest_fire_time_truncates_to_the_second_for_every_second() -> None:
    trigger = parse_cron("* * * * * *")
    now = at(2026, 12, 6, 10, 30, 15, 250_000)
    assert latest_fire_time(trigger, now, within=datetime.timedelta(seconds=60)) == at(
        2026, 12, 6, 10, 30, 15
    )


def test_latest_fire_time_is_the_same_anywhere_within_one_tick() -> None:
    trigger = parse_cron("*/5 * * * *")
    window = datetime.timedelta(minutes=5)
    seen = {
        latest_fire_time(trigger, at(2026, 12, 6, 10, 5) + offset, within=window)
        for offset in (datetime.timedelta(0), datetime.timedelta(minutes=2, seconds=31))
    }
    assert seen == {at(2026, 12, 6, 10, 5)}


def test_latest_fire_time_works_through_the_either_day_rule() -> None:
    trigger = parse_cron("0 0 13 * 5")
    now = at(2026, 12, 14, 12)
    assert latest_fire_time(trigger, now, within=datetime.timedelta(days=7)) == at(2026, 12, 13)


def test_latest_fire_time_accepts_now_in_another_timezone() -> None:
    trigger = parse_cron("0 9 * * *", timezone="Europe/Paris")
    now = at(2026, 12, 6, 9, 30, tz=PARIS)
    assert latest_fire_time(trigger, now, within=datetime.timedelta(hours=1)) == at(2026, 12, 6, 8)


class CountingTrigger:
    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0

    def get_next_fire_time(
        self, previous: datetime.datetime | None, now: datetime.datetime
    ) -> datetime.datetime | None:
        self.calls += 1
        return self.inner.get_next_fire_time(previous, now)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("expression", "within"),
    [
        ("* * * * * *", datetime.timedelta(seconds=60)),
        ("* * * * * *", datetime.timedelta(days=1)),
        ("0 0 * * *", datetime.timedelta(days=1)),
    ],
)
def test_latest_fire_time_takes_few_steps(expression: str, within: datetime.timedelta) -> None:
    trigger = CountingTrigger(parse_cron(expression))
    now = at(2026, 12, 6, 10, 30, 15, 250_000)
    assert latest_fire_time(trigger, now, within=within) is not None
    assert trigger.calls <= 60


def test_latest_fire_time_with_an_empty_window_is_none() -> None:
    trigger = parse_cron("* * * * * *")
    now = at(2026, 12, 6, 10)
    assert latest_fire_time(trigger, now, within=datetime.timedelta(0)) is None


def test_latest_fire_time_rejects_a_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        latest_fire_time(
            parse_cron("* * * * *"),
            datetime.datetime(2026, 12, 6, 10),
            within=datetime.timedelta(minutes=1),
        )
