"""Subscribers on SQLite and PostgreSQL: addresses, statuses, consent log, subscriptions,
forgetting, and the CSV import and export."""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedpub.errors import StoreError
from feedpub.store import (
    CsvError,
    ImportReport,
    InvalidAddress,
    Mode,
    Source,
    Status,
    Store,
    add_subscriber,
    confirm_subscriber,
    count_by_status,
    export_subscribers,
    find_subscriber,
    forget_subscriber,
    get_events,
    get_subscriber,
    get_subscriptions,
    import_subscribers,
    iter_subscribed,
    iter_subscribers,
    mark_bounced,
    open_store,
    parse_address,
    record_delivery_failure,
    record_delivery_success,
    remove_subscription,
    set_subscription,
    unsubscribe_subscriber,
)
from feedpub.store.schema import (
    deliveries,
    editions,
    subscriber_events,
    subscribers,
    suppressed_addresses,
)
from feedpub.store.subscribers import (
    SUPPRESSION_KEY,
    SuppressedAddress,
    change_status,
    next_status,
    suppressed_since,
)

T1 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T2 = T1 + timedelta(days=1)
T3 = T1 + timedelta(days=2)
T4 = T1 + timedelta(days=3)
NEWSLETTERS = ("weekly", "daily")


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    try:
        yield opened
    finally:
        opened.close()


def run_import(store: Store, text: str, **options: object) -> ImportReport:
    kwargs: dict[str, object] = {"now": T1, "newsletters": NEWSLETTERS,
                                 "default_newsletter": "weekly"}
    kwargs.update(options)
    return import_subscribers(store, io.StringIO(text, newline=""), **kwargs)  # type: ignore[arg-type]


def export_text(store: Store) -> str:
    out = io.StringIO()
    with store.read() as conn:
        export_subscribers(conn, out)
    return out.getvalue()


# --- addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "email", "key", "name"),
    [
        ("Ada@Example.COM", "Ada@example.com", "ada@example.com", None),
        ("  ada@example.com \n", "ada@example.com", "ada@example.com", None),
        ("Ada Lovelace <ada@example.com>", "ada@example.com", "ada@example.com", "Ada Lovelace"),
        ('"Lovelace, Ada" <ada@example.com>', "ada@example.com", "ada@example.com",
         "Lovelace, Ada"),
        ('"王 小明 🦄" <wang@example.cn>', "wang@example.cn", "wang@example.cn", "王 小明 🦄"),
        ("zoe@Bücher.DE", "zoe@bücher.de", "zoe@bücher.de", None),
        ("zoe@xn--bcher-kva.de", "zoe@bücher.de", "zoe@bücher.de", None),
        ("user@例子.广告", "user@例子.广告", "user@例子.广告", None),
        ("POSTMASTER@Example.com", "postmaster@example.com", "postmaster@example.com", None),
        ("o'brien+news@sub.example.co.uk", "o'brien+news@sub.example.co.uk",
         "o'brien+news@sub.example.co.uk", None),
    ],
)
def test_addresses_are_normalised(typed: str, email: str, key: str, name: str | None) -> None:
    address = parse_address(typed)
    assert (address.email, address.key, address.name) == (email, key, name)


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "   ",
        "ada",
        "ada@",
        "@example.com",
        "ada..lovelace@example.com",
        "ada@example..com",
        "ada@localhost",
        "ada@example.invalid",
        "ada@exa mple.com",
        "ada@example.com\nBcc: everyone@example.com",
        "jörg@example.com",  # needs SMTPUTF8: refused at the door, never accepted unsent
        "用户@例子.广告",
        "Ada <ada@example.com",
        "ada@-example.com",
        "ada@example.com>",
        "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com",
    ],
)
def test_invalid_addresses_are_refused_with_the_address_in_the_message(typed: str) -> None:
    with pytest.raises(InvalidAddress) as caught:
        parse_address(typed)
    assert "\n" not in str(caught.value)
    if typed.strip():
        assert repr(typed.strip()) in str(caught.value)


ADDRESS_ALPHABET = "abcXYZ019.-_+'@!#~ ü"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    local=st.text(ADDRESS_ALPHABET, min_size=0, max_size=12),
    domain=st.text("abcXY019.-ü", min_size=0, max_size=16),
    tld=st.sampled_from(["com", "COM", "c", "co", "test", "local", "onion", "123", "xn--p1ai",
                         "example", "arpa", ""]),
)
def test_parse_address_agrees_with_email_validator(local: str, domain: str, tld: str) -> None:
    typed = f"{local}@{domain}.{tld}" if tld else f"{local}@{domain}"
    try:
        # Without SMTPUTF8: a non-ASCII local part is refused at the door.
        expected = validate_email(typed.strip(), check_deliverability=False,
                                  allow_display_name=True, allow_smtputf8=False).normalized
    except EmailNotValidError:
        expected = None
    if not typed.strip():
        expected = None
    try:
        got: str | None = parse_address(typed).email
    except InvalidAddress:
        got = None
    assert got == expected


