"""Standard crontab expressions turned into APScheduler 3 triggers.

APScheduler counts weekdays from Monday and ANDs day-of-month with day-of-week; this module
gives users the crontab they know (0 and 7 are Sunday, the two day fields are ORed).
"""

from __future__ import annotations

import datetime
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

__all__ = ["CronError", "has_seconds", "latest_fire_time", "parse_cron"]


class CronError(ValueError):
    """A crontab expression that cannot be parsed.

    The message says what is wrong and how to write it.
    """


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    # Upper bound for `*` and `n/step`; differs from `high` only for day-of-week, where 7 is
    # just another spelling of Sunday.
    open_high: int
    names: dict[str, int] = field(default_factory=dict)
    hint: str = ""

    def allowed(self) -> str:
        return self.hint or f"{self.low}-{self.high}"


_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# APScheduler's day_of_week names, in its own order (index 0 is Monday).
_APS_DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# February gets 29 so that leap-day schedules are accepted.
_DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

_SECOND = _Field("second", 0, 59, 59)
_MINUTE = _Field("minute", 0, 59, 59)
_HOUR = _Field("hour", 0, 23, 23)
_DAY_OF_MONTH = _Field("day-of-month", 1, 31, 31)
_MONTH = _Field(
    "month",
    1,
    12,
    12,
    names={name: number for number, name in enumerate(_MONTH_NAMES, start=1)},
    hint="1-12 or jan-dec",
)
_DAY_OF_WEEK = _Field(
    "day-of-week",
    0,
    7,
    6,
    names={name: number for number, name in enumerate(_DAY_NAMES)},
    hint="0-7 (0 and 7 are Sunday, 1 is Monday) or sun-sat",
)

