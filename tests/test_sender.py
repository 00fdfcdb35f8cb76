"""feedpub.sender and the queue: real SMTP (aiosmtpd), real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import mailbox
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dkim
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from feedpub.cli import main
from feedpub.config import parse_transport
from feedpub.digest import make_editions
from feedpub.mail.transports import open_transport
from feedpub.sender import SendOptions, SendReport, send_queued
from feedpub.sender.leases import LeaseKeeper
from feedpub.sender.options import default_worker_id, process_gone
from feedpub.store import Mode, Status, open_store, unsubscribe_subscriber
from feedpub.store import queue as delivery_queue
from feedpub.store.engine import Store
from feedpub.store.schema import deliveries, send_rate, subscribers
from tests.conftest import Clock, SiteFactory, SmtpServer
from tests.test_digest import (
    MONDAY_9,
    T0,
    Site,
    add_readers,
    post,
    site_config,
    subscribe,
)


@dataclass
class Mail:
    site: Site
    smtp: SmtpServer
    clock: Clock

    @property
    def store(self) -> Store:
        return self.site.store

    def send(self, **options: object) -> SendReport:
        stop = options.pop("stop", None)
        progress = options.pop("progress", None)
        settings = self.site.settings
        with open_transport(parse_transport(self.smtp.url + "&pool=4")) as transport:
            return send_queued(
                settings, self.store, transport, clock=self.clock,
                stop=stop, progress=progress,  # type: ignore[arg-type]
                options=SendOptions(**options),  # type: ignore[arg-type]
            )

    def publish(self, slug: str, title: str, when: str = "2026-01-02 10:00:00 +0000") -> None:
        self.site.write(f"{slug}.md", post(title, when))
        make_editions(self.site.settings, self.store, self.clock())

    def rows(self) -> dict[str, sa.Row[tuple[str, int, str | None, str | None, str | None]]]:
        with self.store.read() as conn:
            found = conn.execute(
                sa.select(subscribers.c.email, deliveries.c.status, deliveries.c.attempts,
                          deliveries.c.last_reply, deliveries.c.message_id,
                          deliveries.c.next_attempt_at)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .order_by(deliveries.c.id)
            ).all()
        return {row[0]: row for row in found}

    def statuses(self) -> dict[str, int]:
        with self.store.read() as conn:
            return delivery_queue.status_counts(conn)


@pytest.fixture
def mail(make_site: SiteFactory, database_url: str, smtp_server: SmtpServer) -> Iterator[Mail]:
    make_site(config=site_config(transport=smtp_server.url))
    store = open_store(database_url)
    site = Site(make_site, database_url, store)
    clock = Clock(T0)
    make_editions(site.settings, store, T0)  # the baseline
    try:
        yield Mail(site, smtp_server, clock)
    finally:
        store.close()


def restart(smtp: SmtpServer) -> None:
    """Start the fixture's stopped server again (stop() closed its event loop)."""
    smtp.controller.loop = asyncio.new_event_loop()
    smtp.controller.start()


def queue_digest(mail: Mail, readers: list[str]) -> None:
    add_readers(mail.store, readers)
    title = "News: “quotes” & 中文 🎉"
    mail.site.write("2026-01-02-news.md", post(title, "2026-01-02 10:00:00 +0000"))
    mail.clock.now = MONDAY_9 + timedelta(minutes=1)
    make_editions(mail.site.settings, mail.store, mail.clock())


def test_every_subscriber_receives_the_edition_once(mail: Mail) -> None:
    readers = [f"reader{i}@example.org" for i in range(40)]
    queue_digest(mail, readers)
    subscribe(mail.store, '"Zoë, \\"Z\\"" <zoe@example.org>')
    subscribe(mail.store, "张三 <zhang@example.org>")
    make_editions(mail.site.settings, mail.store, mail.clock())  # nothing new: no edition
    first = mail.send(concurrency=4)
    assert (first.sent, first.failed, first.retrying, first.ok) == (40, 0, 0, True)
    assert mail.send().sent == 0
    counts = mail.smtp.recorder.count_by_recipient()
    assert counts == {reader: 1 for reader in readers}
    rows = mail.rows()
    received = {m.rcpt_tos[0]: m.message for m in mail.smtp.recorder.messages}
    for reader in readers:
        _, status, attempts, reply, message_id, _ = rows[reader]
        assert (status, attempts) == ("sent", 1)
        assert reply is not None and reply.startswith("250 ")
        assert message_id == received[reader]["Message-ID"]
        assert received[reader]["Subject"] == "Test Site ✨: News: “quotes” & 中文 🎉"
        assert "/unsubscribe/" in received[reader]["List-Unsubscribe"]