@pytest.mark.parametrize("local", ["postmaster", "Abuse", "WEBMASTER", "ada", "first.last"])
def test_parse_address_keeps_email_validators_mailbox_rules(local: str) -> None:
    typed = f"{local}@Example.org"
    assert parse_address(typed).email == validate_email(
        typed, check_deliverability=False
    ).normalized


# --- adding and uniqueness ---------------------------------------------------------------


def test_the_same_address_in_any_case_is_one_subscriber(store: Store) -> None:
    with store.write() as conn:
        first = add_subscriber(conn, "ADA@Example.com", now=T1)
        second = add_subscriber(conn, "ada@EXAMPLE.COM", now=T2)
        third = add_subscriber(conn, "Ada Lovelace <Ada@example.com>", now=T3)
    assert first.created and not second.created and not third.created
    assert first.subscriber.id == second.subscriber.id == third.subscriber.id
    assert first.subscriber.email == "ADA@example.com"
    assert not second.changed
    assert third.changed and third.subscriber.name == "Ada Lovelace"
    with store.read() as conn:
        assert sum(count_by_status(conn).values()) == 1
        found = find_subscriber(conn, "ada@example.com")
    assert found is not None and found.created_at == T1


def test_idn_domain_in_unicode_or_punycode_is_one_subscriber(store: Store) -> None:
    with store.write() as conn:
        first = add_subscriber(conn, "zoe@bücher.de", now=T1)
        second = add_subscriber(conn, "ZOE@xn--bcher-kva.de", now=T1)
    assert not second.created
    assert second.subscriber.id == first.subscriber.id


def test_invalid_address_adds_nothing(store: Store) -> None:
    with pytest.raises(InvalidAddress), store.write() as conn:
        add_subscriber(conn, "not an address", now=T1)
    with store.read() as conn:
        assert count_by_status(conn) == dict.fromkeys(Status, 0)


def test_names_are_one_line_of_text(store: Store) -> None:
    with store.write() as conn:
        added = add_subscriber(conn, "ada@example.com", name="  Ada\r\n Lovelace\t\u200b ",
                               now=T1)
    assert added.subscriber.name == "Ada Lovelace"


def test_timestamps_come_back_aware_in_utc(store: Store) -> None:
    beijing = datetime(2026, 1, 5, 17, 0, tzinfo=timezone(timedelta(hours=8)))
    with store.write() as conn:
        added = add_subscriber(conn, "ada@example.com", now=beijing, status=Status.ACTIVE)
    with store.read() as conn:
        subscriber = get_subscriber(conn, added.subscriber.id)
    assert subscriber is not None
    assert subscriber.created_at == T1
    assert subscriber.created_at.utcoffset() == timedelta(0)
    assert subscriber.confirmed_at == T1


def test_naive_times_are_refused(store: Store) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive"), store.write() as conn:
        add_subscriber(conn, "ada@example.com", now=datetime(2026, 1, 5, 9, 0))


# --- statuses and the consent record ---------------------------------------------------------


def test_status_changes_are_timed_and_logged(store: Store) -> None:
    with store.write() as conn:
        sid = add_subscriber(conn, "ada@example.com", now=T1, source=Source.WEB).subscriber.id
    with store.write() as conn:
        confirmed = confirm_subscriber(conn, sid, now=T2)
    assert (confirmed.status, confirmed.confirmed_at, confirmed.status_changed_at) == (
        Status.ACTIVE, T2, T2
    )
    with store.write() as conn:
        gone = unsubscribe_subscriber(conn, sid, now=T3, detail="one-click")
    assert (gone.status, gone.unsubscribed_at, gone.confirmed_at) == (Status.UNSUBSCRIBED, T3, T2)
    with store.write() as conn:
        again = confirm_subscriber(conn, sid, now=T4)
        refused = add_subscriber(conn, "ada@example.com", now=T4, status=Status.ACTIVE)
    assert again.status == Status.UNSUBSCRIBED
    assert refused.refused and not refused.changed
    assert refused.subscriber.status == Status.UNSUBSCRIBED
    with store.write() as conn:
        back = add_subscriber(conn, "ada@example.com", now=T4, status=Status.ACTIVE,
                              source=Source.CLI, resubscribe=True)
    assert back.changed and back.subscriber.status == Status.ACTIVE
    assert back.subscriber.confirmed_at == T4 and back.subscriber.unsubscribed_at == T3
    with store.read() as conn:
        events = [(e.at, e.event, e.source, e.detail) for e in get_events(conn, sid)]
    assert events == [
        (T1, "pending", "web", ""),
        (T2, "active", "web", ""),
        (T3, "unsubscribed", "web", "one-click"),
        (T4, "active", "cli", ""),
    ]


