"""feedpub.scheduler: the daemon's triggers across daylight saving time, and the daemon itself
with APScheduler running, a real SMTP server and real databases (SQLite, and PostgreSQL with
FEEDPUB_TEST_DATABASE_URL)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from feedpub.config import Settings
from feedpub.digest import digest_key, make_editions, parse_schedule
from feedpub.scheduler import (
    TICK_JOB,
    Daemon,
    RunRecord,
    digest_job_id,
    format_run,
    run_fields,
)
from feedpub.slots import SlotTrigger, next_slot
from feedpub.store import Mode, open_store
from feedpub.store import queue as delivery_queue
from feedpub.store.engine import Store, create_store_engine
from feedpub.store.schema import editions
from tests.conftest import Clock, SiteFactory, SmtpServer
from tests.test_digest import MONDAY_9, NEXT_MONDAY_9, T0, add_readers, post, site_config, subscribe

WAIT = 20.0
"""Seconds to wait for a run before the test fails (runs take well under a second)."""


# --- triggers and daylight saving time ---------------------------------------------------


def fire_times(expression: str, zone: str, start: datetime, count: int) -> list[datetime]:
    """The first ``count`` fire times after ``start``, asked the way APScheduler asks."""
    trigger = SlotTrigger(parse_schedule(expression, ZoneInfo(zone)))
    found: list[datetime] = []
    previous: datetime | None = None
    now = start
    for _ in range(count):
        fire_time = trigger.get_next_fire_time(previous, now)
        assert fire_time is not None
        found.append(fire_time)
        previous = now = fire_time
    return found


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def in_utc(moments: list[datetime]) -> list[datetime]:
    return [moment.astimezone(UTC) for moment in moments]


def test_a_time_that_spring_forward_skips_fires_once_that_day() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
    berlin = fire_times("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 3)
    assert in_utc(berlin) == [utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30),
                              utc(2026, 3, 31, 0, 30)]
    local = berlin[0].astimezone(UTC).astimezone(ZoneInfo("Europe/Berlin"))
    assert local.strftime("%H:%M %Z") == "03:30 CEST"
    # America/New_York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
    new_york = fire_times("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12), 2)
    assert in_utc(new_york) == [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]


def test_a_time_that_fall_back_repeats_fires_once() -> None:
    # America/New_York, 2026-11-01: 01:00-02:00 happens twice (EDT, then EST).
    new_york = fire_times("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 3)
    assert in_utc(new_york) == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30),
                                utc(2026, 11, 3, 6, 30)]
    # Europe/Berlin, 2026-10-25: 02:00-03:00 happens twice.
    berlin = fire_times("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 2)
    assert in_utc(berlin) == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # Started between the two 01:30s, it does not fire at the second one either.
    late_start = fire_times("30 1 * * *", "America/New_York", utc(2026, 11, 1, 6, 0), 1)
    assert in_utc(late_start) == [utc(2026, 11, 2, 6, 30)]


def test_an_hourly_schedule_fires_every_real_hour_through_fall_back() -> None:
    hourly = fire_times("30 * * * *", "America/New_York", utc(2026, 11, 1, 4, 0), 4)
    assert in_utc(hourly) == [utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 5, 30),
                              utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 30)]


def test_a_weekly_digest_keeps_its_local_hour_across_both_changes() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    spring = fire_times("0 9 * * MON", "Europe/Berlin", utc(2026, 3, 20, 0), 2)
    autumn = fire_times("0 9 * * 1", "Europe/Berlin", utc(2026, 10, 20, 0), 2)
    assert in_utc(spring) == [utc(2026, 3, 23, 8), utc(2026, 3, 30, 7)]
    assert in_utc(autumn) == [utc(2026, 10, 26, 8), utc(2026, 11, 2, 8)]
    assert {m.astimezone(berlin).strftime("%a %H:%M") for m in spring + autumn} == {"Mon 09:00"}
    # Cron counts Sunday as 0 (and 7), APScheduler as 6: the daemon follows cron.
    sunday = fire_times("0 9 * * 0", "UTC", utc(2026, 1, 1, 0), 1)
    assert sunday[0].strftime("%A") == "Sunday"


@pytest.mark.parametrize(
    ("expression", "zone", "start"),
    [
        ("30 1 * * *", "America/New_York", utc(2026, 10, 30, 0)),
        ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 0)),
        ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 23, 0)),
        ("*/30 * * * *", "America/New_York", utc(2026, 11, 1, 4, 0)),
        ("0 9 1 * MON", "Asia/Shanghai", utc(2026, 5, 20, 0)),
    ],
)
def test_the_daemon_fires_exactly_at_the_slots_that_digest_makes_editions_for(
    expression: str, zone: str, start: datetime
) -> None:
    schedule = parse_schedule(expression, ZoneInfo(zone))
    fired = fire_times(expression, zone, start, 6)
    assert [schedule.last_slot(moment) for moment in fired] == fired
    # A run a minute after each firing still finds that slot: no firing is wasted.
    assert [schedule.last_slot(moment + timedelta(minutes=1)) for moment in fired] == fired
    assert len({digest_key(moment) for moment in fired}) == len(fired)


def test_next_slot_is_strictly_after_now_in_the_site_timezone(make_site: SiteFactory) -> None:
    make_site(config=site_config(timezone="America/New_York", newsletters="""
