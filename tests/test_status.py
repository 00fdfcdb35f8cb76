"""feedpub.status: a store with known counts, made by the real digest and sender against a real
SMTP server that accepts some messages and refuses others."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feedpub.config import Settings
from feedpub.digest import make_editions
from feedpub.mail.transports import open_transport
from feedpub.sender import send_queued
from feedpub.status import (
    DeliveryCounts,
    Retries,
    SubscriberCounts,
    site_status,
    status_document,
)
from feedpub.store import Mode, Status, open_existing_store, open_store
from feedpub.store import queue as delivery_queue
from feedpub.store.engine import Store
from tests.conftest import SiteFactory, SmtpServer
from tests.test_digest import T0, post, site_config, subscribe

SLOT = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
"""Monday 09:00 in Berlin: the weekly digest's slot."""
NOW = SLOT + timedelta(hours=2)

NEWSLETTERS = """
[[newsletter]]
name = "weekly"
title = "Weekly «news» 📰"
schedule = "0 9 * * MON"

[[newsletter]]
name = "daily"
schedule = "30 7 * * *"
"""


@dataclass
class KnownSite:
    root: Path
    settings: Settings
    store: Store


def build_known_site(make_site: SiteFactory, database_url: str, smtp: SmtpServer) -> KnownSite:
    """Every count below is worked out by hand in the tests' expectations.

    weekly: digest readers zoe, ok2 (accepted), later (450: retrying), gone (550: failed);
    quick reads instantly; plus one pending, one unsubscribed and one bounced subscriber.
    daily: zoe, d1, d2; its digest stays queued, one delivery claimed (sending).
    """
    root = make_site(config=site_config(transport=smtp.url, timezone="Europe/Berlin",
                                        newsletters=NEWSLETTERS))
    settings = make_site.settings(
        {"FEEDPUB_SECRET": "test-secret", "FEEDPUB_DATABASE_URL": database_url}
    )
    store = open_store(database_url)
    make_editions(settings, store, T0)  # the baselines
    for address in ("Zoë 山田 <zoe@example.org>", "ok2@example.org", "later@example.org",
                    "gone@example.org"):
        subscribe(store, address)
    subscribe(store, "Quick, Q. <quick@example.org>", mode=Mode.INSTANT)
    subscribe(store, "pending@example.org", status=Status.PENDING)
    subscribe(store, "left@example.org", status=Status.UNSUBSCRIBED)
    subscribe(store, "bounced@example.org", status=Status.BOUNCED)
    for address in ("zoe@example.org", "d1@example.org", "d2@example.org"):
        subscribe(store, address, "daily")

    make_site.write("content/posts/2026-01-02-news.md", post("News\nof the week", "2026-01-02"))
    made = make_editions(settings, store, SLOT + timedelta(minutes=1))
    assert sorted((e.newsletter, e.kind, e.recipients) for e in made.editions) == [
        ("daily", "digest", 3), ("daily", "post", 0), ("weekly", "digest", 4),
        ("weekly", "post", 1),
    ]
    smtp.recorder.reply_for.update({
        "later@example.org": "450 4.2.0 mailbox busy, try later",
        "gone@example.org": "550 5.1.1 no such user",
    })
    with open_transport(settings.mail.transport) as transport:
        report = send_queued(settings, store, transport, clock=lambda: SLOT + timedelta(minutes=1),
                             newsletter="weekly")
    assert (report.sent, report.retrying, report.failed) == (3, 1, 1)
    with store.write() as conn:
        delivery_queue.claim(conn, worker="elsewhere", now=SLOT + timedelta(minutes=2), limit=1,
                             newsletter="daily")

    make_site.write("content/posts/2026-01-05-second.md",
                    post("Second 第二", SLOT + timedelta(minutes=30)))
    later = make_editions(settings, store, NOW)
    assert sorted((e.newsletter, e.kind) for e in later.editions) == [
        ("daily", "post"), ("weekly", "post"),
    ]
    return KnownSite(root, settings, store)


@pytest.fixture
def known_site(
    make_site: SiteFactory, database_url: str, smtp_server: SmtpServer
) -> Iterator[KnownSite]:
    site = build_known_site(make_site, database_url, smtp_server)
    try:
        yield site
    finally:
        site.store.close()


