"""The delivery guarantees with real processes: `feedpub digest send` and `feedpub worker` run
as subprocesses against a real SMTP server and a real database, and get killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from feedpub.config import load_settings
from feedpub.digest import make_editions
from feedpub.store import open_store
from feedpub.store import queue as delivery_queue
from feedpub.store.schema import deliveries
from tests.conftest import POSTGRES_URL, SiteFactory, SmtpServer
from tests.scratch import scratch_schema
from tests.test_digest import MONDAY_9, T0, add_readers, post, site_config

pytestmark = pytest.mark.slow


@dataclass
class Processes:
    root: Path
    database_url: str
    smtp: SmtpServer

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDPUB_")}
        env.update(FEEDPUB_SECRET="test-secret", FEEDPUB_DATABASE_URL=self.database_url)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "feedpub", "--site", str(self.root), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), env=self.env(), capture_output=True, text=True, timeout=120,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args), env=self.env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )

    def received(self) -> int:
        return sum(self.smtp.recorder.count_by_recipient().values())

    def wait_for(self, condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 120
        while not condition():
            if process.poll() is not None:
                raise AssertionError(f"exited early: {process.communicate()}")
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("timed out")
            time.sleep(0.02)

    def statuses(self) -> dict[str, int]:
        store = open_store(self.database_url)
        try:
            with store.read() as conn:
                return delivery_queue.status_counts(conn)
        finally:
            store.close()

    def queue_edition(self, count: int) -> list[str]:
        """Baseline, ``count`` subscribers, one new post, and the digest's edition queued."""
        emails = [f"reader{i}@example.org" for i in range(count)]
        store = open_store(self.database_url)
        try:
            make_editions(load_settings(self.root, env=self.env()), store, T0)  # the baseline
            add_readers(store, emails)
        finally:
            store.close()
        path = self.root / "content" / "posts" / "2026-01-02-news.md"
        path.write_text(post("News", "2026-01-02 10:00:00 +0000"), encoding="utf-8")
        return emails


def make_processes(
    make_site: SiteFactory, database_url: str, smtp: SmtpServer, rate_limit: float = 0
) -> Processes:
    root = make_site(config=site_config(transport=smtp.url + "&pool=8", rate_limit=rate_limit))
    return Processes(root, database_url, smtp)


@pytest.fixture
def procs(make_site: SiteFactory, database_url: str, smtp_server: SmtpServer,
          cli_env: Callable[..., Any]) -> Processes:
    return make_processes(make_site, database_url, smtp_server)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("FEEDPUB_TEST_DATABASE_URL is not set")
    with scratch_schema(POSTGRES_URL, prefix="t") as url:
        yield url


def test_a_thousand_subscribers_each_receive_the_edition_once(procs: Processes) -> None:
    emails = procs.queue_edition(1000)
    first = procs.run("digest", "send", "--concurrency", "8", "--now", MONDAY_9.isoformat())
    assert first.returncode == 0, first.stderr
    assert "queued for 1000 subscribers" in first.stdout
    assert "sent 1000, retrying 0, failed 0" in first.stdout
    assert first.stderr == ""  # quiet under cron: no progress bar without a terminal
    second = procs.run("digest", "send", "--now", (MONDAY_9 + timedelta(minutes=1)).isoformat())
    assert second.returncode == 0 and "sent 0," in second.stdout
    assert procs.smtp.recorder.count_by_recipient() == {email: 1 for email in emails}


def test_kill_9_in_the_middle_then_the_next_run_finishes(
    make_site: SiteFactory, database_url: str, smtp_server: SmtpServer,
    cli_env: Callable[..., Any],
) -> None:
    procs = make_processes(make_site, database_url, smtp_server, rate_limit=150)
    emails = procs.queue_edition(300)
    sender = procs.start("digest", "send", "--concurrency", "4", "--now", MONDAY_9.isoformat())
    procs.wait_for(lambda: procs.received() >= 60, sender)
    sender.send_signal(signal.SIGKILL)
    sender.communicate()
    assert procs.received() < 300
    assert procs.statuses().get("sending", 0) > 0  # claims the dead process held

    # Right after the crash, well within the lease: the dead process's claims come back at
    # once (its pid no longer runs on this host), and the rerun delivers to everyone.
    later = (MONDAY_9 + timedelta(seconds=30)).isoformat()
    rerun = procs.run("digest", "send", "--concurrency", "4", "--now", later)
    assert rerun.returncode == 0, rerun.stderr
    counts = procs.smtp.recorder.count_by_recipient()
    assert set(counts) == set(emails)
    duplicates = sum(count - 1 for count in counts.values())
    assert duplicates <= 4  # at most the messages in flight when it died
    assert procs.statuses() == {"sent": 300}


