"""feedpub.digest: schedules, baselines, what is new, editions and the deliveries they queue.

Runs on SQLite and, with FEEDPUB_TEST_DATABASE_URL, on PostgreSQL. The helpers
at the top are shared by the other delivery test modules.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from feedpub.catalog import load_catalog
from feedpub.config import Settings
from feedpub.digest import (
    DigestReport,
    digest_key,
    instant_key,
    make_editions,
    parse_schedule,
    pending_entries,
)
from feedpub.errors import ConfigError
from feedpub.store import Mode, Status, add_subscriber, open_store, set_subscription
from feedpub.store.addresses import email_key
from feedpub.store.engine import Store
from feedpub.store.schema import (
    announced_entries,
    deliveries,
    editions,
    subscribers,
    subscriptions,
)
from feedpub.store.subscribers import encode_categories, new_token_key
from tests.conftest import SiteFactory

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # a Thursday
MONDAY_9 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NEXT_MONDAY_9 = MONDAY_9 + timedelta(days=7)

WEEKLY = """
[[newsletter]]
name = "weekly"
schedule = "0 9 * * MON"
"""

DAILY_AND_WEEKLY = """
[[newsletter]]
name = "weekly"
schedule = "0 9 * * MON"

[[newsletter]]
name = "daily-python"
title = "Python, daily"
schedule = "30 7 * * *"
categories = ["Python"]
"""


def site_config(
    *,
    transport: str = "maildir:outbox",
    rate_limit: float = 0,
    newsletters: str = WEEKLY,
    timezone: str = "UTC",
    grace_hours: float = 6,
) -> str:
    return f"""\
[site]
title = "Test Site ✨"
url = "https://example.com/"
timezone = "{timezone}"
author = {{ name = "Ada Author", email = "ada@example.com" }}

[mail]
from = "Test Site <news@example.com>"
transport = "{transport}"
rate_limit = {rate_limit}
postal_address = "1 Test Street"

[scheduler]
misfire_grace_hours = {grace_hours}
{newsletters}"""


def post(
    title: str,
    date: datetime | str,
    *,
    categories: Sequence[str] = (),
    ident: str | None = None,
    draft: bool = False,
    updated: datetime | None = None,
    body: str = "A paragraph of the post.",
) -> str:
    when = date.isoformat() if isinstance(date, datetime) else date
    lines = ["---", f"title: {json.dumps(title, ensure_ascii=False)}", f"date: {when}"]
    if categories:
        lines.append(f"categories: {json.dumps(list(categories), ensure_ascii=False)}")
    if ident:
        lines.append(f"id: {ident}")
    if draft:
        lines.append("draft: true")
    if updated:
        lines.append(f"updated: {updated.isoformat()}")
    return "\n".join([*lines, "---", "", body, ""])


def add_readers(
    store: Store,
    emails: Iterable[str],
    *,
    newsletter: str = "weekly",
    mode: Mode = Mode.DIGEST,
    categories: Sequence[str] = (),
    status: Status = Status.ACTIVE,
    now: datetime = T0,
) -> list[int]:
    """Many subscribers at once, straight into the store's tables (the per-address API
    takes a few milliseconds each: too slow for thousands)."""
    emails = list(emails)
    with store.write() as conn:
        conn.execute(
            subscribers.insert(),
            [
                {"email": email, "email_key": email_key(email), "name": None,
                 "status": status.value, "source": "cli", "created_at": now,
                 "status_changed_at": now, "confirmed_at": now, "consecutive_failures": 0,
                 "token_key": new_token_key()}
                for email in emails
            ],
        )
        ids = dict(
            conn.execute(
                sa.select(subscribers.c.email_key, subscribers.c.id).where(
                    subscribers.c.email_key.in_([email_key(e) for e in emails])
                )
            ).all()
        )
        conn.execute(
            subscriptions.insert(),
            [
                {"subscriber_id": ids[email_key(email)], "newsletter": newsletter,
                 "mode": mode.value, "categories": encode_categories(categories),
                 "created_at": now}
                for email in emails
            ],
        )
    return [ids[email_key(email)] for email in emails]


def subscribe(
    store: Store,
    address: str,
    newsletter: str = "weekly",
    *,
    mode: Mode = Mode.DIGEST,
    categories: Sequence[str] = (),
    status: Status = Status.ACTIVE,
) -> int:
    """One subscriber through the store's own API."""
    with store.write() as conn:
        result = add_subscriber(conn, address, now=T0, status=status)
        set_subscription(conn, result.subscriber.id, newsletter, now=T0, mode=mode,
                         categories=categories)
        return result.subscriber.id


