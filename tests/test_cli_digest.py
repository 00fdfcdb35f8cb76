"""`feedpub digest send` and `feedpub worker` through click's CliRunner."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from feedpub.cli import main
from feedpub.store import open_store
from feedpub.store import queue as delivery_queue
from feedpub.store.engine import Store
from feedpub.store.schema import editions
from tests.conftest import SiteFactory, SmtpServer
from tests.test_digest import MONDAY_9, T0, add_readers, post, site_config


@dataclass
class Cli:
    root: Path
    database_url: str
    smtp: SmtpServer

    def __call__(self, *args: str, now: datetime | None = None) -> Result:
        command = ["--site", str(self.root), *args]
        if now is not None:
            command += ["--now", now.isoformat()]
        return CliRunner().invoke(main, command, env={"FEEDPUB_DATABASE_URL": self.database_url})

    def store(self) -> Store:
        return open_store(self.database_url)

    def write(self, name: str, text: str) -> None:
        path = self.root / "content" / "posts" / name
        path.write_text(text, encoding="utf-8")

    def statuses(self) -> dict[str, int]:
        store = self.store()
        try:
            with store.read() as conn:
                return delivery_queue.status_counts(conn)
        finally:
            store.close()


@pytest.fixture
def cli(
    make_site: SiteFactory, database_url: str, smtp_server: SmtpServer, cli_env: Callable[..., Any]
) -> Iterator[Cli]:
    root = make_site(
        posts={"2025-12-01-old.md": post("Old", "2025-12-01 10:00:00 +0000")},
        config=site_config(transport=smtp_server.url),
    )
    yield Cli(root, database_url, smtp_server)


def readers(cli: Cli, emails: list[str]) -> None:
    store = cli.store()
    try:
        add_readers(store, emails)
    finally:
        store.close()


def test_send_baselines_then_mails_each_new_post_once(cli: Cli) -> None:
    first = cli("digest", "send", now=T0)
    assert first.exit_code == 0, first.output
    assert "weekly: first run: record 1 existing entries" in first.output
    readers(cli, ["a@example.org", "b@example.org", "c@example.org"])
    cli.write("2026-01-02-new.md", post("New — “typographic” 🎉", "2026-01-02 10:00:00 +0000"))

    sent = cli("digest", "send", now=MONDAY_9 + timedelta(minutes=1))
    assert sent.exit_code == 0, sent.output
    assert "weekly: digest digest:2026-01-05T09:00Z: New — “typographic” 🎉 — queued for 3 " \
        "subscribers" in sent.output
    assert "1 edition(s) made; sent 3, retrying 0, failed 0, skipped 0" in sent.output
    again = cli("digest", "send", now=MONDAY_9 + timedelta(minutes=2))
    assert again.exit_code == 0
    assert "digest:" not in again.output and "sent 0," in again.output
    assert cli.smtp.recorder.count_by_recipient() == {
        "a@example.org": 1, "b@example.org": 1, "c@example.org": 1}


def test_dry_run_changes_nothing(cli: Cli) -> None:
    fresh = cli("digest", "send", "--dry-run", now=T0)
    assert fresh.exit_code == 0, fresh.output
    assert "would record 1 existing entries" in fresh.output
    if cli.database_url.startswith("sqlite"):
        assert not Path(cli.database_url.removeprefix("sqlite:///")).exists()
    assert cli("digest", "send", now=T0).exit_code == 0
    readers(cli, ["a@example.org", "b@example.org"])
    cli.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    preview = cli("digest", "send", "--dry-run", now=MONDAY_9)
    assert preview.exit_code == 0, preview.output
    assert "would be queued for 2 subscribers" in preview.output
    assert "nothing queued from earlier runs" in preview.output
    store = cli.store()
    try:
        with store.read() as conn:
            assert conn.execute(sa.select(editions.c.period_key)).scalars().all() == ["baseline"]
    finally:
        store.close()
    assert cli.smtp.recorder.messages == []
    assert not (cli.root / "public" / "editions").exists()


def test_a_refused_recipient_fails_the_run(cli: Cli) -> None:
    cli("digest", "send", now=T0)
    readers(cli, ["ok@example.org", "nobody@example.org"])
    cli.smtp.recorder.reply_for["nobody@example.org"] = "550 5.1.1 No such user"
    cli.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    result = cli("digest", "send", now=MONDAY_9)
    assert result.exit_code == 1
    assert "sent 1, retrying 0, failed 1" in result.output
    assert "550 5.1.1 No such user" in result.output  # CliRunner mixes stderr in
    assert cli.statuses() == {"sent": 1, "failed": 1}


def test_greylisting_is_retried_at_a_later_run(cli: Cli) -> None:
    cli("digest", "send", now=T0)
    readers(cli, ["grey@example.org"])
    cli.smtp.recorder.reply_for["grey@example.org"] = "451 4.7.1 Greylisted"
    cli.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    first = cli("digest", "send", now=MONDAY_9)
    assert first.exit_code == 0, first.output
    assert "sent 0, retrying 1, failed 0" in first.output
    del cli.smtp.recorder.reply_for["grey@example.org"]
    too_soon = cli("digest", "send", now=MONDAY_9 + timedelta(seconds=20))
    assert "sent 0, retrying 0" in too_soon.output
    later = cli("digest", "send", now=MONDAY_9 + timedelta(minutes=2))
    assert "sent 1, retrying 0" in later.output
    assert cli.smtp.recorder.count_by_recipient() == {"grey@example.org": 1}


def test_a_server_that_is_down_exits_1_and_the_next_run_delivers(cli: Cli) -> None:
    cli("digest", "send", now=T0)
    readers(cli, [f"r{i}@example.org" for i in range(5)])
    cli.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    cli.smtp.controller.stop()
    down = cli("digest", "send", now=MONDAY_9)
    assert down.exit_code == 1
    assert "the mail server is unreachable" in down.output
    assert "stay queued for the next run" in down.output
    assert "Traceback" not in down.output
    assert cli.statuses() == {"queued": 5}
    cli.smtp.controller.loop = asyncio.new_event_loop()
    cli.smtp.controller.start()
    up = cli("digest", "send", now=MONDAY_9 + timedelta(seconds=5))
    assert up.exit_code == 0, up.output
    assert "sent 5," in up.output


def test_queue_only_then_a_worker_sends(cli: Cli) -> None:
    cli("digest", "send", now=T0)
    readers(cli, ["a@example.org", "b@example.org"])
    cli.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    queued = cli("digest", "send", "--queue-only", now=MONDAY_9)
    assert queued.exit_code == 0
    assert "1 edition(s) made; sending is left to `feedpub worker`" in queued.output
    assert cli.statuses() == {"queued": 2}
    worker = cli("worker", "--once", "--concurrency", "2")
    assert worker.exit_code == 0, worker.output
    assert "sent 2, retrying 0, failed 0" in worker.output
    assert cli.statuses() == {"sent": 2}


def test_usage_errors(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = cli("digest", "send", "--newsletter", "monthly", now=T0)
    assert unknown.exit_code == 2
    assert "no newsletter named 'monthly' (this site has: weekly)" in unknown.output
    naive = cli("digest", "send", "--now", "2026-01-05T09:00")
    assert naive.exit_code == 2 and "UTC offset" in naive.output
    cli("digest", "send", now=T0)
    readers(cli, ["a@example.org"])
    cli.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    monkeypatch.delenv("FEEDPUB_SECRET")
    no_secret = cli("digest", "send", now=MONDAY_9)
    assert no_secret.exit_code == 2
    assert "FEEDPUB_SECRET" in no_secret.output and "Traceback" not in no_secret.output
    assert cli.statuses() == {"queued": 1}  # nothing was claimed


def test_help_teaches() -> None:
    result = CliRunner().invoke(main, ["digest", "send", "--help"])
    assert result.exit_code == 0
    assert "feedpub digest send --dry-run" in result.output
    assert "* * * * * cd /srv/blog && feedpub digest send" in result.output
    worker = CliRunner().invoke(main, ["worker", "--help"])
    assert "SIGTERM" in worker.output and "--concurrency" in worker.output


def test_an_unreadable_post_is_named_left_out_and_fails_the_run(cli: Cli) -> None:
    assert cli("digest", "send", now=T0).exit_code == 0
    readers(cli, ["a@example.org"])
    cli.write("2026-01-02-good.md", post("Good news", "2026-01-02 10:00:00 +0000"))
    cli.write("2026-01-03-broken.md", "---\ntitle: [unclosed\ndate: 2026-01-03\n---\nbody\n")

    result = cli("digest", "send", now=MONDAY_9 + timedelta(minutes=1))

    assert result.exit_code == 1
    assert "content/posts/2026-01-03-broken.md:" in result.output
    assert cli.smtp.recorder.count_by_recipient() == {"a@example.org": 1}
    assert "Good news" in cli.smtp.recorder.messages[0].message["Subject"]


def test_one_digest_send_scans_the_posts_folder_once_and_reads_each_post_once(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedpub import content

    assert cli("digest", "send", now=T0).exit_code == 0
    readers(cli, ["a@example.org"])
    cli.write("2026-01-02-new.md", post("New", "2026-01-02 10:00:00 +0000"))
    cli.write("2026-01-03-other.md", post("Other", "2026-01-03 10:00:00 +0000"))
    scans: list[Path] = []
    reads: list[Path] = []
    real_find, real_read = content.find_post_names, content.read_post

    def counting_find(posts_dir: Path) -> list[str]:
        scans.append(posts_dir)
        return real_find(posts_dir)

    def counting_read(path: Path, **kwargs: Any) -> content.Post:
        reads.append(path)
        return real_read(path, **kwargs)

    monkeypatch.setattr(content, "find_post_names", counting_find)
    monkeypatch.setattr(content, "read_post", counting_read)
    sent = cli("digest", "send", now=MONDAY_9 + timedelta(minutes=1))

    assert sent.exit_code == 0, sent.output
    assert len(cli.smtp.recorder.messages) == 1  # the digest holds both new posts
    assert len(scans) == 1
    # The new posts: front matter when scanned, then the one conversion that gives the
    # email's entry, the findings the lint gate reads and their pages. The old post is
    # converted once, for its page (its front matter is in the cache).
    assert Counter(path.name for path in reads) == {
        "2026-01-02-new.md": 2, "2026-01-03-other.md": 2, "2025-12-01-old.md": 1,
    }