def test_repeated_hard_failures_mark_a_subscriber_bounced(store: Store) -> None:
    with store.write() as conn:
        sid = add_subscriber(conn, "ada@example.com", now=T1,
                             status=Status.ACTIVE).subscriber.id
        record_delivery_failure(conn, sid, now=T2, bounce_after=2)
        record_delivery_success(conn, sid)
        once = record_delivery_failure(conn, sid, now=T2, bounce_after=2)
        twice = record_delivery_failure(conn, sid, now=T3, bounce_after=2, detail="550 no user")
    assert (once.status, once.consecutive_failures) == (Status.ACTIVE, 1)
    assert (twice.status, twice.bounced_at, twice.consecutive_failures) == (Status.BOUNCED, T3, 2)
    with store.read() as conn:
        last = get_events(conn, sid)[-1]
    assert (last.event, last.source, last.detail) == ("bounced", "sender", "550 no user")


def test_an_unsubscribed_address_is_not_marked_bounced(store: Store) -> None:
    with store.write() as conn:
        sid = add_subscriber(conn, "ada@example.com", now=T1,
                             status=Status.ACTIVE).subscriber.id
        unsubscribe_subscriber(conn, sid, now=T2)
        after = mark_bounced(conn, sid, now=T3)
    assert after.status == Status.UNSUBSCRIBED and after.bounced_at is None


@pytest.mark.parametrize(
    ("current", "requested", "resubscribe", "expected"),
    [
        (Status.PENDING, Status.ACTIVE, False, Status.ACTIVE),
        (Status.ACTIVE, Status.PENDING, False, None),
        (Status.ACTIVE, Status.ACTIVE, False, None),
        (Status.UNSUBSCRIBED, Status.ACTIVE, False, None),
        (Status.BOUNCED, Status.ACTIVE, False, None),
        (Status.UNSUBSCRIBED, Status.ACTIVE, True, Status.ACTIVE),
        (Status.BOUNCED, Status.PENDING, True, Status.PENDING),
        (Status.ACTIVE, Status.UNSUBSCRIBED, False, Status.UNSUBSCRIBED),
        (Status.BOUNCED, Status.UNSUBSCRIBED, False, Status.UNSUBSCRIBED),
        (Status.UNSUBSCRIBED, Status.BOUNCED, True, None),
        (Status.PENDING, Status.BOUNCED, False, Status.BOUNCED),
    ],
)
def test_next_status(
    current: Status, requested: Status, resubscribe: bool, expected: Status | None
) -> None:
    assert next_status(current, requested, resubscribe=resubscribe) == expected


# --- subscriptions ---------------------------------------------------------------------------


def test_subscriptions_are_set_changed_and_removed(store: Store) -> None:
    with store.write() as conn:
        sid = add_subscriber(conn, "ada@example.com", now=T1,
                             status=Status.ACTIVE).subscriber.id
        set_subscription(conn, sid, "weekly", now=T1)
        set_subscription(conn, sid, "daily", now=T1, mode=Mode.INSTANT,
                         categories=[" web", "Python", "", "web", "日本語"])
        changed = set_subscription(conn, sid, "weekly", now=T2, categories=["python"])
    assert changed.created_at == T1 and changed.categories == ("python",)
    with store.read() as conn:
        subs = get_subscriptions(conn, sid)
    assert [(s.newsletter, s.mode, s.categories) for s in subs] == [
        ("daily", Mode.INSTANT, ("Python", "web", "日本語")),
        ("weekly", Mode.DIGEST, ("python",)),
    ]
    assert subs[0].wants(["web"]) and not subs[0].wants(["python"])
    with store.write() as conn:
        assert remove_subscription(conn, sid, "daily")
        assert not remove_subscription(conn, sid, "daily")
        assert [s.newsletter for s in get_subscriptions(conn, sid)] == ["weekly"]


def test_iter_subscribed_yields_only_active_subscribers_of_that_newsletter(store: Store) -> None:
    with store.write() as conn:
        ids = {}
        for email, status in [("a@example.com", Status.ACTIVE), ("b@example.com", Status.PENDING),
                              ("c@example.com", Status.ACTIVE), ("d@example.com", Status.ACTIVE)]:
            ids[email] = add_subscriber(conn, email, now=T1, status=status).subscriber.id
        set_subscription(conn, ids["a@example.com"], "weekly", now=T1)
        set_subscription(conn, ids["b@example.com"], "weekly", now=T1)
        set_subscription(conn, ids["c@example.com"], "weekly", now=T1, mode=Mode.INSTANT)
        set_subscription(conn, ids["d@example.com"], "daily", now=T1)
        unsubscribe_subscriber(conn, ids["d@example.com"], now=T2)
    with store.read() as conn:
        weekly = [(s.email, sub.mode) for s, sub in iter_subscribed(conn, "weekly")]
        instant = [s.email for s, _ in iter_subscribed(conn, "weekly", mode=Mode.INSTANT)]
        daily = list(iter_subscribed(conn, "daily"))
    assert weekly == [("a@example.com", Mode.DIGEST), ("c@example.com", Mode.INSTANT)]
    assert instant == ["c@example.com"]
    assert daily == []