def queued_for(store: Store) -> dict[str, list[str]]:
    """Each subscriber's queued editions, as period keys (variants keep their suffix)."""
    with store.read() as conn:
        rows = conn.execute(
            sa.select(subscribers.c.email, editions.c.newsletter, editions.c.period_key)
            .join(deliveries, deliveries.c.subscriber_id == subscribers.c.id)
            .join(editions, editions.c.id == deliveries.c.edition_id)
            .order_by(subscribers.c.email, editions.c.id)
        ).all()
    found: dict[str, list[str]] = {}
    for email, newsletter, key in rows:
        found.setdefault(email, []).append(f"{newsletter}:{key}")
    return found


def edition_rows(store: Store) -> list[sa.Row[tuple[str, str, str, str]]]:
    with store.read() as conn:
        return list(
            conn.execute(
                sa.select(editions.c.newsletter, editions.c.period_key, editions.c.status,
                          editions.c.entry_ids).order_by(editions.c.id)
            ).all()
        )


@dataclass
class Site:
    factory: SiteFactory
    database_url: str
    store: Store

    @property
    def root(self) -> Path:
        return self.factory.root

    @property
    def settings(self) -> Settings:
        return self.factory.settings(
            {"FEEDPUB_SECRET": "test-secret", "FEEDPUB_DATABASE_URL": self.database_url}
        )

    def write(self, name: str, text: str) -> None:
        self.factory.write(f"content/posts/{name}", text)

    def run(self, now: datetime, **options: object) -> DigestReport:
        return make_editions(self.settings, self.store, now, **options)  # type: ignore[arg-type]


@pytest.fixture
def site(make_site: SiteFactory, database_url: str) -> Iterator[Site]:
    make_site(
        posts={"2025-12-01-old.md": post("An old post", "2025-12-01 10:00:00 +0000")},
        config=site_config(),
    )
    store = open_store(database_url)
    try:
        yield Site(make_site, database_url, store)
    finally:
        store.close()


def kinds(report: DigestReport) -> list[tuple[str, str]]:
    return [(e.newsletter, e.kind) for e in report.editions]


# --- schedules -------------------------------------------------------------------------


def test_cron_day_numbers_count_sunday_as_zero() -> None:
    utc = ZoneInfo("UTC")
    wednesday = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
    assert parse_schedule("0 9 * * 0", utc).last_slot(wednesday) == datetime(
        2026, 1, 4, 9, 0, tzinfo=utc)  # Sunday, not Monday as APScheduler's own numbers
    assert parse_schedule("0 9 * * 7", utc).last_slot(wednesday) == datetime(
        2026, 1, 4, 9, 0, tzinfo=utc)
    assert parse_schedule("0 9 * * 1-5", utc).last_slot(wednesday) == datetime(
        2026, 1, 7, 9, 0, tzinfo=utc)
    assert parse_schedule("0 9 * * */2", utc).last_slot(wednesday) == datetime(
        2026, 1, 6, 9, 0, tzinfo=utc)  # 0,2,4,6: Sunday, Tuesday, Thursday, Saturday
    assert parse_schedule("0 9 * * Sat,SUN", utc).last_slot(wednesday) == datetime(
        2026, 1, 4, 9, 0, tzinfo=utc)


