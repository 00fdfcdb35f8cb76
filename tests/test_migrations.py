"""Migrations: the shipped revisions build exactly the schema the code uses, and an
upgrade keeps every row."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner

from feedpub.cli import main
from feedpub.errors import StoreError
from feedpub.store import (
    Status,
    add_subscriber,
    create_store_engine,
    find_subscriber,
    forget_subscriber,
    get_events,
    get_subscriber,
    get_subscriptions,
    head_revision,
    open_store,
    subscriber_for_token,
)
from feedpub.store.addresses import parse_address
from feedpub.store.events import Target, add_event, claim_report, target_by_message_id
from feedpub.store.migrate import current_revision, upgrade
from feedpub.store.schema import (
    EventKind,
    announced_entries,
    deliveries,
    delivery_events,
    editions,
    inbound_reports,
    metadata,
    send_rate,
    subscriber_events,
    subscribers,
    subscriptions,
    suppressed_addresses,
)
from feedpub.store.subscribers import SuppressedAddress
from feedpub.tokens import Purpose, make_token, read_token
from tests.conftest import SiteFactory

T1 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
T2 = T1 + timedelta(days=2)
T3 = T1 + timedelta(days=30)

SUBSCRIBER_ROWS: list[dict[str, Any]] = [
    # Confirmed two days after signing up, then left.
    {"id": 1, "email": "Ada@example.com", "email_key": "ada@example.com", "name": "Ada 🦄",
     "status": "unsubscribed", "source": "web", "created_at": T1, "status_changed_at": T3,
     "confirmed_at": T2, "unsubscribed_at": T3, "bounced_at": None, "consecutive_failures": 0},
    # Added active from the command line.
    {"id": 2, "email": "王@例子.中国", "email_key": "王@例子.中国", "name": "王, 小明",
     "status": "active", "source": "cli", "created_at": T1, "status_changed_at": T1,
     "confirmed_at": T1, "unsubscribed_at": None, "bounced_at": None,
     "consecutive_failures": 1},
    # Imported, then bounced.
    {"id": 3, "email": "bob@example.org", "email_key": "bob@example.org", "name": None,
     "status": "bounced", "source": "import", "created_at": T1, "status_changed_at": T3,
     "confirmed_at": T1, "unsubscribed_at": None, "bounced_at": T3,
     "consecutive_failures": 3},
    # Never confirmed.
    {"id": 4, "email": "pending@example.net", "email_key": "pending@example.net", "name": None,
     "status": "pending", "source": "web", "created_at": T2, "status_changed_at": T2,
     "confirmed_at": None, "unsubscribed_at": None, "bounced_at": None,
     "consecutive_failures": 0},
]
OTHER_ROWS: list[tuple[sa.Table, list[dict[str, Any]]]] = [
    (subscriptions, [
        {"id": 1, "subscriber_id": 1, "newsletter": "weekly", "mode": "digest",
         "categories": '["python"]', "created_at": T1},
        {"id": 2, "subscriber_id": 2, "newsletter": "daily", "mode": "instant",
         "categories": "[]", "created_at": T1},
    ]),
    (editions, [
        {"id": 1, "newsletter": "weekly", "kind": "digest", "period_key": "2025-W10",
         "created_at": T2, "subject": "Week 10 — 周报", "html": "<p>hi</p>", "text": "hi",
         "entry_ids": '["tag:example.com,2025-03-01:a"]', "web_path": "editions/weekly/1.html",
         "status": "sent"},
    ]),
    (announced_entries, [
        {"id": 1, "newsletter": "weekly", "entry_id": "tag:example.com,2025-03-01:a",
         "announced_at": T2, "edition_id": 1},
    ]),
    (deliveries, [
        {"id": 1, "edition_id": 1, "subscriber_id": 1, "status": "sent", "attempts": 1,
         "next_attempt_at": T2, "claimed_by": None, "claimed_at": None, "sent_at": T2,
         "last_reply": "250 OK", "message_id": "<1@example.com>"},
        {"id": 2, "edition_id": 1, "subscriber_id": 3, "status": "failed", "attempts": 3,
         "next_attempt_at": T3, "claimed_by": "worker-1", "claimed_at": T3, "sent_at": None,
         "last_reply": "550 5.1.1 no such user", "message_id": None},
    ]),
    (send_rate, [{"name": "mail", "next_slot_at": 1740816000.25}]),
]


def _rows(conn: sa.Connection, table: sa.Table, columns: list[str]) -> list[tuple[Any, ...]]:
    cols = [table.c[name] for name in columns]
    return [tuple(r) for r in conn.execute(sa.select(*cols).order_by(cols[0]))]


def test_the_migrations_build_the_schema_the_code_declares(database_url: str) -> None:
    with open_store(database_url) as store, store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_upgrading_from_the_first_revision_keeps_every_row(database_url: str) -> None:
    engine = create_store_engine(database_url)
    try:
        assert upgrade(engine, "0001") == "0001"
        first_subscriber_columns = [k for k in SUBSCRIBER_ROWS[0]]
        with engine.begin() as conn:
            conn.execute(subscribers.insert(), SUBSCRIBER_ROWS)
            for table, rows in OTHER_ROWS:
                conn.execute(table.insert(), rows)
        with engine.connect() as conn:
            before = {table.name: _rows(conn, table, list(rows[0])) for table, rows in OTHER_ROWS}
            before["subscribers"] = _rows(conn, subscribers, first_subscriber_columns)
    finally:
        engine.dispose()

    with open_store(database_url) as store:
        with store.read() as conn:
            assert current_revision(conn) == head_revision() == "0008"
            after = {table.name: _rows(conn, table, list(rows[0])) for table, rows in OTHER_ROWS}
            after["subscribers"] = _rows(conn, subscribers, first_subscriber_columns)
            keys = conn.execute(sa.select(subscribers.c.token_key)).scalars().all()
            events = {sid: [(e.at, e.event) for e in get_events(conn, sid)] for sid in (1, 2, 3, 4)}
            ada = get_subscriber(conn, 1)
            wang_subs = get_subscriptions(conn, 2)
        assert after == before
        assert len(set(keys)) == 4 and all(k and len(k) == 32 for k in keys)
        assert events == {
            1: [(T1, "pending"), (T2, "active"), (T3, "unsubscribed")],
            2: [(T1, "active")],
            3: [(T1, "active"), (T3, "bounced")],
            4: [(T2, "pending")],
        }
        assert ada is not None and ada.status == Status.UNSUBSCRIBED and ada.name == "Ada 🦄"
        assert [(s.newsletter, s.mode.value) for s in wang_subs] == [("daily", "instant")]
        token = make_token("s", Purpose.UNSUBSCRIBE, 1, check=ada.token_key, now=T3)
        with store.read() as conn:
            claim = read_token("s", Purpose.UNSUBSCRIBE, token, max_age=None, now=T3)
            assert subscriber_for_token(conn, claim).id == 1


def test_upgrading_from_0002_keeps_every_row_and_starts_with_nothing_suppressed(
    database_url: str,
) -> None:
    engine = create_store_engine(database_url)
    tables = [subscribers, subscriber_events, *(table for table, _ in OTHER_ROWS)]
    try:
        assert upgrade(engine, "0002") == "0002"
        with engine.begin() as conn:
            conn.execute(subscribers.insert(), [
                {**row, "token_key": f"{row['id']:032x}"} for row in SUBSCRIBER_ROWS
            ])
            conn.execute(subscriber_events.insert(), [
                {"subscriber_id": 1, "at": T1, "event": "pending", "source": "web",
                 "detail": "signed up from 10.0.0.1\nline two"},
                {"subscriber_id": 1, "at": T3, "event": "unsubscribed",
                 "source": "web", "detail": "one-click (RFC 8058)"},
            ])
            for table, rows in OTHER_ROWS:
                conn.execute(table.insert(), rows)
        with engine.connect() as conn:
            before = {t.name: _rows(conn, t, [c.name for c in t.c]) for t in tables}
    finally:
        engine.dispose()

    with open_store(database_url) as store:
        with store.read() as conn:
            assert current_revision(conn) == head_revision()
            after = {t.name: _rows(conn, t, [c.name for c in t.c]) for t in tables}
            assert conn.execute(sa.select(sa.func.count()).select_from(
                suppressed_addresses)).scalar() == 0
        assert after == before
        assert len(before["subscribers"]) == 4 and len(before["deliveries"]) == 2
        with store.write() as conn:
            wang = find_subscriber(conn, "王@例子.中国")
            assert wang is not None
            forget_subscriber(conn, wang.id, now=T3)
        # (Typed today, this address is refused at the door: it needs SMTPUTF8.)
        legacy = parse_address("王@例子.中国", allow_smtputf8=True)
        with pytest.raises(SuppressedAddress, match=r"王@例子\.中国"), store.write() as conn:
            add_subscriber(conn, legacy, now=T3)


def test_upgrading_from_0003_keeps_every_row_and_starts_with_no_delivery_events(
    database_url: str,
) -> None:
    engine = create_store_engine(database_url)
    tables = [subscribers, subscriber_events, suppressed_addresses,
              *(table for table, _ in OTHER_ROWS)]
    try:
        assert upgrade(engine, "0003") == "0003"
        with engine.begin() as conn:
            conn.execute(subscribers.insert(), [
                {**row, "token_key": f"{row['id']:032x}"} for row in SUBSCRIBER_ROWS
            ])
            for table, rows in OTHER_ROWS:
                conn.execute(table.insert(), rows)
            conn.execute(suppressed_addresses.insert(), [
                {"hash": "ab" * 32, "reason": "forgotten", "at": T2},
            ])
        with engine.connect() as conn:
            before = {t.name: _rows(conn, t, [c.name for c in t.c]) for t in tables}
    finally:
        engine.dispose()

    with open_store(database_url) as store:
        with store.read() as conn:
            after = {t.name: _rows(conn, t, [c.name for c in t.c]) for t in tables}
            for table in (delivery_events, inbound_reports):
                assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
            # The new index finds a delivery by the Message-ID a bounce quotes.
            assert target_by_message_id(conn, "<1@example.com>") == Target(1, 1, 1)
        assert after == before
        with store.write() as conn:
            assert claim_report(conn, "mail:<b@x>", "dsn", now=T3, outcome="events")
            add_event(conn, Target(3, 2, 1), kind=EventKind.HARD, source="dsn", at=T3,
                      status_code="5.1.1", reason="550 bob@example.org unknown",
                      report_key="mail:<b@x>")
            assert not claim_report(conn, "mail:<b@x>", "dsn", now=T3, outcome="events")
            forget_subscriber(conn, 3, now=T3)
        with store.read() as conn:
            rows = conn.execute(sa.select(delivery_events.c.kind, delivery_events.c.reason,
                                          delivery_events.c.edition_id)).all()
        assert [tuple(r) for r in rows] == [("hard", "", 1)]


def test_a_database_from_a_newer_feedpub_is_refused(database_url: str) -> None:
    with open_store(database_url) as store, store.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="newer feedpub"):
        open_store(database_url)


def test_three_callers_opening_a_fresh_database_at_once_all_succeed(database_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def opener() -> None:
        try:
            barrier.wait()
            open_store(database_url).close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with open_store(database_url) as store, store.read() as conn:
        assert current_revision(conn) == head_revision()


def test_unreachable_databases_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open database") as caught:
        open_store(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'feedpub.db'}")
    assert "Traceback" not in str(caught.value)
    with pytest.raises(StoreError, match="cannot open database"):
        open_store("postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError) as bad_url:
        open_store("mysql+nosuchdriver://x@y/z")
    assert "sqlite:///FILE" in str(bad_url.value)


def test_the_password_is_not_shown_in_errors() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("postgresql+psycopg://user:hunter2@127.0.0.1:1/db?connect_timeout=2")
    assert "hunter2" not in str(caught.value)


def test_db_upgrade_command(make_site: SiteFactory, cli_env: Callable[..., Any]) -> None:
    site = make_site()
    engine = create_store_engine(f"sqlite:///{site / 'feedpub.db'}")
    upgrade(engine, "0001")
    engine.dispose()
    runner = CliRunner()
    first = runner.invoke(main, ["--site", str(site), "db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert "from 0001 to 0008" in first.stdout
    second = runner.invoke(main, ["--site", str(site), "db", "upgrade"])
    assert second.exit_code == 0
    assert "already at the latest revision (0008)" in second.stdout
