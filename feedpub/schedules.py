"""A newsletter's cron expression, read with cron's meaning on top of APScheduler 3.

A leaf module: config validates schedules with it at load, and digest and
scheduler turn them into slots and triggers. APScheduler is imported by
:func:`parse_schedule`, not with this module, so that importing the settings
(and every build worker that reads posts) does not load it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from feedpub.errors import ConfigError

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

_SLOT_WINDOWS = (
    timedelta(minutes=2), timedelta(hours=1), timedelta(days=1), timedelta(days=8),
    timedelta(days=32), timedelta(days=367), timedelta(days=8 * 366),
)
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FULL_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_DAY_PART = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


def _cron_day(token: str, expression: str) -> int:
    if token.isdigit() and int(token) <= 7:
        return int(token) % 7
    for number, name in enumerate(_FULL_DAY_NAMES):
        if token in (name, name[:3]):
            return number
    raise ValueError(f"{token!r} is not a day of the week (0-7 or SUN-SAT) in {expression!r}")


def _day_of_week(field_text: str, expression: str) -> str:
    """Cron's day-of-week field in APScheduler's terms.

    Cron counts 0 (and 7) as Sunday, APScheduler 3 counts 0 as Monday, and
    ``CronTrigger.from_crontab`` passes numbers through unchanged (its own
    docstring warns of it): every day is spelled out as a name instead.
    """
    field_text = field_text.lower()
    if field_text in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field_text.split(","):
        match = _DAY_PART.match(part)
        if not match:
            raise ValueError(f"cannot read the day of the week {part!r} in {expression!r}")
        step = int(match["step"] or 1)
        if step == 0:
            raise ValueError(f"a step of 0 in {expression!r}")
        if match["range"] == "*":
            first, last = 0, 6
        else:
            low, _, high = match["range"].partition("-")
            first = _cron_day(low, expression)
            last = _cron_day(high, expression) if high else (6 if match["step"] else first)
            if high == "7":
                last = 7
            if last < first:
                raise ValueError(f"the range {part!r} runs backwards in {expression!r}")
        days.update(day % 7 for day in range(first, last + 1, step))
    if days == set(range(7)):
        return "*"
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


@dataclass(frozen=True)
class Schedule:
    """A newsletter's cron expression in its time zone, with cron's meaning.

    As in cron, when both day of month and day of week are restricted, a day
    that matches either one fires.
    """

    expression: str
    triggers: tuple[CronTrigger, ...]
    fixed_hour: bool
    """Fires at set hours: a wall-clock time repeated when DST ends fires once, as in cron."""

    def last_slot(self, now: datetime) -> datetime | None:
        """The most recent scheduled time at or before ``now`` (None if none in 8 years)."""
        found = [slot for trigger in self.triggers if (slot := _last(trigger, now))]
        if not found:
            return None
        slot = max(found, key=lambda s: s.astimezone(UTC))
        if self.fixed_hour and slot.fold == 1:
            first = slot.replace(fold=0)
            if first.astimezone(UTC) != slot.astimezone(UTC) and any(
                _fires_at(trigger, first) for trigger in self.triggers
            ):
                return first
        return slot


def parse_schedule(expression: str, timezone: ZoneInfo, *, where: str = "") -> Schedule:
    """Read a five-field cron expression (``0 9 * * MON``); ConfigError if it cannot be."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"{expression!r} must have five fields, e.g. '0 9 * * MON'")
        minute, hour, day, month, weekday = fields
        weekday = _day_of_week(weekday, expression)
        variants = [(day, weekday)]
        if day not in ("*", "?") and weekday != "*":
            variants = [(day, "*"), ("*", weekday)]
        triggers = tuple(
            CronTrigger(
                minute=minute, hour=hour, day=d if d != "?" else "*", month=month,
                day_of_week=w, timezone=timezone,
            )
            for d, w in variants
        )
    except ValueError as error:
        raise ConfigError(f"invalid schedule: {error}", key=where or None) from None
    return Schedule(expression, triggers, fixed_hour="*" not in hour)


def _fires_at(trigger: CronTrigger, moment: datetime) -> bool:
    fire_time: datetime | None = trigger.get_next_fire_time(None, moment)
    return fire_time == moment


def _last(trigger: CronTrigger, now: datetime) -> datetime | None:
    now = now.astimezone(UTC)
    for window in _SLOT_WINDOWS:
        slot = trigger.get_next_fire_time(None, now - window)
        if slot is None or slot.astimezone(UTC) > now:
            continue
        while True:
            # Step in UTC: wall-clock arithmetic stalls on the hour that DST repeats.
            following = trigger.get_next_fire_time(
                None, slot.astimezone(UTC) + timedelta(seconds=1)
            )
            if following is None or following.astimezone(UTC) > now:
                return slot  # type: ignore[no-any-return]
            slot = following
    return None


def utc_iso(moment: datetime) -> str:
    """``2025-01-06T09:00:00Z``: how run logs and ``status --json`` write a moment."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