def test_day_of_month_or_day_of_week_as_in_cron() -> None:
    utc = ZoneInfo("UTC")
    schedule = parse_schedule("0 9 13 * 5", utc)  # the 13th, and every Friday
    assert schedule.last_slot(datetime(2026, 1, 14, tzinfo=UTC)) == datetime(
        2026, 1, 13, 9, tzinfo=utc)  # a Tuesday the 13th
    assert schedule.last_slot(datetime(2026, 1, 17, tzinfo=UTC)) == datetime(
        2026, 1, 16, 9, tzinfo=utc)


def test_slots_follow_daylight_saving_time() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    daily = parse_schedule("30 2 * * *", berlin)
    # 2:30 happens twice on 2026-10-25 (clocks go back at 3:00): one digest, the first.
    after_both = datetime(2026, 10, 25, 1, 45, tzinfo=UTC)
    slot = daily.last_slot(after_both)
    assert slot is not None and slot.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    # Summer time: 9:00 in Berlin is 7:00 UTC; winter time: 8:00 UTC.
    nine = parse_schedule("0 9 * * *", berlin)
    summer = nine.last_slot(datetime(2026, 7, 1, 7, 30, tzinfo=UTC))
    winter = nine.last_slot(datetime(2026, 12, 1, 8, 30, tzinfo=UTC))
    assert summer is not None and summer.astimezone(UTC).hour == 7
    assert winter is not None and winter.astimezone(UTC).hour == 8
    hourly = parse_schedule("0 * * * *", berlin)
    second_two = hourly.last_slot(datetime(2026, 10, 25, 1, 10, tzinfo=UTC))
    assert second_two is not None and second_two.astimezone(UTC) == datetime(
        2026, 10, 25, 1, 0, tzinfo=UTC)  # an hourly schedule keeps both 2:00s


def test_rare_and_frequent_schedules() -> None:
    utc = ZoneInfo("UTC")
    leap = parse_schedule("0 0 29 2 *", utc).last_slot(datetime(2027, 3, 1, tzinfo=UTC))
    assert leap == datetime(2024, 2, 29, tzinfo=utc)
    every_minute = parse_schedule("* * * * *", utc).last_slot(
        datetime(2026, 1, 1, 10, 7, 59, tzinfo=UTC))
    assert every_minute == datetime(2026, 1, 1, 10, 7, tzinfo=utc)
    exact = parse_schedule("0 9 * * MON", utc).last_slot(MONDAY_9)
    assert exact == MONDAY_9


@pytest.mark.parametrize("expression", ["0 9 * *", "0 25 * * *", "0 9 * * FUNDAY", "0 9 * * 5-1"])
def test_bad_schedules_are_config_errors(expression: str) -> None:
    with pytest.raises(ConfigError, match="schedule"):
        parse_schedule(expression, ZoneInfo("UTC"), where="newsletter[0].schedule")


def test_keys_are_short_enough_for_the_column() -> None:
    assert digest_key(datetime(2026, 1, 5, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))) == \
        "digest:2026-01-05T09:00Z"
    long_id = "urn:x:" + "é" * 300
    assert len(instant_key(long_id)) <= 200
    assert instant_key(long_id) != instant_key(long_id + "x")


# --- baseline and what is new ----------------------------------------------------------------


def test_first_run_baselines_and_mails_nothing(site: Site) -> None:
    subscribe(site.store, "Ada <ada@example.org>")
    subscribe(site.store, "ines@example.org", mode=Mode.INSTANT)
    report = site.run(MONDAY_9 + timedelta(minutes=1))
    assert kinds(report) == [("weekly", "baseline")]
    assert report.editions[0].baselined == 1
    assert queued_for(site.store) == {}
    # The slot that had passed at the baseline is not made afterwards, and a second
    # run at the same moment has nothing to do.
    assert site.run(MONDAY_9 + timedelta(minutes=2)).editions == ()
    with site.store.read() as conn:
        announced = conn.execute(sa.select(announced_entries.c.entry_id)).scalars().all()
    assert announced == ["tag:example.com,2025-12-01:old"]