def test_temporary_refusals_are_retried_later(mail: Mail) -> None:
    queue_digest(mail, ["ok@example.org", "greylisted@example.org"])
    mail.smtp.recorder.reply_for["greylisted@example.org"] = "451 4.7.1 Greylisted, try later"
    report = mail.send()
    assert (report.sent, report.retrying, report.failed, report.ok) == (1, 1, 0, True)
    _, status, attempts, reply, _, next_at = mail.rows()["greylisted@example.org"]
    assert (status, attempts) == ("retrying", 1)
    assert reply is not None and "451" in reply and "Greylisted" in reply
    assert next_at == mail.clock.now + timedelta(minutes=1)

    mail.clock.advance(seconds=30)
    assert mail.send().sent == 0  # not due yet
    mail.clock.advance(seconds=31)
    again = mail.send()
    assert again.retrying == 1
    assert mail.rows()["greylisted@example.org"][5] == mail.clock.now + timedelta(minutes=5)

    del mail.smtp.recorder.reply_for["greylisted@example.org"]
    mail.clock.advance(minutes=5)
    assert mail.send().sent == 1
    assert mail.rows()["greylisted@example.org"][1:3] == ("sent", 3)
    assert mail.smtp.recorder.count_by_recipient() == {
        "ok@example.org": 1, "greylisted@example.org": 1}


def test_temporary_refusals_give_up_after_the_last_attempt(mail: Mail) -> None:
    queue_digest(mail, ["never@example.org"])
    mail.smtp.recorder.reply_for["never@example.org"] = "452 4.2.2 Mailbox full"
    assert mail.send(max_attempts=2).retrying == 1
    mail.clock.advance(minutes=2)
    report = mail.send(max_attempts=2)
    assert (report.failed, report.ok) == (1, False)
    assert "452" in report.failures[0].reply and report.failures[0].email == "never@example.org"
    assert mail.rows()["never@example.org"][1] == "failed"
    with mail.store.read() as conn:  # a full mailbox is no bounce
        assert conn.execute(sa.select(subscribers.c.status)).scalar() == "active"


def test_hard_failures_fail_and_the_third_in_a_row_bounces(mail: Mail) -> None:
    for reader in ("good@example.org", "gone@example.org", "flaky@example.org"):
        subscribe(mail.store, reader, mode=Mode.INSTANT)
    refuse = mail.smtp.recorder.reply_for
    refuse["gone@example.org"] = "550 5.1.1 No such user"
    refuse["flaky@example.org"] = "550 5.2.1 Mailbox disabled"
    mail.clock.now = T0 + timedelta(days=1)
    for number in (1, 2):
        mail.publish(f"2026-01-0{number}-p{number}", f"Post {number}")
        report = mail.send()
        assert (report.sent, report.failed, report.bounced) == (1, 2, 0)
    del refuse["flaky@example.org"]
    mail.publish("2026-01-03-p3", "Post 3")
    report = mail.send()
    assert (report.sent, report.failed, report.bounced, report.ok) == (2, 1, 1, False)
    with mail.store.read() as conn:
        people = {row.email: row for row in conn.execute(sa.select(subscribers))}
    assert people["gone@example.org"].status == Status.BOUNCED.value
    assert (people["flaky@example.org"].status, people["flaky@example.org"].consecutive_failures) \
        == (Status.ACTIVE.value, 0)
    mail.publish("2026-01-04-p4", "Post 4")
    assert mail.send().sent == 2  # a bounced address is not queued any more
    assert mail.smtp.recorder.count_by_recipient() == {
        "good@example.org": 4, "flaky@example.org": 2}


def test_a_server_that_is_down_loses_nothing(mail: Mail) -> None:
    readers = [f"r{i}@example.org" for i in range(12)]
    queue_digest(mail, readers)
    mail.smtp.controller.stop()
    report = mail.send(concurrency=2)
    assert report.outage is not None and "cannot connect" in report.outage
    assert (report.sent, report.failed, report.retrying, report.ok) == (0, 0, 0, False)
    assert mail.statuses() == {"queued": 12}
    assert {row[2] for row in mail.rows().values()} == {0}  # no attempt was counted

    restart(mail.smtp)
    assert mail.send().sent == 12  # the next run, at the same moment
    assert mail.smtp.recorder.count_by_recipient() == {reader: 1 for reader in readers}