[[newsletter]]
name = "early"
schedule = "30 1 * * *"
"""))
    settings = make_site.settings()
    early = settings.newsletter("early")
    first = next_slot(settings, early, utc(2026, 11, 1, 5, 0))
    assert first is not None and first.utcoffset() == timedelta(hours=-4)
    assert first.astimezone(UTC) == utc(2026, 11, 1, 5, 30)
    # At the first 01:30 itself, the next run is the next day's, not the repeated 01:30.
    following = next_slot(settings, early, first)
    assert following is not None and following.astimezone(UTC) == utc(2026, 11, 2, 6, 30)
    assert str(following.tzinfo) == "America/New_York"


# --- the daemon --------------------------------------------------------------------------


@dataclass
class Harness:
    factory: SiteFactory
    database_url: str
    smtp: SmtpServer
    stores: list[Store] = field(default_factory=list)
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.factory.settings(
            {"FEEDPUB_SECRET": "test-secret", "FEEDPUB_DATABASE_URL": self.database_url}
        )

    def store(self) -> Store:
        store = open_store(self.database_url)
        self.stores.append(store)
        return store

    def daemon(self, clock: Clock) -> tuple[Daemon, queue.Queue[RunRecord]]:
        records: queue.Queue[RunRecord] = queue.Queue()
        daemon = Daemon(self.settings, self.store(), clock=clock, on_run=records.put)
        self.daemons.append(daemon)
        return daemon, records

    def received(self) -> dict[str, int]:
        return self.smtp.recorder.count_by_recipient()

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.shutdown()
        for store in self.stores:
            store.close()


def wait_for(records: queue.Queue[RunRecord], job: str) -> RunRecord:
    deadline = time.monotonic() + WAIT
    while True:
        record = records.get(timeout=max(0.1, deadline - time.monotonic()))
        if record.job == job:
            return record


READERS = ["Zoë 山田 <zoe@example.org>", '"Smith, Jo" <jo@example.org>', "plain@example.org"]
READER_EMAILS = ["zoe@example.org", "jo@example.org", "plain@example.org"]


@pytest.fixture
def harness(
    make_site: SiteFactory, database_url: str, smtp_server: SmtpServer
) -> Iterator[Harness]:
    """A site whose weekly digest (Mondays 09:00 UTC) has a baseline at T0, three digest
    readers and one new post waiting; nothing is scheduled by the tick (every hour)."""
    config = site_config(transport=smtp_server.url).replace(
        "[scheduler]\n", "[scheduler]\ntick_seconds = 3600\n"
    )
    make_site(config=config)
    harness = Harness(make_site, database_url, smtp_server)
    store = harness.store()
    make_editions(harness.settings, store, T0)
    for reader in READERS:
        subscribe(store, reader)
    make_site.write("content/posts/2026-01-02-news.md",
                    post("News: 🚀 launch\nday", "2026-01-02 10:00:00 +0000"))
    try:
        yield harness
    finally:
        harness.close()


def digest_editions(store: Store, slot: datetime) -> list[str]:
    with store.read() as conn:
        return list(conn.execute(
            sa.select(editions.c.status).where(editions.c.period_key == digest_key(slot))
        ).scalars())


def test_the_digest_job_fired_by_apscheduler_sends_a_real_digest(harness: Harness) -> None:
    clock = Clock(MONDAY_9 - timedelta(minutes=1))
    daemon, records = harness.daemon(clock)
    daemon.start()
    before = wait_for(records, TICK_JOB)  # the tick at start: the slot has not come yet
    assert before.report is not None
    assert [e.kind for e in before.report.digest.editions] == ["post"]  # for no instant reader
    assert harness.received() == {}

    clock.now = MONDAY_9 + timedelta(seconds=2)
    job = digest_job_id("weekly")
    daemon.scheduler.modify_job(job, next_run_time=datetime.now(UTC) + timedelta(seconds=1))
    record = wait_for(records, job)

    assert record.error is None and record.report is not None
    (made,) = record.report.digest.made
    assert (made.kind, made.period_key, made.recipients) == ("digest", digest_key(MONDAY_9), 3)
    assert record.report.send is not None and record.report.send.sent == 3
    assert harness.received() == dict.fromkeys(READER_EMAILS, 1)
    subject = harness.smtp.recorder.messages[0].message["Subject"]
    assert "🚀" in subject and "\n" not in subject
    # After firing, APScheduler asks the real schedule for the next Monday 09:00 UTC.
    following = daemon.next_run_times()[job]
    assert following is not None and following.astimezone(UTC).strftime("%a %H:%M") == "Mon 09:00"
    line = format_run(record, "plain", grace_hours=6)
    assert f"digest:weekly: weekly: digest {digest_key(MONDAY_9)} (1 entry) queued for 3" in line
    assert line.endswith("sent 3, retrying 0, failed 0, skipped 0")


def test_two_daemons_on_one_store_make_one_edition_and_send_each_message_once(
    harness: Harness,
) -> None:
    more = [f"reader{i}@example.net" for i in range(40)]
    add_readers(harness.stores[0], more)
    clock = Clock(MONDAY_9 + timedelta(minutes=1))
    (first, first_records), (second, second_records) = harness.daemon(clock), \
        harness.daemon(clock)
    assert first.store is not second.store
    first.start()
    second.start()
    runs = [wait_for(first_records, TICK_JOB), wait_for(second_records, TICK_JOB)]

    assert [r.error for r in runs] == [None, None]
    made = [e for r in runs if r.report for e in r.report.digest.made]
    assert [(e.kind, e.period_key) for e in made] == [("digest", digest_key(MONDAY_9))]
    assert digest_editions(harness.stores[0], MONDAY_9) == ["ready"]
    sent = sum(r.report.send.sent for r in runs if r.report and r.report.send)
    assert sent == len(READER_EMAILS) + len(more)
    assert harness.received() == dict.fromkeys([*READER_EMAILS, *more], 1)


def restart_at(harness: Harness, moment: datetime) -> RunRecord:
    """A daemon that starts at ``moment`` and stops after its first tick."""
    daemon, records = harness.daemon(Clock(moment))
    daemon.start()
    try:
        return wait_for(records, TICK_JOB)
    finally:
        daemon.shutdown()


def test_a_restart_within_the_grace_sends_the_missed_digest_once(harness: Harness) -> None:
    restart_at(harness, MONDAY_9 - timedelta(hours=1))  # down from 08:00 ...
    late = restart_at(harness, MONDAY_9 + timedelta(hours=5, minutes=50))  # ... to 14:50
    assert late.report is not None and late.level == "info"
    assert [(e.kind, e.period_key) for e in late.report.digest.made] == [
        ("digest", digest_key(MONDAY_9))
    ]
    assert harness.received() == dict.fromkeys(READER_EMAILS, 1)

    again = restart_at(harness, MONDAY_9 + timedelta(hours=5, minutes=55))
    assert again.idle
    assert harness.received() == dict.fromkeys(READER_EMAILS, 1)


def test_a_restart_beyond_the_grace_skips_the_digest_with_a_log_line(harness: Harness) -> None:
    stale = restart_at(harness, MONDAY_9 + timedelta(hours=6, minutes=1))
    assert stale.report is not None
    assert [(e.kind, e.period_key) for e in stale.report.digest.editions][-1:] == [
        ("missed", digest_key(MONDAY_9))
    ]
    assert harness.received() == {}
    assert digest_editions(harness.stores[0], MONDAY_9) == ["missed"]
    assert stale.level == "warning" and not stale.idle
    line = format_run(stale, "plain", grace_hours=6)
    assert line == (
        "2026-01-05T15:01:00Z WARNING tick: weekly: digest:2026-01-05T09:00Z missed: noticed "
        "more than 6 h after its slot (scheduler.misfire_grace_hours); its posts wait for the "
        "next digest; sent 0, retrying 0, failed 0, skipped 0"
    )
    fields = json.loads(format_run(stale, "json", grace_hours=6))
    assert fields["editions"] == [{"newsletter": "weekly", "kind": "missed",
                                   "period_key": digest_key(MONDAY_9), "entries": 0,
                                   "recipients": 0}]
    assert fields["level"] == "warning" and fields["sent"] == 0

    # The post was not lost: it goes out with the next Monday's digest.
    following = restart_at(harness, NEXT_MONDAY_9 + timedelta(minutes=1))
    assert following.report is not None
    (made,) = following.report.digest.made
    assert made.period_key == digest_key(NEXT_MONDAY_9) and len(made.entry_titles) == 1
    assert harness.received() == dict.fromkeys(READER_EMAILS, 1)


def test_a_mail_server_outage_leaves_the_digest_queued_for_the_next_tick(
    harness: Harness,
) -> None:
    harness.smtp.stop()
    daemon, records = harness.daemon(Clock(MONDAY_9 + timedelta(minutes=1)))
    daemon.start()
    down = wait_for(records, TICK_JOB)
    assert down.report is not None and down.report.send is not None
    assert down.report.send.outage is not None and down.level == "error"
    assert run_fields(down)["outage"] == down.report.send.outage
    with harness.stores[0].read() as conn:
        assert delivery_queue.status_counts(conn) == {"queued": 3}

    harness.smtp.restart()
    daemon.scheduler.modify_job(TICK_JOB, next_run_time=datetime.now(UTC))
    up = wait_for(records, TICK_JOB)
    assert up.report is not None and up.report.send is not None
    assert up.report.send.sent == 3 and not up.report.digest.made
    assert harness.received() == dict.fromkeys(READER_EMAILS, 1)


def test_instant_subscribers_get_a_new_post_at_the_next_tick(harness: Harness) -> None:
    store = harness.stores[0]
    subscribe(store, "Quick <quick@example.org>", mode=Mode.INSTANT)
    record = restart_at(harness, utc(2026, 1, 3, 8, 0))  # a Saturday: no digest is due
    assert record.report is not None
    (made,) = record.report.digest.made
    assert made.kind == "post" and made.recipients == 1
    assert harness.received() == {"quick@example.org": 1}


def test_a_run_that_fails_is_logged_and_the_daemon_keeps_going(harness: Harness) -> None:
    unreachable = Store(create_store_engine("sqlite:////nonexistent-folder/feedpub.db"))
    harness.stores.append(unreachable)
    records: queue.Queue[RunRecord] = queue.Queue()
    daemon = Daemon(harness.settings, unreachable, clock=Clock(MONDAY_9), on_run=records.put)
    harness.daemons.append(daemon)
    daemon.start()
    failed = wait_for(records, TICK_JOB)
    assert failed.error is not None and failed.report is None
    assert failed.error.endswith("cannot open database sqlite:////nonexistent-folder/"
                                 "feedpub.db: unable to open database file")
    assert failed.level == "error" and not failed.idle
    assert format_run(failed, "plain", grace_hours=6).endswith(
        f"ERROR tick: error: {failed.error}"
    )
    assert json.loads(format_run(failed, "json", grace_hours=6))["error"] == failed.error
    daemon.scheduler.modify_job(TICK_JOB, next_run_time=datetime.now(UTC))
    assert wait_for(records, TICK_JOB).error == failed.error  # still running, still saying so


# --- `feedpub schedule` as a process --------------------------------------------------------


@pytest.mark.slow
def test_sigterm_finishes_the_messages_in_flight_leaves_the_rest_queued_and_exits_0(
    make_site: SiteFactory, tmp_path: Path, smtp_server: SmtpServer,
    cli_env: Callable[..., Any],
) -> None:
    database_url = f"sqlite:///{tmp_path / 'feedpub.db'}"
    root = make_site(config=site_config(transport=smtp_server.url + "&pool=4", rate_limit=60))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDPUB_")}
    env.update(FEEDPUB_SECRET="test-secret", FEEDPUB_DATABASE_URL=database_url)
    settings = make_site.settings(env)
    now = datetime.now(UTC)
    emails = [f"instant{i}@example.org" for i in range(150)]
    store = open_store(database_url)
    try:
        make_editions(settings, store, now - timedelta(hours=2))  # the baseline
        add_readers(store, emails, mode=Mode.INSTANT)
    finally:
        store.close()
    make_site.write("content/posts/fresh.md", post("Fresh ✨", now - timedelta(hours=1)))
    log_file = tmp_path / "feedpub.log"

    daemon = subprocess.Popen(
        [sys.executable, "-m", "feedpub", "--site", str(root), "schedule",
         "--log-file", str(log_file), "--log-format", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while sum(smtp_server.recorder.count_by_recipient().values()) < 20:
        assert daemon.poll() is None, daemon.communicate()
        assert time.monotonic() < deadline, "the daemon sent nothing"
        time.sleep(0.02)
    daemon.send_signal(signal.SIGTERM)
    stdout, stderr = daemon.communicate(timeout=30)

    assert daemon.returncode == 0, stderr
    assert stdout == "" and stderr == ""
    store = open_store(database_url)
    try:
        with store.read() as conn:
            statuses = delivery_queue.status_counts(conn)
    finally:
        store.close()
    received = smtp_server.recorder.count_by_recipient()
    assert "sending" not in statuses and statuses.get("queued", 0) > 0
    assert statuses["sent"] == sum(received.values()) and set(received.values()) == {1}

    lines = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["event"] == "started" and lines[-1]["event"] == "stopped"
    (run,) = [line for line in lines if line.get("job") == TICK_JOB]
    assert run["sent"] == statuses["sent"] and run["left_queued"] > 0
    assert [e["kind"] for e in run["editions"]] == ["post"]

    # Nothing was lost: the next run sends the rest, each message once in all.
    rerun = subprocess.run(
        [sys.executable, "-m", "feedpub", "--site", str(root), "digest", "send"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert smtp_server.recorder.count_by_recipient() == dict.fromkeys(emails, 1)