def test_listing_streams_in_id_order_and_counts_every_status(store: Store) -> None:
    with store.write() as conn:
        for n in range(25):
            status = [Status.PENDING, Status.ACTIVE, Status.ACTIVE][n % 3]
            add_subscriber(conn, f"user{n}@example.com", now=T1, status=status)
    with store.read() as conn:
        active = [s.email for s in iter_subscribers(conn, status=Status.ACTIVE, batch_size=4)]
        everyone = list(iter_subscribers(conn, batch_size=4))
        counts = count_by_status(conn)
    assert active == [f"user{n}@example.com" for n in range(25) if n % 3]
    assert [s.id for s in everyone] == sorted(s.id for s in everyone)
    assert counts == {Status.PENDING: 9, Status.ACTIVE: 16, Status.UNSUBSCRIBED: 0,
                      Status.BOUNCED: 0}


# --- forgetting --------------------------------------------------------------------------------


def test_forget_erases_personal_data_but_keeps_deliveries(store: Store) -> None:
    with store.write() as conn:
        sid = add_subscriber(conn, "Ada Lovelace <ada@example.com>", now=T1,
                             status=Status.ACTIVE, detail="signed up at 10.0.0.1").subscriber.id
        set_subscription(conn, sid, "weekly", now=T1)
        edition_id = conn.execute(
            editions.insert().values(newsletter="weekly", kind="digest", period_key="2026-W02",
                                     created_at=T1, subject="s", html="h", text="t",
                                     status="sent").returning(editions.c.id)
        ).scalar_one()
        conn.execute(deliveries.insert().values(edition_id=edition_id, subscriber_id=sid,
                                                status="sent", attempts=1, sent_at=T1))
        before = get_subscriber(conn, sid)
    with store.write() as conn:
        forgotten = forget_subscriber(conn, sid, now=T2)
    assert before is not None and forgotten.token_key != before.token_key
    assert forgotten.forgotten and "ada" not in forgotten.email.lower()
    assert forgotten.name is None
    assert forgotten.status == Status.UNSUBSCRIBED and forgotten.unsubscribed_at == T2
    with store.read() as conn:
        assert find_subscriber(conn, "ada@example.com") is None
        assert get_subscriptions(conn, sid) == []
        assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar() == 1
        details = conn.execute(sa.select(subscriber_events.c.detail)).scalars().all()
        events = [e.event for e in get_events(conn, sid)]
    assert all("10.0.0.1" not in d for d in details)
    assert events == ["active", "forgotten"]
    assert "ada@example.com" not in export_text(store)
    with store.write() as conn:
        again = add_subscriber(conn, "ada@example.com", now=T3, resubscribe=True)
    assert again.created and again.subscriber.id != sid


def test_two_forgotten_subscribers_do_not_collide(store: Store) -> None:
    with store.write() as conn:
        first = add_subscriber(conn, "ada@example.com", now=T1).subscriber.id
        forget_subscriber(conn, first, now=T2)
        second = add_subscriber(conn, "ada@example.com", now=T3, resubscribe=True).subscriber.id
        forget_subscriber(conn, second, now=T4)
        assert count_by_status(conn)[Status.UNSUBSCRIBED] == 2


def _forget(store: Store, address: str, *, now: datetime = T2) -> int:
    with store.write() as conn:
        found = find_subscriber(conn, address)
        assert found is not None
        forget_subscriber(conn, found.id, now=now)
        return found.id


def test_forgetting_keeps_a_keyed_hash_and_nothing_readable(store: Store) -> None:
    with store.write() as conn:
        add_subscriber(conn, "Bob Example <BOB@Example.com>", now=T1, status=Status.ACTIVE)
    _forget(store, "bob@example.com")
    with store.read() as conn:
        rows = conn.execute(sa.select(suppressed_addresses)).all()
        assert suppressed_since(conn, "bob@EXAMPLE.com") == T2
        assert suppressed_since(conn, "carol@example.com") is None
    [(hashed, reason, at)] = rows
    assert (reason, at) == ("forgotten", T2)
    assert len(hashed) == 64 and "bob" not in hashed.lower()
    assert hashed != hashlib.sha256(b"bob@example.com").hexdigest()
    # HMAC-SHA256 under the fixed key, as stored by every earlier version: hashes kept
    # before stay recognised.
    assert hashed == hmac.new(SUPPRESSION_KEY, b"bob@example.com", "sha256").hexdigest()