def test_new_posts_go_to_digest_and_instant_subscribers(site: Site) -> None:
    site.run(T0)
    subscribe(site.store, "Ada <ada@example.org>")
    subscribe(site.store, "ines@example.org", mode=Mode.INSTANT)
    site.write("2026-01-02-first.md", post("First 🎉", "2026-01-02 10:00:00 +0000"))
    site.write("2026-01-03-second.md", post("Second, \"quoted\"", "2026-01-03 10:00:00 +0000"))

    before_slot = site.run(datetime(2026, 1, 4, tzinfo=UTC))
    assert kinds(before_slot) == [("weekly", "post"), ("weekly", "post")]
    assert [e.entry_titles for e in before_slot.editions] == [("First 🎉",),
                                                             ('Second, "quoted"',)]
    at_slot = site.run(MONDAY_9 + timedelta(seconds=30))
    assert kinds(at_slot) == [("weekly", "digest")]
    digest = at_slot.editions[0]
    assert digest.entry_titles == ('Second, "quoted"', "First 🎉")  # newest first
    assert digest.recipients == 1
    assert queued_for(site.store) == {
        "ada@example.org": ["weekly:digest:2026-01-05T09:00Z"],
        "ines@example.org": [
            "weekly:post:tag:example.com,2026-01-02:first",
            "weekly:post:tag:example.com,2026-01-03:second",
        ],
    }
    web = site.root / "public" / "editions" / "weekly" / "2026-01-05-0900.html"
    assert "First 🎉" in web.read_text(encoding="utf-8")
    assert len(list((site.root / "public/editions/weekly").glob("post-first-*.html"))) == 1
    assert site.run(MONDAY_9 + timedelta(minutes=5)).editions == ()


def test_back_dated_post_is_sent_and_edited_post_is_not(site: Site) -> None:
    site.run(T0)
    subscribe(site.store, "ada@example.org")
    subscribe(site.store, "ines@example.org", mode=Mode.INSTANT)
    site.write("2026-01-02-kept.md", post("Kept", "2026-01-02 10:00:00 +0000", ident="urn:kept"))
    site.run(MONDAY_9)
    # After the digest: a post dated last year appears, and the sent one is edited.
    site.write("2025-06-01-backdated.md", post("Back-dated", "2025-06-01 10:00:00 +0000"))
    site.write("2026-01-02-kept.md", post(
        "Kept, now with a new title", "2026-01-02 10:00:00 +0000", ident="urn:kept",
        updated=datetime(2026, 1, 8, tzinfo=UTC), body="Rewritten entirely.",
    ))
    instant = site.run(datetime(2026, 1, 9, tzinfo=UTC))
    assert [e.entry_titles for e in instant.editions] == [("Back-dated",)]
    weekly = site.run(NEXT_MONDAY_9)
    assert [e.entry_titles for e in weekly.editions] == [("Back-dated",)]
    assert queued_for(site.store)["ada@example.org"] == [
        "weekly:digest:2026-01-05T09:00Z", "weekly:digest:2026-01-12T09:00Z",
    ]
    assert len(queued_for(site.store)["ines@example.org"]) == 2


def test_drafts_and_future_posts_wait(site: Site) -> None:
    site.run(T0)
    subscribe(site.store, "ada@example.org")
    site.write("draft.md", post("A draft", "2026-01-02 10:00:00 +0000", draft=True))
    site.write("later.md", post("Scheduled", "2026-01-10 08:00:00 +0000"))
    assert kinds(site.run(MONDAY_9)) == [("weekly", "empty")]
    report = site.run(NEXT_MONDAY_9)
    assert [(e.kind, e.entry_titles) for e in report.editions] == [
        ("post", ("Scheduled",)), ("digest", ("Scheduled",))]


