"""Bounces and complaints: each sample report is classified as its format documents, the
policy of [mail] changes the right subscribers once, and `bounces read` tells the MTA
whether to retry."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from feedpub.bounces import Finding, Policy, Report, apply_report, apply_reports, parse_message
from feedpub.cli import main
from feedpub.errors import TokenError
from feedpub.sender.run import return_path_of
from feedpub.store import (
    Status,
    Store,
    add_subscriber,
    find_subscriber,
    forget_subscriber,
    get_events,
    open_store,
)
from feedpub.store.events import recent_events
from feedpub.store.queue import Claim
from feedpub.store.schema import EventKind, deliveries, delivery_events, editions
from feedpub.store.subscribers import SuppressedAddress
from feedpub.tokens import make_return_token, read_return_token
from tests.conftest import BASIC_CONFIG, SiteFactory

SAMPLES = Path(__file__).parent / "bounce_samples"
EXPECTED: dict[str, dict[str, str]] = json.loads((SAMPLES / "expected.json").read_text())
NOW = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)
SECRET = "test-secret"
DEFAULT_POLICY = Policy()


# --- classification -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_report_is_classified_as_its_format_documents(name: str) -> None:
    expected = EXPECTED[name]
    report = parse_message((SAMPLES / name).read_bytes(), secret=SECRET)
    if expected["kind"] == "ignored":
        assert report.findings == ()
        assert report.ignored == expected["ignored"]
        return
    (finding,) = report.findings
    assert (finding.kind.value, finding.recipient, finding.status_code) == (
        expected["kind"], expected["recipient"], expected["status"]
    )
    assert finding.reason  # the raw reason is kept for the operator


def test_the_samples_cover_every_provider_the_issue_names() -> None:
    prefixes = {name.split("_")[0] for name in EXPECTED}
    assert {"gmail", "outlook", "yahoo", "exim", "qmail", "postfix"} <= prefixes
    kinds = {e["kind"] for e in EXPECTED.values()}
    assert kinds == {"hard", "soft", "complaint", "ignored"}


def test_junk_is_a_report_with_no_findings_not_an_error() -> None:
    for raw in (b"", b"\x00\xff garbage", b"Subject: hi\n\nhello",
                b"Content-Type: multipart/report"):
        report = parse_message(raw, secret=SECRET)
        assert report.findings == () and report.ignored is not None


# --- VERP ------------------------------------------------------------------------------


def test_a_return_token_is_short_case_free_and_signed() -> None:
    token = make_return_token(SECRET, 2**31 - 1)
    assert len("bounces+" + token) <= 64 and token == token.lower()
    assert read_return_token(SECRET, token.upper()) == 2**31 - 1
    with pytest.raises(TokenError):
        read_return_token("another-secret", token)
    tampered = make_return_token(SECRET, 7).replace("7-", "8-", 1)
    with pytest.raises(TokenError):
        read_return_token(SECRET, tampered)


def test_the_sender_uses_one_return_path_per_delivery_when_verp_is_set(
    make_site: SiteFactory,
) -> None:
    claim = Claim(delivery_id=41, edition_id=1, subscriber_id=2, attempts=0,
                  email="ada@example.com", name=None, subscriber_active=True, token_key="k")
    make_site(config=BASIC_CONFIG)
    assert return_path_of(make_site.settings())(claim) == "Test Site <news@example.com>"
    make_site(config=BASIC_CONFIG.replace('rate_limit = 0', 'rate_limit = 0\nverp_domain = '
                                                           '"bounces.example.com"'))
    address = return_path_of(make_site.settings())(claim)
    local, _, domain = address.partition("@")
    assert domain == "bounces.example.com" and local.startswith("bounces+")
    assert read_return_token("test-secret", local.removeprefix("bounces+")) == 41


def test_a_bounce_to_a_verp_address_names_its_delivery_without_any_address() -> None:
    token = make_return_token(SECRET, 12)
    raw = (SAMPLES / "qmail_no_mailbox.eml").read_bytes().replace(
        b"To: news@example.com", f"To: bounces+{token}@bounces.example.com".encode(), 1)
    (finding,) = parse_message(raw, secret=SECRET).findings
    assert finding.delivery_id == 12
    assert parse_message(raw, secret="wrong").findings[0].delivery_id is None


# --- the policy ------------------------------------------------------------------------


@dataclass
class Sent:
    store: Store
    edition_id: int
    delivery_of: dict[str, int]


def send_edition(store: Store, *addresses: str) -> Sent:
    """Subscribers who got one edition, as the sender records it."""
    with store.write() as conn:
        edition_id = conn.execute(editions.insert().values(
            newsletter="weekly", kind="digest", period_key="digest:2026-03-02", created_at=NOW,
            subject="Week 10", html="<p>hi</p>", text="hi", status="ready",
        ).returning(editions.c.id)).scalar_one()
        delivery_of = {}
        for index, address in enumerate(addresses):
            subscriber = add_subscriber(conn, address, now=NOW, status=Status.ACTIVE).subscriber
            delivery_of[address] = conn.execute(deliveries.insert().values(
                edition_id=edition_id, subscriber_id=subscriber.id, status="sent", attempts=1,
                sent_at=NOW, message_id=f"<weekly.digest.2026-W10.{index + 1}@example.com>",
            ).returning(deliveries.c.id)).scalar_one()
    return Sent(store, edition_id, delivery_of)


def status_of(store: Store, address: str) -> Status:
    with store.read() as conn:
        found = find_subscriber(conn, address)
    assert found is not None
    return found.status


def apply(store: Store, report: Report, now: datetime = NOW,
          policy: Policy = DEFAULT_POLICY) -> Any:
    with store.write() as conn:
        return apply_report(conn, report, now=now, policy=policy)


def test_a_hard_bounce_marks_the_subscriber_bounced_once(database_url: str) -> None:
    with open_store(database_url) as store:
        sent = send_edition(store, "nobody.here@gmail.com", "fine@example.com")
        report = parse_message((SAMPLES / "gmail_user_unknown.eml").read_bytes(), secret=SECRET)
        first = apply(store, report)
        assert first.bounced == ["nobody.here@gmail.com"] and first.stored == 1
        again = apply(store, report)
        assert again.duplicate and again.stored == 0
        assert status_of(store, "nobody.here@gmail.com") == Status.BOUNCED
        assert status_of(store, "fine@example.com") == Status.ACTIVE
        with store.read() as conn:
            (event,) = recent_events(conn)
            subscriber = find_subscriber(conn, "nobody.here@gmail.com")
            assert subscriber is not None
            consent = get_events(conn, subscriber.id)
        # Found by the quoted Message-ID: the delivery and its edition.
        assert (event.kind, event.newsletter, event.edition, event.status_code) == (
            EventKind.HARD, "weekly", "digest:2026-03-02", "5.1.1")
        assert "does not exist" in event.reason
        assert consent[-1].event == "bounced" and consent[-1].source == "report"
        del sent


def test_soft_bounces_count_only_within_the_window(database_url: str) -> None:
    policy = Policy(soft_bounce_limit=3, soft_bounce_days=14)
    with open_store(database_url) as store:
        send_edition(store, "full@example.com")

        def soft(day: int) -> Any:
            report = Report(f"test:{day}", "dsn", (Finding(
                EventKind.SOFT, recipient="full@example.com", status_code="4.2.2",
                reason="mailbox full"),))
            return apply(store, report, NOW + timedelta(days=day), policy)

        soft(0)
        soft(10)
        soft(30)  # the first two are more than 14 days old by now
        assert status_of(store, "full@example.com") == Status.ACTIVE
        soft(35)
        assert soft(40).bounced == ["full@example.com"]
        assert status_of(store, "full@example.com") == Status.BOUNCED


def test_a_complaint_unsubscribes_and_suppresses_the_address(database_url: str) -> None:
    with open_store(database_url) as store:
        send_edition(store, "angry.reader@yahoo.com")
        report = parse_message((SAMPLES / "yahoo_complaint_arf.eml").read_bytes(),
                               secret=SECRET)
        assert apply(store, report).unsubscribed == ["angry.reader@yahoo.com"]
        assert status_of(store, "angry.reader@yahoo.com") == Status.UNSUBSCRIBED
        with pytest.raises(SuppressedAddress), store.write() as conn:
            add_subscriber(conn, "angry.reader@yahoo.com", now=NOW, status=Status.ACTIVE)


def _soft(key: str, address: str) -> Report:
    return Report(key, "dsn", (Finding(EventKind.SOFT, recipient=address,
                                       status_code="4.2.2", reason="mailbox full"),))


def test_one_batch_applies_a_repeated_report_once(database_url: str) -> None:
    with open_store(database_url) as store:
        send_edition(store, "full@example.com")
        report = _soft("batch:1", "full@example.com")
        with store.write() as conn:
            first, again = apply_reports(conn, [report, report], now=NOW, policy=DEFAULT_POLICY)
        assert (first.duplicate, first.stored) == (False, 1)
        assert (again.duplicate, again.stored) == (True, 0)
        with store.read() as conn:
            assert len(recent_events(conn)) == 1


def test_the_soft_bounce_limit_is_reached_within_one_batch(database_url: str) -> None:
    policy = Policy(soft_bounce_limit=3, soft_bounce_days=14)
    with open_store(database_url) as store:
        send_edition(store, "full@example.com", "other@example.com")
        reports = [_soft(f"batch:{n}", "full@example.com") for n in range(3)]
        reports.insert(1, _soft("batch:other", "other@example.com"))
        with store.write() as conn:
            applied = apply_reports(conn, reports, now=NOW, policy=policy)
        # The third of this person's soft bounces, and only it, marks them bounced.
        assert [a.bounced for a in applied] == [[], [], [], ["full@example.com"]]
        assert status_of(store, "full@example.com") == Status.BOUNCED
        assert status_of(store, "other@example.com") == Status.ACTIVE


def test_a_hard_bounce_then_a_complaint_in_one_batch_follow_in_order(
    database_url: str,
) -> None:
    with open_store(database_url) as store:
        send_edition(store, "gone@example.com")
        hard = Report("batch:hard", "dsn", (Finding(EventKind.HARD, recipient="gone@example.com",
                                                    status_code="5.1.1"),))
        complaint = Report("batch:arf", "arf", (Finding(EventKind.COMPLAINT,
                                                        recipient="gone@example.com"),))
        with store.write() as conn:
            applied = apply_reports(conn, [hard, complaint], now=NOW, policy=DEFAULT_POLICY)
        assert applied[0].bounced == ["gone@example.com"]
        # A complaint still unsubscribes and suppresses a bounced address.
        assert applied[1].unsubscribed == ["gone@example.com"]
        assert status_of(store, "gone@example.com") == Status.UNSUBSCRIBED
        with pytest.raises(SuppressedAddress), store.write() as conn:
            add_subscriber(conn, "gone@example.com", now=NOW, status=Status.ACTIVE)


def test_reports_about_strangers_and_auto_replies_change_nothing(database_url: str) -> None:
    with open_store(database_url) as store:
        send_edition(store, "someone@example.com")
        for name in ("postfix_unknown_user.eml", "gmail_vacation.eml", "postfix_delivered.eml"):
            applied = apply(store, parse_message((SAMPLES / name).read_bytes(), secret=SECRET))
            assert applied.stored == 0 and not applied.bounced
        with store.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(delivery_events)
                                ).scalar() == 0


def test_forgetting_a_subscriber_erases_the_reasons_but_keeps_the_counts(
    database_url: str,
) -> None:
    with open_store(database_url) as store:
        send_edition(store, "ghost@example.com")
        apply(store, parse_message((SAMPLES / "postfix_unknown_user.eml").read_bytes(),
                                   secret=SECRET))
        with store.write() as conn:
            ghost = find_subscriber(conn, "ghost@example.com")
            assert ghost is not None
            forget_subscriber(conn, ghost.id, now=NOW)
        with store.read() as conn:
            (event,) = recent_events(conn)
        assert event.kind == EventKind.HARD and event.reason == ""
        assert "ghost" not in event.email


# --- the commands ----------------------------------------------------------------------


def test_bounces_read_exit_status_tells_the_mta_what_to_do(
    make_site: SiteFactory, cli_env: Callable[..., Any], tmp_path: Path,
) -> None:
    site = make_site()
    runner = CliRunner()
    with open_store(f"sqlite:///{site / 'feedpub.db'}") as store:
        sent = send_edition(store, "someone@example.com")
    token = make_return_token("test-secret", sent.delivery_of["someone@example.com"])
    raw = (SAMPLES / "postfix_unknown_user.eml").read_bytes()
    args = ["--site", str(site), "bounces", "read", "--now", NOW.isoformat(),
            "--recipient", f"bounces+{token}@bounces.example.com"]
    handled = runner.invoke(main, args, input=raw)
    assert handled.exit_code == 0, handled.output
    assert "1 events, 1 bounced" in handled.stdout
    assert runner.invoke(main, args, input=raw).stdout.endswith("handled before\n")
    junk = runner.invoke(main, args[:4], input=b"\x00 not mail at all")
    assert junk.exit_code == 0 and "ignored" in junk.stdout

    cli_env("FEEDPUB_DATABASE_URL", f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    down = runner.invoke(main, args[:4], input=raw)
    assert down.exit_code == 75 and "cannot open database" in down.stderr

    cli_env("FEEDPUB_DATABASE_URL", f"sqlite:///{site / 'feedpub.db'}")
    listed = runner.invoke(main, ["--site", str(site), "bounces", "list", "--json",
                                  "--email", "someone@example.com", "--kind", "hard"])
    (event,) = json.loads(listed.stdout)
    assert event["kind"] == "hard" and event["email"] == "someone@example.com"
    assert event["edition"] == "digest:2026-03-02"
    text = runner.invoke(main, ["--site", str(site), "bounces", "list", "--limit", "5"])
    assert "hard" in text.stdout and "someone@example.com" in text.stdout


def test_status_shows_the_rates_flagged_at_the_limits(
    make_site: SiteFactory, cli_env: Callable[..., Any],
) -> None:
    site = make_site()
    with open_store(f"sqlite:///{site / 'feedpub.db'}") as store:
        send_edition(store, *(f"reader{i}@example.com" for i in range(99)),
                     "angry.reader@yahoo.com")
        apply(store, parse_message((SAMPLES / "yahoo_complaint_arf.eml").read_bytes(),
                                   secret=SECRET))
    runner = CliRunner()
    result = runner.invoke(main, ["--site", str(site), "status", "--json",
                                  "--now", (NOW + timedelta(days=1)).isoformat()])
    document = json.loads(result.stdout)
    heard = document["newsletters"][0]["heard_back"]
    assert heard["sent"] == 100 and heard["complaints"] == 1
    assert heard["complaint_rate"] == 0.01 and heard["flags"] == ["complaints-over-0.3%"]
    assert document["newsletters"][0]["last_edition"]["heard_back"]["complaints"] == 1
    text = runner.invoke(main, ["--site", str(site), "status",
                                "--now", (NOW + timedelta(days=1)).isoformat()])
    assert "1 complaints (1.00%) [complaints-over-0.3%]" in " ".join(text.stdout.split())