def test_one_pending_message_and_a_server_that_is_down_is_an_outage(
        mail: Mail, cli_env: Callable[..., Any]) -> None:
    # The outage rule is not a count: one message meets a server that is down, the run
    # ends, a probe finds the server still down: an outage (exit 1, a line on stderr).
    queue_digest(mail, ["only@example.org"])
    mail.smtp.controller.stop()
    report = mail.send(concurrency=4, outage_after=3)
    assert report.outage is not None and "cannot connect" in report.outage
    assert (report.sent, report.retrying, report.queued, report.ok) == (0, 0, 1, False)
    assert mail.rows()["only@example.org"][1:3] == ("queued", 0)  # no attempt counted
    down = CliRunner().invoke(main, ["--site", str(mail.site.root), "digest", "send",
                                     "--now", mail.clock().isoformat()],
                              env={"FEEDPUB_DATABASE_URL": mail.site.database_url})
    assert down.exit_code == 1, down.output
    assert "error: the mail server is unreachable" in down.stderr
    assert "1 message(s) stay queued" in down.stderr
    restart(mail.smtp)
    assert mail.send().sent == 1


def test_an_outage_reports_every_message_still_queued(mail: Mail) -> None:
    queue_digest(mail, [f"r{i}@example.org" for i in range(200)])
    mail.smtp.stop()
    report = mail.send(concurrency=2, batch_size=100)
    assert report.outage is not None
    assert report.queued == 200  # not only the 100 of the batch that was claimed
    assert mail.statuses() == {"queued": 200}


def test_421_closing_channel_is_an_outage_not_a_retry_for_everyone(mail: Mail) -> None:
    queue_digest(mail, [f"r{i}@example.org" for i in range(20)])
    mail.smtp.recorder.data_reply = "421 4.3.2 Service shutting down"
    report = mail.send(concurrency=1)
    assert report.outage is not None and "421" in report.outage
    assert report.returned >= 17
    assert mail.statuses() == {"queued": 20}
    mail.smtp.recorder.data_reply = None
    assert mail.send().sent == 20


def test_stop_finishes_messages_in_flight_and_leaves_the_rest_queued(mail: Mail) -> None:
    readers = [f"r{i}@example.org" for i in range(30)]
    queue_digest(mail, readers)
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 5:
            stop.set()

    report = mail.send(concurrency=2, stop=stop, progress=progress)
    assert report.stopped
    assert 5 <= report.sent <= 5 + 2
    assert mail.statuses() == {"sent": report.sent, "queued": 30 - report.sent}
    assert mail.send().sent == 30 - report.sent
    assert mail.smtp.recorder.count_by_recipient() == {reader: 1 for reader in readers}


def test_claims_of_a_dead_worker_return_after_their_lease(mail: Mail) -> None:
    readers = [f"r{i}@example.org" for i in range(10)]
    queue_digest(mail, readers)
    with mail.store.write() as conn:
        dead = delivery_queue.claim(conn, worker="dead:1", now=mail.clock.now, limit=4)
    assert len(dead) == 4
    mail.clock.advance(minutes=4)
    assert mail.send(lease=timedelta(minutes=5)).sent == 6
    mail.clock.advance(minutes=2)
    assert mail.send(lease=timedelta(minutes=5)).sent == 4
    assert mail.smtp.recorder.count_by_recipient() == {reader: 1 for reader in readers}


def test_claims_of_a_process_gone_from_this_host_return_at_once(mail: Mail) -> None:
    readers = [f"r{i}@example.org" for i in range(10)]
    queue_digest(mail, readers)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that ran here and no longer does
    host, _, namespace, _ = default_worker_id().split(":")
    dead = f"{host}:{gone.pid}:{namespace}:abcdef"
    elsewhere = f"another-host:{gone.pid}:{namespace}:abcdef"  # may be alive: its lease holds
    with mail.store.write() as conn:
        assert len(delivery_queue.claim(conn, worker=dead, now=mail.clock.now, limit=4)) == 4
        assert len(delivery_queue.claim(conn, worker=elsewhere, now=mail.clock.now,
                                        limit=2)) == 2
    assert process_gone(dead) and not process_gone(elsewhere)
    assert not process_gone(default_worker_id())  # this very process
    with contextlib.ExitStack() as alive:
        if mail.store.dialect == "postgresql":  # its session is there too
            session = alive.enter_context(mail.store.engine.connect())
            delivery_queue.hold_presence(session, elsewhere)
            session.commit()
        assert mail.send(lease=timedelta(minutes=5)).sent == 8
        assert mail.statuses() == {"sent": 8, "sending": 2}
    mail.clock.advance(minutes=6)
    assert mail.send(lease=timedelta(minutes=5)).sent == 2
    assert mail.smtp.recorder.count_by_recipient() == {reader: 1 for reader in readers}