def test_counts_of_a_known_store(known_site: KnownSite) -> None:
    status = site_status(known_site.settings, known_site.store, NOW)

    assert status.subscribers == SubscriberCounts(pending=1, active=7, unsubscribed=1,
                                                  bounced=1)
    assert status.queue == DeliveryCounts(queued=3, sending=1, sent=3, retrying=1, failed=1)
    assert status.retries == Retries(1, SLOT + timedelta(minutes=2))
    weekly, daily = status.newsletters

    assert weekly.name == "weekly" and weekly.title == "Weekly «news» 📰"
    assert weekly.next_run is not None
    assert weekly.next_run.isoformat() == "2026-01-12T09:00:00+01:00"
    assert weekly.subscribers == SubscriberCounts(pending=1, active=5, unsubscribed=1,
                                                  bounced=1)
    assert weekly.subscriptions == {"digest": 4, "instant": 1}
    assert weekly.retries == Retries(1, SLOT + timedelta(minutes=2))
    assert weekly.last_edition is not None and weekly.last_digest is not None
    assert (weekly.last_edition.kind, weekly.last_edition.entries) == ("post", 1)
    assert weekly.last_edition.created_at == NOW
    assert weekly.last_edition.deliveries == DeliveryCounts(queued=1)
    assert weekly.last_digest.kind == "digest"
    assert weekly.last_digest.period_key == "digest:2026-01-05T08:00Z"
    assert weekly.last_digest.entries == 1
    assert weekly.last_digest.deliveries == DeliveryCounts(sent=2, retrying=1, failed=1)

    assert daily.next_run is not None
    assert daily.next_run.isoformat() == "2026-01-06T07:30:00+01:00"
    assert daily.subscribers == SubscriberCounts(active=3)
    assert daily.subscriptions == {"digest": 3, "instant": 0}
    assert daily.retries == Retries(0, None)
    assert daily.last_digest is not None
    assert daily.last_digest.period_key == "digest:2026-01-05T06:30Z"
    assert daily.last_digest.deliveries == DeliveryCounts(queued=2, sending=1)
    assert daily.last_edition is not None and daily.last_edition.deliveries.total == 0


def test_the_json_document(known_site: KnownSite) -> None:
    document = status_document(site_status(known_site.settings, known_site.store, NOW))
    assert list(document) == ["version", "generated_at", "timezone", "database", "subscribers",
                              "deliveries", "retries", "newsletters", "audience"]
    assert document["version"] == 1 and document["generated_at"] == "2026-01-05T10:00:00Z"
    assert document["timezone"] == "Europe/Berlin"
    assert document["retries"] == {"count": 1, "next_attempt_at": "2026-01-05T08:02:00Z"}
    weekly = document["newsletters"][0]
    assert weekly["next_run"] == {"local": "2026-01-12T09:00:00+01:00",
                                  "utc": "2026-01-12T08:00:00Z"}
    assert weekly["last_digest"] == {
        "id": weekly["last_digest"]["id"],
        "period_key": "digest:2026-01-05T08:00Z",
        "kind": "digest",
        "created_at": "2026-01-05T08:01:00Z",
        "subject": weekly["last_digest"]["subject"],
        "entries": 1,
        "deliveries": {"queued": 0, "sending": 0, "sent": 2, "retrying": 1, "failed": 1,
                       "skipped": 0},
        "heard_back": {"sent": 2, "hard_bounces": 0, "soft_bounces": 0, "complaints": 0,
                       "bounce_rate": 0.0, "complaint_rate": 0.0, "flags": []},
    }
    assert "News of the week" in weekly["last_digest"]["subject"]
    assert weekly["subscriptions"] == {"digest": 4, "instant": 1}


def test_a_digest_with_category_variants_counts_the_variants_deliveries(
    make_site: SiteFactory, database_url: str, smtp_server: SmtpServer
) -> None:
    make_site(config=site_config(transport=smtp_server.url))
    settings = make_site.settings(
        {"FEEDPUB_SECRET": "test-secret", "FEEDPUB_DATABASE_URL": database_url}
    )
    with open_store(database_url) as store:
        make_editions(settings, store, T0)
        subscribe(store, "all@example.org")
        subscribe(store, "py@example.org", categories=["Python"])
        subscribe(store, "rust@example.org", categories=["Rust"])
        make_site.write("content/posts/2026-01-02-a.md", post("A", "2026-01-02",
                                                              categories=["Python"]))
        make_site.write("content/posts/2026-01-03-b.md", post("B", "2026-01-03",
                                                              categories=["Cooking"]))
        slot = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        (digest,) = make_editions(settings, store, slot).made
        assert digest.variants == 1 and digest.recipients == 2  # Rust readers get nothing
        status = site_status(settings, store, slot)
    (weekly,) = status.newsletters
    assert weekly.last_edition == weekly.last_digest
    assert weekly.last_digest is not None and weekly.last_digest.entries == 2
    assert weekly.last_digest.deliveries == DeliveryCounts(queued=2)


def test_a_site_without_a_database_shows_its_schedule_and_creates_nothing(
    make_site: SiteFactory, tmp_path: Path
) -> None:
    make_site(config=site_config(timezone="America/New_York", newsletters=NEWSLETTERS))
    database = tmp_path / "never.db"
    url = f"sqlite:///{database}"
    settings = make_site.settings({"FEEDPUB_SECRET": "x", "FEEDPUB_DATABASE_URL": url})
    store = open_existing_store(url)
    assert store is None and not database.exists()
    document = status_document(site_status(settings, store, SLOT))
    assert document["database"] is None
    assert document["subscribers"] == {"pending": 0, "active": 0, "unsubscribed": 0,
                                       "bounced": 0}
    weekly, daily = document["newsletters"]
    assert weekly["next_run"] == {"local": "2026-01-05T09:00:00-05:00",
                                  "utc": "2026-01-05T14:00:00Z"}
    assert daily["next_run"]["utc"] == "2026-01-05T12:30:00Z"
    assert weekly["last_edition"] is None and weekly["last_digest"] is None
