"""The fault suite (``pytest -m faults``, run by ``.ci/run``): each SMTP fault, kill -9 at random
moments, a full disk. Each case counts lost and duplicated deliveries and times the run
that met the fault (until its clear exit) and the runs until everyone has the message.

Everything runs on 127.0.0.1, every loop is bounded in count and time. Set
``FEEDPUB_FAULT_REPORT=FILE`` to get one JSON line per case (for the notes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from feedpub.cli import main
from feedpub.config import parse_transport
from feedpub.digest import make_editions
from feedpub.errors import StoreError
from feedpub.mail.transports import open_transport
from feedpub.sender import SendOptions, send_queued
from feedpub.store import open_store
from feedpub.store import queue as delivery_queue
from feedpub.store.engine import Store
from feedpub.store.schema import deliveries, subscribers
from feedpub.store.subscriber_csv import import_subscribers
from tests.conftest import Clock, SiteFactory, SmtpServer
from tests.test_delivery_processes import Processes, make_processes
from tests.test_digest import MONDAY_9, T0, Site, add_readers, post, site_config
from tests.test_transports import ScriptedServer

pytestmark = pytest.mark.faults

TIMEOUT = 0.5
"""The SMTP timeout of the cases (seconds): a fault must end a run within a few of them."""
CONCURRENCY = 4
READERS = 16
MAX_RUNS = 8


REPORT_PATH = os.environ.get("FEEDPUB_FAULT_REPORT")
"""Read at import: the CLI tests' fixture clears FEEDPUB_* variables."""


def report(case: str, **facts: object) -> None:
    path = REPORT_PATH
    if path:
        with Path(path).open("a", encoding="utf-8") as out:
            out.write(json.dumps({"case": case, **facts}) + "\n")


def statuses_by_email(store: Store) -> dict[str, str]:
    with store.read() as conn:
        return dict(conn.execute(
            sa.select(subscribers.c.email, deliveries.c.status)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        ).all())


# --- SMTP faults ---------------------------------------------------------------------

SMTP_FAULTS = [
    *[(stage, "stall", "") for stage in ("greeting", "EHLO", "MAIL", "RCPT", "DATA",
                                         "payload", "QUIT")],
    *[(stage, "drop", "") for stage in ("greeting", "EHLO", "MAIL", "RCPT", "DATA",
                                        "payload")],
    *[(stage, "reply", "421 4.3.2 Shutting down") for stage in ("MAIL", "RCPT", "DATA",
                                                                "payload")],
    ("RCPT", "reply", "451 4.7.1 Greylisted"),
    ("payload", "reply", "452 4.3.1 Insufficient storage"),
    ("RCPT", "reply", "550 5.1.1 No such user"),
]


@pytest.fixture
def site(make_site: SiteFactory, database_url: str) -> Iterator[Site]:
    make_site(config=site_config())
    store = open_store(database_url)
    site = Site(make_site, database_url, store)
    make_editions(site.settings, store, T0)  # the baseline
    try:
        yield site
    finally:
        store.close()


@pytest.mark.parametrize(("stage", "action", "reply"), SMTP_FAULTS,
                         ids=[f"{a}-{s}-{r[:3]}" for s, a, r in SMTP_FAULTS])
def test_an_smtp_fault_loses_nothing_and_ends_the_run_quickly(
        site: Site, stage: str, action: str, reply: str) -> None:
    readers = [f"r{i}@example.org" for i in range(READERS)]
    add_readers(site.store, readers)
    site.write("2026-01-02-news.md", post("News", "2026-01-02 10:00:00 +0000"))
    clock = Clock(MONDAY_9 + timedelta(minutes=1))
    make_editions(site.settings, site.store, clock())
    permanent = reply.startswith("5")
    faults = 3  # the first three times, then the server behaves
    with ScriptedServer(stage, action, reply=reply, fault_times=faults) as server:
        url = f"{server.url}&timeout={TIMEOUT}&pool={CONCURRENCY}"
        runs: list[float] = []
        outages = 0
        while len(runs) < MAX_RUNS:
            started = time.monotonic()
            with open_transport(parse_transport(url)) as transport:
                result = send_queued(site.settings, site.store, transport, clock=clock,
                                     options=SendOptions(concurrency=CONCURRENCY))
            runs.append(time.monotonic() - started)
            outages += result.outage is not None
            with site.store.read() as conn:
                if not delivery_queue.count_due(conn, clock() + timedelta(days=1)):
                    break
            clock.advance(hours=3)  # past the backoff of a retry
        delivered = Counter(server.delivered)
        received = Counter(server.received)
    statuses = statuses_by_email(site.store)
    lost = [r for r in readers if not delivered[r] and statuses[r] != "failed"]
    lost += [r for r in readers if statuses[r] == "sent" and not received[r]]
    # A copy the server accepted, or received without answering (a fault after the final
    # dot: it may have kept it); a copy it refused with a reply is no delivery.
    unanswered = action in ("drop", "stall") and stage == "payload"
    copies = received if unanswered else delivered
    duplicates = sum(count - 1 for count in copies.values() if count > 1)
    failed = sum(1 for r in readers if statuses[r] == "failed")
    report(f"smtp {action} at {stage} {reply}".strip(), lost=len(lost), duplicates=duplicates,
           failed=failed, runs=len(runs), outages=outages,
           first_run_s=round(runs[0], 2), until_all_s=round(sum(runs), 2))
    assert lost == []
    assert duplicates <= CONCURRENCY  # only after the message was sent (a fault at payload)
    assert failed == (faults if permanent else 0)
    assert len(runs) < MAX_RUNS
    # The run that met the fault ends within a bound that follows from the timeout, not
    # from the number of messages: a stall costs one timeout, not one per message.
    assert runs[0] < 8 * TIMEOUT + 2, runs


