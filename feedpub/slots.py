"""When each newsletter's digest is due: its schedule as an APScheduler trigger, and the
next slot after a moment (what ``status`` and the dashboard show). Nothing here sends or
renders, so those read it without importing the sender."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger

from feedpub.config import NewsletterConfig, Settings
from feedpub.schedules import Schedule, parse_schedule


def newsletter_schedule(settings: Settings, newsletter: NewsletterConfig) -> Schedule:
    """The newsletter's schedule, parsed (config has validated it at load)."""
    index = settings.newsletters.index(newsletter) if newsletter in settings.newsletters else 0
    return parse_schedule(
        newsletter.schedule, settings.site.tz, where=f"newsletter[{index}].schedule"
    )


class SlotTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires at the slots of a newsletter's :class:`~feedpub.schedules.Schedule`.

    The schedule's triggers are combined as cron combines day of month and day
    of week (either matches). A fixed-hour schedule fires once at a wall-clock
    time that the end of daylight saving time repeats (the first of the two),
    as cron does and as :meth:`Schedule.last_slot` counts; a time that the start
    of daylight saving time skips fires an hour later on the same day.
    """

    __slots__ = ("schedule",)

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        fire_time = self._earliest(previous_fire_time, now)
        while fire_time is not None and self._repeats_an_earlier_slot(fire_time):
            fire_time = self._earliest(fire_time, fire_time)
        return fire_time

    def _earliest(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        found = [
            fire_time
            for trigger in self.schedule.triggers
            if (fire_time := trigger.get_next_fire_time(previous_fire_time, now)) is not None
        ]
        return min(found, key=lambda moment: moment.astimezone(UTC)) if found else None

    def _repeats_an_earlier_slot(self, fire_time: datetime) -> bool:
        if not self.schedule.fixed_hour or fire_time.fold == 0:
            return False
        first = fire_time.replace(fold=0)
        return first.astimezone(UTC) != fire_time.astimezone(UTC)

    def __str__(self) -> str:
        return f"cron[{self.schedule.expression}]"


def slot_trigger(settings: Settings, newsletter: NewsletterConfig) -> SlotTrigger:
    """The trigger of ``newsletter``'s digest job; ConfigError if its schedule is invalid."""
    return SlotTrigger(newsletter_schedule(settings, newsletter))


def next_slot(settings: Settings, newsletter: NewsletterConfig, now: datetime) -> datetime | None:
    """When ``newsletter``'s digest job fires next after ``now``, in ``site.timezone``."""
    fire_time = slot_trigger(settings, newsletter).get_next_fire_time(
        None, now.astimezone(settings.site.tz) + timedelta(microseconds=1)
    )
    return fire_time.astimezone(settings.site.tz) if fire_time is not None else None