def test_a_forgotten_address_is_refused_unless_resubscribed(store: Store) -> None:
    with store.write() as conn:
        sid = add_subscriber(conn, "bob@example.com", now=T1, status=Status.ACTIVE).subscriber.id
        forget_subscriber(conn, sid, now=T2)
        forget_subscriber(conn, sid, now=T3)  # a second erasure changes nothing
    for status in (Status.PENDING, Status.ACTIVE, Status.UNSUBSCRIBED):
        with pytest.raises(SuppressedAddress, match=r"BOB@example\.com was forgotten .* "
                           r"2026-01-06.*--resubscribe"), store.write() as conn:
            add_subscriber(conn, "Bob <BOB@example.com>", now=T3, status=status)
    with store.read() as conn:
        assert count_by_status(conn)[Status.UNSUBSCRIBED] == 1
    with store.write() as conn:
        back = add_subscriber(conn, "bob@example.com", now=T3, status=Status.ACTIVE,
                              resubscribe=True)
        assert back.created and back.subscriber.status == Status.ACTIVE
        assert suppressed_since(conn, "bob@example.com") is None


def test_a_web_sign_up_of_a_forgotten_address_waits_for_its_confirmation(store: Store) -> None:
    with store.write() as conn:
        add_subscriber(conn, "bob@example.com", now=T1, status=Status.ACTIVE)
    _forget(store, "bob@example.com")
    with store.write() as conn:
        signed_up = add_subscriber(conn, "bob@example.com", now=T3, status=Status.PENDING,
                                   source=Source.WEB)
        set_subscription(conn, signed_up.subscriber.id, "weekly", now=T3)
    assert signed_up.created and signed_up.subscriber.status == Status.PENDING
    # Until the link is followed, an old list still cannot make them active.
    report = run_import(store, "email,status\nbob@example.com,active\n", now=T3)
    assert (report.unchanged, report.not_resubscribed) == (1, 1)
    with store.write() as conn:
        assert suppressed_since(conn, "bob@example.com") == T2
        confirmed = change_status(conn, signed_up.subscriber.id, Status.ACTIVE, now=T4,
                                  source=Source.WEB, resubscribe=True)
        assert confirmed.status == Status.ACTIVE
        assert suppressed_since(conn, "bob@example.com") is None


FORGOTTEN_EXPORT = (
    "email,name,status,newsletter,mode,categories\n"
    "BOB@example.com,Bob,active,weekly,digest,\n"
    "bob@example.com,Bob,active,daily,instant,\"python,web\"\n"
    "ada@example.com,Ada,active,weekly,digest,\n"
)


def test_an_old_export_does_not_bring_a_forgotten_address_back(store: Store) -> None:
    run_import(store, FORGOTTEN_EXPORT)
    _forget(store, "bob@example.com")
    report = run_import(store, FORGOTTEN_EXPORT, now=T3)
    assert (report.added, report.updated, report.unchanged) == (0, 0, 3)
    assert report.not_resubscribed == 2
    left = run_import(store, "email,status\nbob@example.com,unsubscribed\n", now=T3)
    assert (left.unchanged, left.not_resubscribed) == (1, 0)
    with store.read() as conn:
        assert find_subscriber(conn, "bob@example.com") is None
        assert count_by_status(conn) == {Status.PENDING: 0, Status.ACTIVE: 1,
                                         Status.UNSUBSCRIBED: 1, Status.BOUNCED: 0}
    assert "bob" not in export_text(store).lower()


def test_importing_with_resubscribe_brings_a_forgotten_address_back(store: Store) -> None:
    run_import(store, FORGOTTEN_EXPORT)
    _forget(store, "bob@example.com")
    report = run_import(store, FORGOTTEN_EXPORT, now=T3, resubscribe=True, batch_size=2)
    assert (report.added, report.updated, report.unchanged) == (1, 1, 1)
    with store.read() as conn:
        bob = find_subscriber(conn, "bob@example.com")
        assert bob is not None and bob.status == Status.ACTIVE and bob.email == "BOB@example.com"
        assert [s.newsletter for s in get_subscriptions(conn, bob.id)] == ["daily", "weekly"]
        assert suppressed_since(conn, "bob@example.com") is None


# --- import ----------------------------------------------------------------------------------


