"""How fast `feedpub digest send` mails a list, next to a bare smtplib loop, and its memory.

Everything runs on this machine: a local aiosmtpd server (in its own process),
a site in a temporary folder, SQLite and, with ``--postgres URL``, PostgreSQL
(in a schema of its own, dropped afterwards). For each database:

1. ``digest send --queue-only``: makes the edition and queues one delivery per
   subscriber (timed);
2. ``digest send``: sends them (timed; the process's start-up is included);
3. a bare ``smtplib`` loop sending the same message N times on one reused
   connection to the same server, in its own process.

Then the sender's peak memory (``ru_maxrss`` of the ``digest send`` process,
read with ``os.wait4``) at each size of ``--memory-sizes``, on SQLite, with a
one-post edition (a small message keeps the 100,000-message run short).

    python benchmarks/send.py
    python benchmarks/send.py --subscribers 10000 --memory-sizes 10000,100000 \\
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MONDAY_9 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
BODY = "\n\n".join(
    f"Paragraph {n}: a digest reads like a letter, with [a link](https://example.com/{n}/) "
    "and some **bold** words, 中文 and émoji 🎉 to keep the encoder honest."
    for n in range(1, 25)
)


# --- the server and the bare loop, each in a process of its own ------------------------


def serve() -> None:
    """Accept every message, keep nothing; print the port, run until stdin closes."""
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()
    controller.stop()


def bare_loop(port: int, count: int, message_file: str) -> None:
    message = Path(message_file).read_bytes()
    with smtplib.SMTP("127.0.0.1", port) as connection:
        start = time.perf_counter()
        for number in range(count):
            connection.sendmail("news@example.com", [f"reader{number}@example.org"], message)
        print(time.perf_counter() - start, flush=True)


@contextmanager
def smtp_sink() -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        yield int(process.stdout.readline())
    finally:
        process.stdin.close()
        process.wait(timeout=30)


# --- a site with N subscribers -------------------------------------------------------------


@dataclass
class Site:
    root: Path
    database_url: str
    port: int

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDPUB_")}
        env.update(FEEDPUB_SECRET="benchmark-secret", FEEDPUB_DATABASE_URL=self.database_url)
        return env

    def feedpub(self, *args: str) -> tuple[float, int, str]:
        """Run a feedpub command; its wall time, peak memory (KiB) and output."""
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "feedpub", "--site", str(self.root), *args],
            env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None
        output = process.stdout.read().decode()
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"feedpub {' '.join(args)} failed:\n{output}")
        return elapsed, usage.ru_maxrss, output


def make_site(root: Path, database_url: str, port: int, subscribers: int,
              concurrency: int, *, posts: int = 3) -> Site:
    from feedpub.config import load_settings
    from feedpub.digest import make_editions
    from feedpub.store import open_store
    from feedpub.store.schema import subscribers as subscribers_table
    from feedpub.store.schema import subscriptions

    (root / "content" / "posts").mkdir(parents=True)
    (root / "feedpub.toml").write_text(f"""\
[site]
title = "Benchmark"
url = "https://example.com/"

[mail]
from = "Benchmark <news@example.com>"
transport = "smtp://127.0.0.1:{port}?tls=none&pool={concurrency}"
rate_limit = 0

[[newsletter]]
name = "weekly"
schedule = "0 9 * * MON"
""", encoding="utf-8")
    (root / "content" / "posts" / "2025-12-01-old.md").write_text(
        "---\ntitle: Old\ndate: 2025-12-01 10:00:00 +0000\n---\n\nOld.\n", encoding="utf-8")
    site = Site(root, database_url, port)
    store = open_store(database_url)
    try:
        make_editions(load_settings(root, env=site.env()), store, T0)  # the baseline
        with store.write() as conn:
            for start in range(0, subscribers, 5000):
                conn.execute(subscribers_table.insert(), [
                    {"email": f"reader{n}@example.org", "email_key": f"reader{n}@example.org",
                     "status": "active", "source": "import", "created_at": T0,
                     "status_changed_at": T0, "confirmed_at": T0,
                     "token_key": uuid.uuid4().hex}
                    for n in range(start, min(start + 5000, subscribers))
                ])
            conn.execute(subscriptions.insert().from_select(
                ["subscriber_id", "newsletter", "mode", "categories", "created_at"],
                sa.select(subscribers_table.c.id, sa.literal("weekly"), sa.literal("digest"),
                          sa.literal("[]"), sa.literal(T0, subscriptions.c.created_at.type)),
            ))
    finally:
        store.close()
    for number in range(1, posts + 1):
        (root / "content" / "posts" / f"2026-01-0{number + 1}-post-{number}.md").write_text(
            f"---\ntitle: Post {number}\ndate: 2026-01-0{number + 1} 10:00:00 +0000\n---\n\n"
            f"{BODY if posts > 1 else 'One short paragraph.'}\n", encoding="utf-8")
    return site


def sample_message(site: Site) -> bytes:
    """One recipient's message of the queued edition, as the sender builds it."""
    from feedpub.config import load_settings
    from feedpub.mail.message import prepare_message
    from feedpub.mail.render import Recipient
    from feedpub.store import open_store
    from feedpub.store.editions import get_edition
    from feedpub.store.schema import editions

    settings = load_settings(site.root, env=site.env())
    store = open_store(site.database_url)
    try:
        with store.read() as conn:
            edition_id = conn.execute(
                sa.select(sa.func.max(editions.c.id)).where(editions.c.kind == "digest")
            ).scalar_one()
            edition = get_edition(conn, edition_id)
    finally:
        store.close()
    assert edition is not None
    template = prepare_message(settings=settings, newsletter=settings.newsletters[0],
                               rendered=edition, edition_key="benchmark")
    recipient = Recipient("reader0@example.org", "", "https://example.com/unsubscribe/x",
                          "https://example.com/preferences/x")
    return template.build(recipient, date=MONDAY_9)