def test_a_slot_with_nothing_new_does_not_mail_later_posts_early(site: Site) -> None:
    site.run(T0)
    subscribe(site.store, "ada@example.org")
    assert kinds(site.run(MONDAY_9 + timedelta(minutes=1))) == [("weekly", "empty")]
    site.write("2026-01-06-tuesday.md", post("Tuesday", "2026-01-06 10:00:00 +0000"))
    assert kinds(site.run(datetime(2026, 1, 6, 11, tzinfo=UTC))) == [("weekly", "post")]
    assert kinds(site.run(NEXT_MONDAY_9)) == [("weekly", "digest")]


def test_a_slot_noticed_too_late_is_skipped_and_its_posts_wait(site: Site) -> None:
    site.run(T0)
    subscribe(site.store, "ada@example.org")
    site.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    late = site.run(MONDAY_9 + timedelta(hours=7))  # misfire_grace_hours = 6
    assert kinds(late) == [("weekly", "post"), ("weekly", "missed")]
    assert queued_for(site.store) == {}
    on_time = site.run(NEXT_MONDAY_9 + timedelta(minutes=3))
    assert [(e.kind, e.entry_titles) for e in on_time.editions] == [("digest", ("New",))]


def test_only_active_subscribers_are_queued(site: Site) -> None:
    site.run(T0)
    subscribe(site.store, "active@example.org")
    subscribe(site.store, "pending@example.org", status=Status.PENDING)
    subscribe(site.store, "gone@example.org", status=Status.UNSUBSCRIBED)
    add_readers(site.store, ["bounced@example.org"], status=Status.BOUNCED)
    site.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    site.run(MONDAY_9)
    assert list(queued_for(site.store)) == ["active@example.org"]


def test_two_newsletters_with_their_own_schedules_and_categories(
    make_site: SiteFactory, database_url: str
) -> None:
    make_site(config=site_config(newsletters=DAILY_AND_WEEKLY))
    store = open_store(database_url)
    site = Site(make_site, database_url, store)
    try:
        site.run(T0)
        subscribe(store, "weekly@example.org", "weekly")
        subscribe(store, "daily@example.org", "daily-python")
        site.write("2026-01-02-py.md", post("Py", "2026-01-02 06:00:00 +0000",
                                            categories=["python"]))
        site.write("2026-01-02-rust.md", post("Rust", "2026-01-02 07:00:00 +0000",
                                              categories=["Rust"]))
        friday = site.run(datetime(2026, 1, 2, 7, 31, tzinfo=UTC))
        assert [(e.newsletter, e.kind, e.entry_titles) for e in friday.editions
                if e.kind == "digest"] == [("daily-python", "digest", ("Py",))]
        saturday = site.run(datetime(2026, 1, 3, 7, 30, tzinfo=UTC))
        assert [(e.newsletter, e.kind) for e in saturday.editions] == [
            ("daily-python", "empty")]
        monday = site.run(MONDAY_9)
        digests = {e.newsletter: e.entry_titles for e in monday.editions if e.kind == "digest"}
        assert digests == {"weekly": ("Rust", "Py")}
        assert queued_for(store) == {
            "daily@example.org": ["daily-python:digest:2026-01-02T07:30Z"],
            "weekly@example.org": ["weekly:digest:2026-01-05T09:00Z"],
        }
    finally:
        store.close()