UGLY_CSV = (
    "\ufeffEmail , Name,Status,newsletter,MODE,categories,favourite colour\r\n"
    "ada@example.com,Ada Lovelace,active,weekly,digest,,blue\r\n"
    "\r\n"
    '"Grace Hopper <GRACE@example.org>",,pending,daily,instant,"python, web",\r\n'
    "not-an-address,Nobody,active,weekly,,,\r\n"
    'wang@例子.中国,"王, 小明\n(Beijing)",ACTIVE,weekly,,,\r\n'
    "emoji@example.com,🦄 Unicorn,sleeping,weekly,,,\r\n"
    "bob@example.com,Bob,active,monthly,,,\r\n"
    "carol@example.com,Carol,active,weekly,sometimes,,\r\n"
    "ADA@EXAMPLE.COM,,,daily,instant,,\r\n"
    "dave@example.com,Dave,active,,instant,,\r\n"
    "erin@example.com,Erin,active,weekly,digest,,,,surplus\r\n"
)


def test_import_reports_invalid_rows_by_line_and_imports_the_rest(store: Store) -> None:
    report = run_import(store, UGLY_CSV, path="list.csv")
    problems = {p.line: p.message for p in report.skipped}
    assert sorted(problems) == [5, 8, 9, 10, 12, 13]
    assert "not-an-address" in problems[5]
    assert "sleeping" in problems[8]
    assert "monthly" in problems[9] and "weekly, daily" in problems[9].replace("'", "")
    assert "sometimes" in problems[10]
    assert "without a newsletter" in problems[12]
    assert "cells" in problems[13]
    assert (report.added, report.updated, report.unchanged) == (3, 1, 0)
    assert report.ignored_columns == ("favourite colour",)
    with store.read() as conn:
        ada = find_subscriber(conn, "ada@example.com")
        grace = find_subscriber(conn, "grace@example.org")
        wang = find_subscriber(conn, "wang@例子.中国")
        assert ada is not None and grace is not None and wang is not None
        ada_subs = [(s.newsletter, s.mode) for s in get_subscriptions(conn, ada.id)]
        grace_subs = get_subscriptions(conn, grace.id)
        ada_events = get_events(conn, ada.id)
    assert (ada.name, ada.status, ada.source) == ("Ada Lovelace", Status.ACTIVE, "import")
    assert ada_subs == [("daily", Mode.INSTANT), ("weekly", Mode.DIGEST)]
    assert (grace.email, grace.name, grace.status) == ("GRACE@example.org", "Grace Hopper",
                                                       Status.PENDING)
    assert [(s.newsletter, s.mode, s.categories) for s in grace_subs] == [
        ("daily", Mode.INSTANT, ("python", "web"))
    ]
    assert wang.name == "王, 小明 (Beijing)"
    assert [(e.event, e.source, e.detail) for e in ada_events] == [
        ("active", "import", "list.csv line 2")
    ]


def test_importing_the_same_file_twice_changes_nothing(store: Store) -> None:
    first = run_import(store, UGLY_CSV)
    exported = export_text(store)
    with store.read() as conn:
        events = conn.execute(sa.select(sa.func.count()).select_from(subscriber_events)).scalar()
    second = run_import(store, UGLY_CSV, now=T2)
    assert (second.added, second.updated) == (0, 0)
    assert second.unchanged == first.added + first.updated
    assert [p.line for p in second.skipped] == [p.line for p in first.skipped]
    assert export_text(store) == exported
    with store.read() as conn:
        assert conn.execute(
            sa.select(sa.func.count()).select_from(subscriber_events)
        ).scalar() == events


def test_import_never_resubscribes_unless_asked(store: Store) -> None:
    with store.write() as conn:
        gone = add_subscriber(conn, "gone@example.com", now=T1, status=Status.ACTIVE)
        unsubscribe_subscriber(conn, gone.subscriber.id, now=T2)
        dead = add_subscriber(conn, "dead@example.com", now=T1, status=Status.ACTIVE)
        mark_bounced(conn, dead.subscriber.id, now=T2)
    text = "email,status\ngone@example.com,active\ndead@example.com,\nnew@example.com,\n"
    report = run_import(store, text, now=T3)
    assert (report.added, report.updated, report.unchanged, report.not_resubscribed) == (1, 0, 2, 2)
    with store.read() as conn:
        statuses = {s.email: s.status for s in iter_subscribers(conn)}
        gone_subs = get_subscriptions(conn, gone.subscriber.id)
    assert statuses == {"gone@example.com": Status.UNSUBSCRIBED,
                        "dead@example.com": Status.BOUNCED, "new@example.com": Status.ACTIVE}
    assert gone_subs == []

    forced = run_import(store, text, now=T4, resubscribe=True)
    assert (forced.updated, forced.unchanged, forced.not_resubscribed) == (2, 1, 0)
    with store.read() as conn:
        gone_now = find_subscriber(conn, "gone@example.com")
        assert gone_now is not None
        assert (gone_now.status, gone_now.confirmed_at) == (Status.ACTIVE, T4)
        assert [e.event for e in get_events(conn, gone_now.id)] == [
            "active", "unsubscribed", "active"
        ]