# --- kill -9 at random moments -------------------------------------------------------


@pytest.fixture
def procs(make_site: SiteFactory, tmp_path: Path, smtp_server: SmtpServer,
          cli_env: Callable[..., Any]) -> Processes:
    return make_processes(make_site, f"sqlite:///{tmp_path / 'feedpub.db'}", smtp_server,
                          rate_limit=200)


@pytest.mark.parametrize("command", ["digest send", "worker"])
def test_kill_9_at_random_moments_then_an_immediate_rerun_delivers_to_everyone(
        procs: Processes, command: str) -> None:
    emails = procs.queue_edition(150)
    if command == "worker":
        queued = procs.run("digest", "send", "--queue-only", "--now", MONDAY_9.isoformat())
        assert queued.returncode == 0, queued.stderr
    rng = random.Random(f"faults-{command}")
    for kill in range(3):  # three kills at random moments, each followed by the next start
        args = (["digest", "send", "--now", MONDAY_9.isoformat()] if command == "digest send"
                else ["worker", "--poll", "0.2"])
        process = procs.start(*args, "--concurrency", str(CONCURRENCY))
        if kill == 0:  # while it starts (reads posts, makes the edition, claims)
            time.sleep(rng.uniform(0.1, 1.0))
        else:  # in the middle of sending
            target = min(procs.received() + rng.randint(1, 30), len(emails) - 1)
            procs.wait_for(lambda goal=target: procs.received() >= goal, process)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        report(f"kill -9 {command} #{kill + 1}", received_before_rerun=procs.received())
    started = time.monotonic()
    rerun = procs.run(*(["digest", "send", "--now", MONDAY_9.isoformat()]
                        if command == "digest send" else ["worker", "--once"]))
    until_all = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stderr
    counts = procs.smtp.recorder.count_by_recipient()
    lost = [email for email in emails if not counts.get(email)]
    duplicates = sum(count - 1 for count in counts.values())
    report(f"kill -9 {command} (3 kills)", lost=len(lost), duplicates=duplicates,
           rerun_s=round(until_all, 2))
    assert lost == []
    assert duplicates <= 3 * CONCURRENCY  # at most the messages in flight at each kill
    assert procs.statuses() == {"sent": 150}
    assert until_all < 60  # no waiting for the 5-minute lease


# --- a full disk ---------------------------------------------------------------------


@contextmanager
def small_disk(size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` (needs root and mount); skips the test where it cannot mount."""
    folder = Path(tempfile.mkdtemp(prefix="feedpub-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True, check=False, timeout=10)
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False,
                       timeout=10)
        folder.rmdir()


def big_csv(path: Path, rows: int) -> None:
    lines = ["email,name"] + [f"reader{i}@example.org,{'Reader ' * 20}{i}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_full_disk_during_subscribers_import_is_one_line_and_leaves_whole_rows(
        make_site: SiteFactory, tmp_path: Path, cli_env: Callable[..., Any]) -> None:
    root = make_site(config=site_config())
    csv_path = tmp_path / "list.csv"
    big_csv(csv_path, 20_000)
    with small_disk() as disk:
        url = f"sqlite:///{disk / 'feedpub.db'}"
        started = time.monotonic()
        result = CliRunner().invoke(main, ["--site", str(root), "subscribers", "import",
                                           str(csv_path)], env={"FEEDPUB_DATABASE_URL": url})
        elapsed = time.monotonic() - started
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 1, result.output
        assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
        assert "full" in errors[0]
        assert "Traceback" not in result.output
        # Each batch is one transaction: the rows there are whole, none half-written.
        with sqlite3.connect(disk / "feedpub.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            stored = conn.execute("SELECT count(*) FROM subscribers").fetchone()[0]
            orphans = conn.execute(
                "SELECT count(*) FROM subscribers s WHERE NOT EXISTS "
                "(SELECT 1 FROM subscriptions t WHERE t.subscriber_id = s.id)").fetchone()[0]
        assert orphans == 0 and stored < 20_000
    report("full disk (tmpfs 1 MB) during subscribers import", lost=0, duplicates=0,
           stored_rows=stored, exit_s=round(elapsed, 2))


def test_a_database_that_cannot_grow_is_a_store_error_and_rolls_back(tmp_path: Path) -> None:
    # The same failure without a mount: SQLite's max_page_count makes it "full".
    store = open_store(f"sqlite:///{tmp_path / 'small.db'}")
    try:
        @sa.event.listens_for(store.engine, "connect")
        def limit(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA max_page_count = 60")

        store.engine.dispose()  # new connections get the limit
        lines = [f"reader{i}@example.org,{'x' * 200}\n" for i in range(5_000)]
        with pytest.raises(StoreError, match="full") as full:
            import_subscribers(store, ["email,name\n", *lines], now=MONDAY_9,
                               newsletters=["weekly"], default_newsletter="weekly",
                               batch_size=5_000)
        assert "\n" not in str(full.value)
        with store.read() as conn:  # the one batch was one transaction: nothing stayed
            assert conn.execute(sa.select(sa.func.count()).select_from(subscribers)
                                ).scalar() == 0
    finally:
        store.close()