def test_subscribers_get_only_their_categories(site: Site) -> None:
    site.run(T0)
    subscribe(site.store, "all@example.org")
    subscribe(site.store, "py@example.org", categories=["Python"])
    subscribe(site.store, "py2@example.org", categories=["python", "Haskell"])
    subscribe(site.store, "cjk@example.org", categories=["中文"])
    subscribe(site.store, "none@example.org", categories=["Cobol"])
    subscribe(site.store, "py-instant@example.org", mode=Mode.INSTANT, categories=["Python"])
    site.write("2026-01-02-py.md", post("Py", "2026-01-02 10:00:00 +0000",
                                        categories=["Python"]))
    site.write("2026-01-03-zh.md", post("你好，世界", "2026-01-03 10:00:00 +0000",
                                        categories=["中文", "Notes"]))
    report = site.run(MONDAY_9)
    digest = next(e for e in report.editions if e.kind == "digest")
    assert digest.recipients == 4
    assert digest.variants == 2
    queued = queued_for(site.store)
    assert queued["all@example.org"] == ["weekly:digest:2026-01-05T09:00Z"]
    assert queued["py@example.org"] == queued["py2@example.org"]
    assert queued["py@example.org"][0].startswith("weekly:digest:2026-01-05T09:00Z/")
    assert queued["cjk@example.org"][0] != queued["py@example.org"][0]
    assert "none@example.org" not in queued
    assert queued["py-instant@example.org"] == ["weekly:post:tag:example.com,2026-01-02:py"]
    entry_ids = {key: json.loads(ids) for _, key, _, ids in edition_rows(site.store)}
    assert entry_ids[queued["py@example.org"][0].removeprefix("weekly:")] == [
        "tag:example.com,2026-01-02:py"]
    assert len(list((site.root / "public/editions/weekly").glob("2026-01-05-0900*.html"))) == 3


def test_newsletter_category_filter_drops_other_posts_for_good(
    make_site: SiteFactory, database_url: str
) -> None:
    make_site(config=site_config(newsletters="""
[[newsletter]]
name = "py"
schedule = "0 9 * * MON"
categories = ["Python"]
"""))
    store = open_store(database_url)
    site = Site(make_site, database_url, store)
    try:
        site.run(T0)
        subscribe(store, "ada@example.org", "py")
        site.write("2026-01-02-rust.md", post("Rust", "2026-01-02 10:00:00 +0000",
                                              categories=["Rust"]))
        assert kinds(site.run(MONDAY_9)) == [("py", "empty")]
        assert pending_entries(load_catalog(site.settings, NEXT_MONDAY_9), store, "py") == []
    finally:
        store.close()


def test_dry_run_changes_nothing(site: Site) -> None:
    report = site.run(T0, dry_run=True)
    assert kinds(report) == [("weekly", "baseline")] and report.dry_run
    assert edition_rows(site.store) == []
    site.run(T0)
    add_readers(site.store, [f"r{i}@example.org" for i in range(7)])
    site.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    preview = site.run(MONDAY_9, dry_run=True)
    assert [(e.kind, e.recipients, e.edition_ids) for e in preview.editions] == [
        ("post", 0, ()), ("digest", 7, ())]
    assert len(edition_rows(site.store)) == 1
    assert not (site.root / "public" / "editions").exists()
    assert kinds(site.run(MONDAY_9)) == [("weekly", "post"), ("weekly", "digest")]


def test_pending_entries_for_preview(site: Site) -> None:
    # Before the baseline, nothing is pending.
    assert pending_entries(load_catalog(site.settings, T0), site.store, None) == []
    site.run(T0)
    site.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    pending = pending_entries(load_catalog(site.settings, MONDAY_9), site.store, "weekly")
    assert [e.title for e in pending] == ["New"]
    site.run(MONDAY_9)
    assert pending_entries(load_catalog(site.settings, MONDAY_9), site.store, "weekly") == []


def test_two_runs_at_once_make_one_edition(site: Site) -> None:
    site.run(T0)
    add_readers(site.store, [f"reader{i}@example.org" for i in range(300)])
    add_readers(site.store, ["instant@example.org"], mode=Mode.INSTANT)
    site.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    stores = [open_store(site.database_url) for _ in range(3)]
    start = threading.Barrier(len(stores))
    reports: list[DigestReport] = []
    errors: list[BaseException] = []

    def run(store: Store) -> None:
        start.wait()
        try:
            reports.append(make_editions(site.settings, store, MONDAY_9))
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    made = [e for r in reports for e in r.editions]
    assert sorted(e.kind for e in made) == ["digest", "post"]
    with site.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar() == 301
    assert [row[1] for row in edition_rows(site.store)] == [
        "baseline", "post:tag:example.com,2026-01-02:new", "digest:2026-01-05T09:00Z"]