def test_import_can_unsubscribe_and_never_makes_active_pending(store: Store) -> None:
    with store.write() as conn:
        add_subscriber(conn, "a@example.com", now=T1, status=Status.ACTIVE)
        add_subscriber(conn, "b@example.com", now=T1, status=Status.ACTIVE)
    report = run_import(store, "email,status\na@example.com,pending\nb@example.com,unsubscribed\n",
                        now=T2, default_newsletter=None)
    assert (report.updated, report.unchanged) == (1, 1)
    with store.read() as conn:
        a, b = find_subscriber(conn, "a@example.com"), find_subscriber(conn, "b@example.com")
    assert a is not None and a.status == Status.ACTIVE
    assert b is not None and (b.status, b.unsubscribed_at) == (Status.UNSUBSCRIBED, T2)


def test_import_without_newsletter_column_uses_the_default(store: Store) -> None:
    run_import(store, "email\nada@example.com\n", default_newsletter="daily")
    run_import(store, "email,newsletter\nbob@example.com,\n", default_newsletter="daily")
    with store.read() as conn:
        ada = find_subscriber(conn, "ada@example.com")
        bob = find_subscriber(conn, "bob@example.com")
        assert ada is not None and bob is not None
        assert [s.newsletter for s in get_subscriptions(conn, ada.id)] == ["daily"]
        assert get_subscriptions(conn, bob.id) == []


def test_import_works_across_batches_with_repeated_addresses(store: Store) -> None:
    rows = ["email,newsletter,mode"]
    for n in range(7):
        rows.append(f"user{n}@example.com,weekly,digest")
    rows += ["USER1@example.com,daily,instant", "user1@example.com,weekly,instant",
             "user6@example.com,daily,digest"]
    seen: list[int] = []
    report = run_import(store, "\n".join(rows) + "\n", batch_size=3, progress=seen.append)
    assert (report.added, report.updated, report.unchanged) == (7, 3, 0)
    assert seen == [3, 6, 9, 10]
    with store.read() as conn:
        user1 = find_subscriber(conn, "user1@example.com")
        assert user1 is not None
        subs = [(s.newsletter, s.mode) for s in get_subscriptions(conn, user1.id)]
        assert sum(count_by_status(conn).values()) == 7
    assert subs == [("daily", Mode.INSTANT), ("weekly", Mode.INSTANT)]


def test_imported_rows_are_stored_as_the_rest_of_the_store_stores_them(store: Store) -> None:
    """The import writes with COPY (PostgreSQL) or a plain executemany (SQLite): its rows
    must read, sort and compare like rows written through SQLAlchemy, and the ids it
    chose must leave the next subscriber added one way or the other a new id."""
    with store.write() as conn:
        before = add_subscriber(conn, "before@example.com", now=T1, status=Status.ACTIVE)
    report = run_import(store, "email,name,categories\nada@example.com,Ada,\"web, python\"\n"
                        "bob@example.com,,\n", now=T2)
    assert report.added == 2
    with store.write() as conn:
        after = add_subscriber(conn, "after@example.com", now=T3, status=Status.ACTIVE)
    report = run_import(store, "email\ncyd@example.com\n", now=T3)
    assert report.added == 1
    with store.read() as conn:
        ada = find_subscriber(conn, "ada@example.com")
        cyd = find_subscriber(conn, "cyd@example.com")
        assert ada is not None and cyd is not None
        ids = [before.subscriber.id, ada.id, after.subscriber.id, cyd.id]
        assert len(set(ids)) == 4
        assert ada.created_at == ada.confirmed_at == T2
        assert ada.created_at.tzinfo is not None
        assert ada.name == "Ada" and len(ada.token_key) == 32
        assert [(e.event, e.source, e.at) for e in get_events(conn, ada.id)] == [
            ("active", "import", T2)]
        (sub,) = get_subscriptions(conn, ada.id)
        assert (sub.newsletter, sub.categories, sub.created_at) == (
            "weekly", ("python", "web"), T2)
        # Stored as SQLAlchemy stores them: the same text on SQLite, so they sort and compare.
        stored = conn.execute(
            sa.select(sa.cast(subscribers.c.created_at, sa.String))
            .where(subscribers.c.id.in_([before.subscriber.id, ada.id]))
            .order_by(subscribers.c.id)
        ).scalars().all()
        assert len({len(text) for text in stored}) == 1
        newer = conn.execute(
            sa.select(subscribers.c.id).where(subscribers.c.created_at > T1)
            .order_by(subscribers.c.id)
        ).scalars().all()
        assert newer == sorted([ada.id, find_subscriber(conn, "bob@example.com").id,  # type: ignore[union-attr]
                                after.subscriber.id, cyd.id])