def test_claims_of_a_postgresql_session_that_ended_return_at_once(mail: Mail) -> None:
    if mail.store.dialect != "postgresql":
        pytest.skip("session presence is PostgreSQL's")
    readers = [f"r{i}@example.org" for i in range(6)]
    queue_digest(mail, readers)
    # A worker on another machine: no pid to look at, only its database session.
    remote = "another-host:4242:1:abcdef"
    keeper = LeaseKeeper(mail.store, worker=remote, clock=mail.clock,
                         lease=timedelta(minutes=5), newsletter=None, limit=3)
    try:
        assert len(keeper.claim()) == 3
        assert mail.send(lease=timedelta(minutes=5)).sent == 3  # alive: its claims stay
        assert mail.statuses() == {"sent": 3, "sending": 3}
    finally:
        assert keeper.presence is not None
        keeper.presence.invalidate()  # the session ends as a killed process's would
        keeper.presence = None
    assert mail.send(lease=timedelta(minutes=5)).sent == 3  # at once, within the lease
    assert mail.smtp.recorder.count_by_recipient() == {reader: 1 for reader in readers}


def test_a_subscriber_who_leaves_before_the_send_is_skipped(mail: Mail) -> None:
    queue_digest(mail, ["stays@example.org", "leaves@example.org"])
    with mail.store.write() as conn:
        leaving = conn.execute(
            sa.select(subscribers.c.id).where(subscribers.c.email == "leaves@example.org")
        ).scalar_one()
        unsubscribe_subscriber(conn, leaving, now=mail.clock.now)
    report = mail.send()
    assert (report.sent, report.skipped) == (1, 1)
    assert mail.rows()["leaves@example.org"][1] == "skipped"
    assert mail.smtp.recorder.count_by_recipient() == {"stays@example.org": 1}


def test_two_senders_at_once_deliver_each_message_once(mail: Mail) -> None:
    readers = [f"r{i}@example.org" for i in range(150)]
    queue_digest(mail, readers)
    stores = [open_store(mail.site.database_url) for _ in range(2)]
    reports: list[SendReport] = []

    def run(store: Store) -> None:
        with open_transport(parse_transport(mail.smtp.url)) as transport:
            reports.append(send_queued(mail.site.settings, store, transport, clock=mail.clock,
                                       options=SendOptions(concurrency=3, batch_size=7)))

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert sum(r.sent for r in reports) == 150
    assert mail.smtp.recorder.count_by_recipient() == {reader: 1 for reader in readers}


def test_the_maildir_transport(make_site: SiteFactory, database_url: str) -> None:
    make_site(config=site_config())
    store = open_store(database_url)
    try:
        site = Site(make_site, database_url, store)
        make_editions(site.settings, store, T0)
        add_readers(store, ["a@example.org", "b@example.org"])
        site.write("2026-01-02-x.md", post("X", "2026-01-02 10:00:00 +0000"))
        make_editions(site.settings, store, MONDAY_9)
        with open_transport(site.settings.mail.transport) as transport:
            report = send_queued(site.settings, store, transport, clock=Clock(MONDAY_9))
        assert report.sent == 2
        box = mailbox.Maildir(site.root / "outbox", create=False)
        assert sorted(message["Delivered-To"] for message in box) == [
            "a@example.org", "b@example.org"]
    finally:
        store.close()


def test_rate_limit_slots_are_shared_and_spaced(mail: Mail) -> None:
    with mail.store.write() as conn:
        first = delivery_queue.reserve_slots(conn, "t", now=1000.0, count=3, interval=0.5,
                                             horizon=60)
        second = delivery_queue.reserve_slots(conn, "t", now=1000.2, count=2, interval=0.5,
                                              horizon=60)
        after_a_pause = delivery_queue.reserve_slots(conn, "t", now=2000.0, count=1,
                                                     interval=0.5, horizon=60)
        # A slot far ahead (a clock that was wrong) is not waited for.
        conn.execute(send_rate.update().where(send_rate.c.name == "t")
                     .values(next_slot_at=999_999.0))
        skewed = delivery_queue.reserve_slots(conn, "t", now=3000.0, count=1, interval=0.5,
                                              horizon=60)
    assert (first, second, after_a_pause, skewed) == (1000.0, 1001.5, 2000.0, 3000.0)


