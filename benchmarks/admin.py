"""How fast the dashboard's panels answer: the JSON behind each one, over HTTP.

Fills a store with ``--subscribers`` subscribers (100,000 by default; their
consent records over two years), ``--editions`` weekly editions (200), each
delivered to ``--recipients`` of them (10,000; a few failed, retrying or still
queued), bounces and complaints against about 0.5% and 0.05% of the sends, and a
year of feed readers; then logs in to ``feedpub serve``'s app (in process,
through Starlette's test client) and times each ``/admin/api/<panel>`` answer,
``--rounds`` times after a first one (reported apart: the audience panel works out
the consent record's day-by-day changes then, and keeps them until it changes).
SQLite by default; with ``--database-url`` a scratch schema of PostgreSQL.

    python benchmarks/admin.py
    python benchmarks/admin.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python benchmarks/admin.py --recipients 100000       # every edition to everyone
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from feedpub.admin_password import hash_password
from feedpub.config import load_settings
from feedpub.store import open_store
from feedpub.store.audience import ServiceCount, add_readers, add_service_counts
from feedpub.store.engine import Store, bulk_insert
from feedpub.store.schema import (
    deliveries,
    delivery_events,
    editions,
    subscriber_events,
    subscribers,
    subscriptions,
)
from feedpub.web import create_app
from tests.scratch import scratch_schema

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PASSWORD = "benchmark password 123"
PANELS = ["audience?range=30d", "audience?range=1y", "audience?range=all", "editions",
          "queue", "upcoming"]
CONFIG = """\
[site]
title = "Benchmark"
url = "https://example.com/"

[mail]
from = "Benchmark <news@example.com>"
postal_address = "1 Bench Street"