def sent_count(site: Site) -> int:
    from feedpub.store import open_store, queue

    store = open_store(site.database_url)
    try:
        with store.read() as conn:
            return queue.status_counts(conn).get("sent", 0)
    finally:
        store.close()


@contextmanager
def database(kind: str, workdir: Path, postgres: str | None) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'feedpub.db'}"
        return
    assert postgres is not None
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres else "?"
    try:
        yield f"{postgres}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def rate_run(kind: str, count: int, port: int, concurrency: int,
             postgres: str | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp, \
            database(kind, Path(tmp), postgres) as url:
        site = make_site(Path(tmp) / "site", url, port, count, concurrency)
        queue_time, queue_rss, _ = site.feedpub("digest", "send", "--queue-only",
                                                "--now", MONDAY_9.isoformat())
        send_time, send_rss, output = site.feedpub(
            "digest", "send", "--concurrency", str(concurrency),
            "--now", (MONDAY_9 + timedelta(minutes=1)).isoformat())
        sent = sent_count(site)
        if sent != count:
            raise SystemExit(f"{kind}: sent {sent} of {count}:\n{output}")
        message = Path(tmp) / "message.eml"
        message.write_bytes(sample_message(site))
        bare = subprocess.run(
            [sys.executable, __file__, "--bare", str(port), str(count), str(message)],
            capture_output=True, text=True, check=True,
        )
        bare_time = float(bare.stdout)
        return {
            "database": kind,
            "subscribers": count,
            "message_bytes": message.stat().st_size,
            "queue_seconds": round(queue_time, 2),
            "send_seconds": round(send_time, 2),
            "send_per_second": round(count / send_time, 1),
            "bare_smtplib_seconds": round(bare_time, 2),
            "bare_smtplib_per_second": round(count / bare_time, 1),
            "sender_peak_rss_mib": round(send_rss / 1024, 1),
            "queue_peak_rss_mib": round(queue_rss / 1024, 1),
        }


def memory_run(count: int, port: int, concurrency: int) -> dict[str, object]:
    """A one-post edition: memory does not depend on the message's size, and the
    local server takes a small message several times faster."""
    with tempfile.TemporaryDirectory() as tmp, database("sqlite", Path(tmp), None) as url:
        site = make_site(Path(tmp) / "site", url, port, count, concurrency, posts=1)
        queue_time, queue_rss, _ = site.feedpub("digest", "send", "--queue-only",
                                                "--now", MONDAY_9.isoformat())
        send_time, send_rss, output = site.feedpub(
            "digest", "send", "--concurrency", str(concurrency),
            "--now", (MONDAY_9 + timedelta(minutes=1)).isoformat())
        if sent_count(site) != count:
            raise SystemExit(f"sent fewer than {count}:\n{output}")
        return {
            "subscribers": count,
            "queue_seconds": round(queue_time, 2),
            "queue_peak_rss_mib": round(queue_rss / 1024, 1),
            "send_seconds": round(send_time, 2),
            "sender_peak_rss_mib": round(send_rss / 1024, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--memory-sizes", default="10000,100000",
                        help="comma-separated subscriber counts for the memory runs ('' skips)")
    parser.add_argument("--postgres", help="a PostgreSQL URL: also measure the rate there")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.bare:
        bare_loop(int(args.bare[0]), int(args.bare[1]), args.bare[2])
        return
    results: dict[str, object] = {"cpus": os.cpu_count(), "load": os.getloadavg()[0]}
    with smtp_sink() as port:
        rates = [rate_run("sqlite", args.subscribers, port, args.concurrency, None)]
        if args.postgres:
            rates.append(rate_run("postgresql", args.subscribers, port, args.concurrency,
                                  args.postgres))
        results["rate"] = rates
        for row in rates:
            print(json.dumps(row), flush=True)
        sizes = [int(size) for size in args.memory_sizes.split(",") if size.strip()]
        memory = []
        for size in sizes:
            memory.append(memory_run(size, port, args.concurrency))
            print(json.dumps(memory[-1]), flush=True)
        results["memory"] = memory
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