def test_rate_limited_send_reserves_one_slot_per_message(
    make_site: SiteFactory, database_url: str, smtp_server: SmtpServer
) -> None:
    make_site(config=site_config(transport=smtp_server.url, rate_limit=200))
    store = open_store(database_url)
    try:
        site = Site(make_site, database_url, store)
        make_editions(site.settings, store, T0)
        add_readers(store, [f"r{i}@example.org" for i in range(16)])
        site.write("2026-01-02-x.md", post("X", "2026-01-02 10:00:00 +0000"))
        make_editions(site.settings, store, MONDAY_9)
        with open_transport(parse_transport(smtp_server.url)) as transport:
            report = send_queued(site.settings, store, transport, clock=Clock(MONDAY_9),
                                 options=SendOptions(concurrency=4),
                                 wall=lambda: 1_000_000.0)
        assert report.sent == 16
        with store.read() as conn:
            next_slot = conn.execute(sa.select(send_rate.c.next_slot_at)).scalar_one()
        assert next_slot == pytest.approx(1_000_000.0 + 16 / 200)
    finally:
        store.close()


def test_an_address_no_message_can_carry_fails_alone(mail: Mail) -> None:
    # A non-ASCII local part needs SMTPUTF8, which messages here do not use.
    readers = ["before@example.org", "zoë@example.org", "after@example.org"]
    queue_digest(mail, readers)
    report = mail.send(concurrency=2)
    assert (report.sent, report.failed, report.ok) == (2, 1, False)
    assert report.failures[0].email == "zoë@example.org"
    assert "SMTPUTF8" in report.failures[0].reply
    assert mail.rows()["zoë@example.org"][1:3] == ("failed", 1)
    assert mail.smtp.recorder.count_by_recipient() == {
        "before@example.org": 1, "after@example.org": 1}
    with mail.store.read() as conn:
        failures = conn.execute(sa.select(subscribers.c.consecutive_failures)
                                .where(subscribers.c.email == "zoë@example.org")).scalar_one()
    assert failures == 1
    assert mail.send().failed == 0  # it does not come back


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A fresh RSA key and the DNS TXT record that publishes it."""
    key = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_dkim_signed_messages_verify_and_leave_in_claim_order(
    make_site: SiteFactory, database_url: str, smtp_server: SmtpServer,
    dkim_key: tuple[Path, bytes],
) -> None:
    key, record = dkim_key
    config = site_config(transport=smtp_server.url).replace("[mail]\n", (
        f'[mail]\ndkim_selector = "fp2025"\ndkim_domain = "example.com"\n'
        f'dkim_key_file = "{key}"\n'))
    make_site(config=config)
    store = open_store(database_url)
    try:
        site = Site(make_site, database_url, store)
        make_editions(site.settings, store, T0)
        readers = [f"r{i}@example.org" for i in range(40)] + [
            "张三 <zhang@example.org>", '"O\'Brien, Émile" <emile@example.org>']
        add_readers(store, readers[:40])
        for reader in readers[40:]:
            subscribe(store, reader)
        site.write("2026-01-02-x.md", post("Signed: 署名 ✍️", "2026-01-02 10:00:00 +0000"))
        make_editions(site.settings, store, MONDAY_9)
        with open_transport(parse_transport(smtp_server.url)) as transport:
            report = send_queued(site.settings, store, transport, clock=Clock(MONDAY_9),
                                 options=SendOptions(concurrency=1))
        assert (report.sent, report.ok) == (42, True)
        with store.read() as conn:
            claim_order = conn.execute(
                sa.select(subscribers.c.email)
                .join(deliveries, deliveries.c.subscriber_id == subscribers.c.id)
                .order_by(deliveries.c.id)
            ).scalars().all()
    finally:
        store.close()
    received = smtp_server.recorder.messages
    assert [m.rcpt_tos[0] for m in received] == claim_order

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"fp2025._domainkey.example.com."
        return record

    for message in received:
        assert message.data.startswith(b"DKIM-Signature: ")
        assert dkim.verify(message.data, dnsfunc=dns), message.rcpt_tos
    (to,) = received[-1].message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("O'Brien, Émile", "emile@example.org")
    tampered = received[0].data.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)