[[newsletter]]
name = "weekly"
"""
POST = """---
title: Post {n}
date: {day}
---
A post of the benchmark, number {n}.
"""


def fill(store: Store, *, people: int, weekly: int, recipients: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    start = NOW - timedelta(days=730)
    rows, events = [], []
    for n in range(1, people + 1):
        created = start + timedelta(seconds=rng.randrange(730 * 86400))
        roll = rng.random()
        status = ("pending" if roll < 0.05 else "unsubscribed" if roll < 0.12
                  else "bounced" if roll < 0.15 else "active")
        confirmed = created + timedelta(hours=rng.randrange(1, 48))
        left = min(confirmed + timedelta(days=rng.randrange(1, 300)), NOW)
        rows.append({
            "id": n, "email": f"reader{n}@example.org", "email_key": f"reader{n}@example.org",
            "name": f"Reader {n}", "status": status, "source": "web", "created_at": created,
            "status_changed_at": created, "confirmed_at": None if status == "pending"
            else confirmed, "token_key": f"{n:032x}", "consecutive_failures": 0,
        })
        events.append({"subscriber_id": n, "at": created, "event": "pending", "source": "web"})
        if status != "pending":
            events.append({"subscriber_id": n, "at": confirmed, "event": "active",
                           "source": "web"})
        if status in ("unsubscribed", "bounced"):
            events.append({"subscriber_id": n, "at": left, "event": status, "source": "web"})
    with store.write() as conn:
        bulk_insert(conn, subscribers, rows)
        bulk_insert(conn, subscriber_events, events)
        bulk_insert(conn, subscriptions, [
            {"subscriber_id": n, "newsletter": "weekly", "mode": "digest",
             "categories": "[]", "created_at": start} for n in range(1, people + 1)])
        conn.execute(editions.insert().values(
            newsletter="weekly", kind="digest", period_key="baseline", created_at=start,
            subject="", html="", text="", status="baseline"))
        conn.execute(editions.insert(), [{
            "newsletter": "weekly", "kind": "digest", "period_key": f"digest:{w:04d}",
            "created_at": NOW - timedelta(days=7 * (weekly - w)) + timedelta(minutes=1),
            "subject": f"Week {w}", "html": "<p>hi</p>", "text": "hi",
            "web_path": f"editions/weekly/{w}.html", "status": "ready",
        } for w in range(weekly)])
        newest = conn.execute(sa.select(sa.func.max(editions.c.id))).scalar_one()
        status = sa.case(
            (sa.and_(editions.c.id == newest, subscribers.c.id % 10 == 0), "queued"),
            (subscribers.c.id % 500 == 0, "failed"),
            (sa.and_(editions.c.id == newest, subscribers.c.id % 997 == 0), "retrying"),
            else_="sent",
        )
        conn.execute(deliveries.insert().from_select(
            ["edition_id", "subscriber_id", "status", "attempts", "sent_at", "next_attempt_at"],
            sa.select(editions.c.id, subscribers.c.id, status, sa.literal(1),
                      editions.c.created_at, editions.c.created_at)
            .select_from(editions.join(subscribers, subscribers.c.id <= recipients))
            .where(editions.c.status == "ready"),
        ))
        kind = sa.case((deliveries.c.id % 2000 == 0, "complaint"), else_="hard")
        conn.execute(delivery_events.insert().from_select(
            ["subscriber_id", "delivery_id", "edition_id", "at", "kind", "source",
             "status_code", "reason", "report_key"],
            sa.select(deliveries.c.subscriber_id, deliveries.c.id, deliveries.c.edition_id,
                      deliveries.c.sent_at, kind, sa.literal("dsn"), sa.literal("5.1.1"),
                      sa.literal("no such user"), sa.literal(""))
            .where(sa.or_(deliveries.c.id % 200 == 0, deliveries.c.id % 2000 == 0),
                   deliveries.c.status == "sent"),
        ))
        today = NOW.date()
        add_service_counts(conn, [
            ServiceCount(today - timedelta(days=d), feed, service, 500 + d % 50, NOW)
            for d in range(365) for feed in ("atom.xml", "rss.xml")
            for service in ("Feedly", "Inoreader", "NewsBlur", "Feedbin")
        ])
        add_readers(conn, [(today - timedelta(days=d), "atom.xml", f"{d:08x}{r:024x}")
                           for d in range(365) for r in range(300)])


def write_site(root: Path, posts: int) -> None:
    (root / "content" / "posts").mkdir(parents=True)
    (root / "feedpub.toml").write_text(CONFIG, encoding="utf-8")
    for n in range(posts):
        day: date = (NOW - timedelta(days=n)).date()
        (root / "content" / "posts" / f"{day}-post-{n}.md").write_text(
            POST.format(n=n, day=day), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--editions", type=int, default=200)
    parser.add_argument("--recipients", type=int, default=10_000,
                        help="subscribers each edition was delivered to")
    parser.add_argument("--posts", type=int, default=30, help="posts of the site (upcoming)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", help="PostgreSQL to use (a scratch schema of it)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fp-admin-")))
        url = (stack.enter_context(scratch_schema(args.database_url, prefix="bench"))
               if args.database_url else f"sqlite:///{root / 'feedpub.db'}")
        write_site(root / "site", args.posts)
        store = open_store(url)
        stack.callback(store.close)
        began = time.perf_counter()
        fill(store, people=args.subscribers, weekly=args.editions,
             recipients=min(args.recipients, args.subscribers))
        with store.read() as conn:
            sizes = {table.name: conn.execute(
                sa.select(sa.func.count()).select_from(table)).scalar_one()
                for table in (subscribers, subscriber_events, editions, deliveries,
                              delivery_events)}
        filled = time.perf_counter() - began
        if store.dialect == "postgresql":
            with store.write() as conn:
                conn.execute(sa.text("ANALYZE"))
        settings = load_settings(root / "site", env={
            "FEEDPUB_SECRET": "bench", "FEEDPUB_DATABASE_URL": url,
            "FEEDPUB_ADMIN_PASSWORD_HASH": hash_password(PASSWORD),
        })
        client = stack.enter_context(TestClient(create_app(settings, now=lambda: NOW,
                                                           store=store)))
        token = re.search(r'name="form_token" value="([^"]+)"',
                          client.get("/admin/login").text)
        assert token is not None
        answer = client.post("/admin/login", data={"user": "admin", "password": PASSWORD,
                                                   "form_token": token.group(1)},
                             follow_redirects=False)
        assert answer.status_code == 303, answer.status_code
        figures = {}
        for panel in PANELS:
            timings = []
            for _ in range(args.rounds + 1):
                start = time.perf_counter()
                answer = client.get(f"/admin/api/{panel}")
                timings.append((time.perf_counter() - start) * 1000)
                assert answer.status_code == 200, (panel, answer.status_code)
            figures[panel] = {"first_ms": round(timings[0], 1),
                              "median_ms": round(statistics.median(timings[1:]), 1),
                              "max_ms": round(max(timings[1:]), 1),
                              "bytes": len(answer.content)}
        start = time.perf_counter()
        assert client.get("/admin/").status_code == 200
        page_ms = round((time.perf_counter() - start) * 1000, 1)
    report = {"database": store.dialect, "rows": sizes, "fill_seconds": round(filled, 1),
              "panels": figures, "dashboard_page_ms": page_ms,
              "python": sys.version.split()[0], "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{store.dialect}: {', '.join(f'{n:,} {t}' for t, n in sizes.items())} "
          f"(filled in {filled:.0f} s)")
    for panel, figure in figures.items():
        verdict = "ok" if figure["median_ms"] < 200 else "OVER 200 ms"
        print(f"  /admin/api/{panel:<20} first {figure['first_ms']:>7.1f} ms  "
              f"median {figure['median_ms']:>7.1f} ms  "
              f"max {figure['max_ms']:>7.1f} ms  {figure['bytes']:>8,} bytes  {verdict}")
    print(f"  /admin/ (every panel as HTML, once more) {page_ms:.1f} ms")


if __name__ == "__main__":
    main()