def test_a_failing_batch_leaves_nothing_of_itself(store: Store) -> None:
    """Each batch is one transaction: when its write fails, none of its rows, events or
    subscriptions stay, and importing the file again completes it."""
    text = "email,newsletter\n" + "".join(f"user{n}@example.com,weekly\n" for n in range(5))
    if store.dialect == "sqlite":
        trigger = ("CREATE TRIGGER fail_fourth BEFORE INSERT ON subscriptions "
                   "WHEN NEW.subscriber_id >= 4 BEGIN SELECT RAISE(ABORT, 'boom'); END")
        drop = "DROP TRIGGER fail_fourth"
        with store.write() as conn:
            conn.exec_driver_sql(trigger)
    else:
        with store.write() as conn:
            conn.exec_driver_sql(
                "CREATE FUNCTION fail_fourth() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.subscriber_id >= 4 THEN RAISE EXCEPTION 'boom'; END IF; "
                "RETURN NEW; END $$")
            conn.exec_driver_sql(
                "CREATE TRIGGER fail_fourth BEFORE INSERT ON subscriptions "
                "FOR EACH ROW EXECUTE FUNCTION fail_fourth()")
        drop = "DROP TRIGGER fail_fourth ON subscriptions"
    with pytest.raises(StoreError, match="boom"):
        run_import(store, text, batch_size=3)
    with store.read() as conn:
        assert sum(count_by_status(conn).values()) == 3  # the first batch
        assert conn.execute(sa.select(sa.func.count()).select_from(subscriber_events)
                            ).scalar_one() == 3
    with store.write() as conn:
        conn.exec_driver_sql(drop)
    report = run_import(store, text, batch_size=3)
    assert (report.added, report.unchanged) == (2, 3)


@pytest.mark.parametrize(
    ("content", "message", "line"),
    [
        ("", "empty", None),
        ("\n\n", "empty", None),
        ("name,status\nAda,active\n", "no email column", 1),
        ("\nemail,EMAIL\na@example.com,b@example.com\n", "twice", 2),
    ],
)
def test_files_that_cannot_be_imported(
    store: Store, content: str, message: str, line: int | None
) -> None:
    with pytest.raises(CsvError, match=message) as caught:
        run_import(store, content, path="list.csv")
    assert caught.value.line == line
    assert caught.value.path == Path("list.csv")


def test_a_file_that_is_not_utf8_names_its_line(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,name\nada@example.com,Ada\nzoe@example.com,Zoë\n".encode("latin-1"))
    with path.open(encoding="utf-8", newline="") as handle, pytest.raises(CsvError,
                                                                             match="UTF-8"):
        import_subscribers(store, handle, now=T1, newsletters=NEWSLETTERS, path=path)


# --- export ---------------------------------------------------------------------------------


def test_export_round_trips_through_import(store: Store, tmp_path: Path) -> None:
    with store.write() as conn:
        people = [
            ('"Lovelace, Ada" <ada@example.com>', Status.ACTIVE),
            ("王小明 <wang@例子.中国>", Status.PENDING),
            ('"Quote \\"Q\\" Person" <q@example.com>', Status.ACTIVE),
            ("gone@example.com", Status.ACTIVE),
            ("dead@example.com", Status.ACTIVE),
            ("nobody@example.com", Status.ACTIVE),
        ]
        ids = [add_subscriber(conn, a, now=T1, status=s).subscriber.id for a, s in people]
        set_subscription(conn, ids[0], "weekly", now=T1, categories=["Python", "日本語"])
        set_subscription(conn, ids[0], "daily", now=T1, mode=Mode.INSTANT)
        set_subscription(conn, ids[1], "weekly", now=T1)
        set_subscription(conn, ids[2], "daily", now=T1, categories=["emoji 🦄"])
        set_subscription(conn, ids[3], "weekly", now=T1)
        set_subscription(conn, ids[4], "weekly", now=T1)
        unsubscribe_subscriber(conn, ids[3], now=T2)
        mark_bounced(conn, ids[4], now=T2)
    exported = export_text(store)
    assert exported.splitlines()[0] == "email,name,status,newsletter,mode,categories"
    assert '"Lovelace, Ada"' in exported and "Python,日本語" in exported

    same = run_import(store, exported, now=T3)
    assert (same.added, same.updated, len(same.skipped)) == (0, 0, 0)
    assert export_text(store) == exported

    with open_store(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        fresh = run_import(copy, exported, now=T3)
        assert fresh.skipped == () and fresh.added == 6
        assert export_text(copy) == exported