_SIX_FIELDS = (_SECOND, _MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FORMS = (
    "write 5 fields, 'minute hour day-of-month month day-of-week' (e.g. '30 2 * * mon-fri'), "
    "or 6 fields with the seconds first, 'second minute hour day-of-month month day-of-week' "
    "(e.g. '0 30 2 * * mon-fri')"
)


def _error(expression: str, detail: str) -> CronError:
    return CronError(f"Cron expression {expression!r} is invalid: {detail}")


def _parse_value(expression: str, text: str, spec: _Field) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
    elif text.lower() in spec.names:
        value = spec.names[text.lower()]
    else:
        kind = "a number or a name" if spec.names else "a number"
        raise _error(
            expression,
            f"{text!r} in the {spec.name} field is not {kind}; use {spec.allowed()}.",
        )
    if not spec.low <= value <= spec.high:
        raise _error(
            expression,
            f"{spec.name} value {value} is out of range; use {spec.allowed()}.",
        )
    return value


def _parse_item(expression: str, item: str, spec: _Field) -> set[int]:
    if not item:
        raise _error(
            expression,
            f"the {spec.name} field has an empty item; remove the stray comma.",
        )
    base, has_step, step_text = item.partition("/")
    step = 1
    if has_step:
        if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
            raise _error(
                expression,
                f"step {step_text!r} in the {spec.name} field is not a positive whole number; "
                "write steps like '*/15' or '0-30/5'.",
            )
        step = int(step_text)
        span = spec.open_high - spec.low + 1
        if step > span:
            # A step cannot carry over into the next hour/day/...: '*/90' in minutes would
            # silently mean 'at minute 0', which is never what the author wanted.
            raise _error(
                expression,
                f"step {step} in the {spec.name} field is larger than the field itself "
                f"({spec.low}-{spec.open_high}); use a step of at most {span}, or several "
                "schedules.",
            )

    if base == "*":
        first, last = spec.low, spec.open_high
    elif "-" in base:
        if base.count("-") > 1:
            raise _error(
                expression,
                f"{base!r} in the {spec.name} field is not a range; write a range as "
                "first-last, e.g. 1-5.",
            )
        first_text, _, last_text = base.partition("-")
        first = _parse_value(expression, first_text, spec)
        last = _parse_value(expression, last_text, spec)
        if spec is _DAY_OF_WEEK and last == 0 and first > 0:
            # 'fri-sun' / '5-0': Sunday at the end of a range is the 7 that closes the week.
            last = 7
        if first > last:
            raise _error(
                expression,
                f"range {base!r} in the {spec.name} field runs backwards; write it from low "
                "to high, or split a range that wraps around into two, e.g. "
                f"'{first_text}-{spec.high},{spec.low}-{last_text}'.",
            )
    else:
        first = _parse_value(expression, base, spec)
        # 'n/step' means from n to the end of the field, as in APScheduler and Quartz.
        last = spec.open_high if has_step else first
    return set(range(first, last + 1, step))


def _parse_field(expression: str, text: str, spec: _Field) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        values |= _parse_item(expression, item, spec)
    return values


def _numbers(values: set[int], spec: _Field) -> str:
    if values == set(range(spec.low, spec.high + 1)):
        return "*"
    return ",".join(str(value) for value in sorted(values))


def _weekdays(values: set[int]) -> str:
    # Cron day d (0 or 7 = Sunday) is APScheduler day (d - 1) mod 7 (0 = Monday).
    indexes = {(value - 1) % 7 for value in values}
    if len(indexes) == 7:
        return "*"
    return ",".join(_APS_DAY_NAMES[index] for index in sorted(indexes))


def _resolve_timezone(expression: str, timezone: str | datetime.tzinfo) -> datetime.tzinfo:
    if isinstance(timezone, datetime.tzinfo):
        return timezone
    if timezone == "UTC":
        # Works even where the system has no tz database.
        return datetime.timezone.utc
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CronError(
            f"Cron expression {expression!r} cannot use the time zone {timezone!r}: it is not a "
            "known IANA time zone name; use a name such as 'UTC' or 'Europe/Paris'."
        ) from None


def _expand_macro(expression: str, text: str) -> str:
    lowered = text.lower()
    if lowered in _MACROS:
        return _MACROS[lowered]
    if lowered == "@reboot":
        raise _error(
            expression,
            "@reboot is not a schedule and is not supported; run the job from your start-up "
            "code instead.",
        )
    raise _error(
        expression,
        f"{text!r} is not a known macro; use one of {', '.join(sorted(_MACROS))}, or {_FORMS}.",
    )


def has_seconds(expression: str) -> bool:
    """Whether `expression` is in the 6-field form, with seconds first (macros are not)."""
    return len(expression.split()) == 6


def parse_cron(expression: str, *, timezone: str | datetime.tzinfo = "UTC") -> BaseTrigger:
    """Build the APScheduler trigger that fires when standard cron would run `expression`.

    Accepts 5 fields (`minute hour day-of-month month day-of-week`), 6 fields with seconds
    first, or a macro such as `@daily`. Day of week 0 and 7 are Sunday. When both the
    day-of-month and day-of-week fields are restricted (do not start with `*`, as in cron),
    the schedule fires on days matching either, through an `OrTrigger`.
    """
    text = expression.strip()
    if not text:
        raise _error(expression, "it is empty; " + _FORMS + ".")
    if text.startswith("@"):
        text = _expand_macro(expression, text)

    parts = text.split()
    if len(parts) == 5:
        # Cron's 5-field form runs at second 0 of the minute.
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise _error(expression, f"it has {len(parts)} fields; " + _FORMS + ".")

    second, minute, hour, day, month, weekday = (
        _parse_field(expression, part, spec) for part, spec in zip(parts, _SIX_FIELDS, strict=True)
    )
    # Cron's rule for "restricted": the field does not start with '*' (so '*/2' still counts
    # as unrestricted and is ANDed, exactly as Vixie cron and cronie do).
    day_restricted = not parts[3].startswith("*")
    weekday_restricted = not parts[5].startswith("*")
    either_day = day_restricted and weekday_restricted

    if not either_day and max(_DAYS_IN_MONTH[m - 1] for m in month) < min(day):
        raise _error(
            expression,
            f"day-of-month {min(day)} never occurs in the chosen month(s), so it would never "
            "fire; pick days that exist in those months.",
        )

    tz = _resolve_timezone(expression, timezone)
    common: dict[str, Any] = {
        "second": _numbers(second, _SECOND),
        "minute": _numbers(minute, _MINUTE),
        "hour": _numbers(hour, _HOUR),
        "month": _numbers(month, _MONTH),
        "timezone": tz,
    }
    days = _numbers(day, _DAY_OF_MONTH)
    weekdays = _weekdays(weekday)
    try:
        if either_day:
            return OrTrigger(
                [
                    CronTrigger(day=days, day_of_week="*", **common),
                    CronTrigger(day="*", day_of_week=weekdays, **common),
                ]
            )
        return CronTrigger(day=days, day_of_week=weekdays, **common)
    except ValueError as exc:
        raise _error(expression, f"APScheduler rejected it ({exc}); " + _FORMS + ".") from exc


def _walk(
    trigger: BaseTrigger,
    start: datetime.datetime,
    after: datetime.datetime,
    now: datetime.datetime,
) -> datetime.datetime | None:
    """The last fire time in (after, now], scanning forward from `start` (>= after)."""
    latest = None
    cursor = start
    while True:
        fire = trigger.get_next_fire_time(None, cursor)
        if fire is None or fire > now:
            return latest
        if fire > after:
            latest = fire
        # get_next_fire_time returns fire times >= cursor; step past this one.
        cursor = fire + datetime.timedelta(microseconds=1)


def latest_fire_time(
    trigger: BaseTrigger, now: datetime.datetime, *, within: datetime.timedelta
) -> datetime.datetime | None:
    """The latest fire time of `trigger` that is <= `now` and > now - within, or None.

    (Used to name the tick a job run belongs to, so that several processes compute the same
    tick.) `now` must be timezone-aware.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(
            "latest_fire_time needs a timezone-aware `now`; pass e.g. datetime.now(timezone.utc)."
        )
    if within <= datetime.timedelta(0):
        return None
    after = now - within
    # APScheduler can only search forwards, so look back over a window that doubles until it
    # holds a fire time: a few calls whether the trigger fires every second or once a day.
    span = datetime.timedelta(seconds=1)
    while True:
        start = max(now - span, after)
        latest = _walk(trigger, start, after, now)
        if latest is not None or start == after:
            return latest
        span *= 2