def test_sigterm_finishes_in_flight_messages_and_exits_0(
    make_site: SiteFactory, tmp_path: Path, smtp_server: SmtpServer,
    cli_env: Callable[..., Any],
) -> None:
    # Signals are the process's business, not the database's: SQLite is enough.
    database_url = f"sqlite:///{tmp_path / 'feedpub.db'}"
    procs = make_processes(make_site, database_url, smtp_server, rate_limit=100)
    emails = procs.queue_edition(150)
    sender = procs.start("digest", "send", "--now", MONDAY_9.isoformat())
    procs.wait_for(lambda: procs.received() >= 20, sender)
    sender.send_signal(signal.SIGTERM)
    stdout, stderr = sender.communicate(timeout=60)
    assert sender.returncode == 0, stderr
    assert "left queued" in stdout
    statuses = procs.statuses()
    assert "sending" not in statuses and statuses.get("queued", 0) > 0
    assert statuses["sent"] == procs.received()  # every accepted message was recorded
    rerun = procs.run("digest", "send", "--now", (MONDAY_9 + timedelta(seconds=1)).isoformat())
    assert rerun.returncode == 0, rerun.stderr
    assert procs.smtp.recorder.count_by_recipient() == {email: 1 for email in emails}


def test_two_workers_on_postgresql_deliver_each_message_exactly_once(
    make_site: SiteFactory, postgres_url: str, smtp_server: SmtpServer,
    cli_env: Callable[..., Any],
) -> None:
    procs = make_processes(make_site, postgres_url, smtp_server)
    emails = procs.queue_edition(2000)
    queued = procs.run("digest", "send", "--queue-only", "--now", MONDAY_9.isoformat())
    assert queued.returncode == 0, queued.stderr
    workers = [procs.start("worker", "--concurrency", "4", "--poll", "0.2") for _ in range(2)]
    try:
        for worker in workers:
            procs.wait_for(lambda: procs.received() >= 2000, worker)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr
    assert procs.smtp.recorder.count_by_recipient() == {email: 1 for email in emails}
    store = open_store(postgres_url)
    try:
        with store.read() as conn:
            by_worker = dict(conn.execute(
                sa.select(deliveries.c.claimed_by, sa.func.count()).group_by(
                    deliveries.c.claimed_by)
            ).all())
    finally:
        store.close()
    assert len(by_worker) == 2 and sum(by_worker.values()) == 2000  # both shared the work


def test_kill_9_of_a_worker_then_another_worker_takes_over_at_once(
    make_site: SiteFactory, database_url: str, smtp_server: SmtpServer,
    cli_env: Callable[..., Any],
) -> None:
    procs = make_processes(make_site, database_url, smtp_server, rate_limit=150)
    emails = procs.queue_edition(200)
    queued = procs.run("digest", "send", "--queue-only", "--now", MONDAY_9.isoformat())
    assert queued.returncode == 0, queued.stderr
    worker = procs.start("worker", "--concurrency", "4", "--poll", "0.2")
    procs.wait_for(lambda: procs.received() >= 40, worker)
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    assert procs.statuses().get("sending", 0) > 0
    started = time.monotonic()
    rerun = procs.run("worker", "--once", "--concurrency", "4")
    assert rerun.returncode == 0, rerun.stderr
    assert time.monotonic() - started < 60  # not the 5-minute lease
    counts = procs.smtp.recorder.count_by_recipient()
    assert set(counts) == set(emails)
    assert sum(count - 1 for count in counts.values()) <= 4
    assert procs.statuses() == {"sent": 200}
