"""Handling 10,000 bounce reports: parse + classify + store, in batches of
``feedpub.bounce_mailbox.BATCH_SIZE`` reports per transaction as `bounces fetch` does (IMAP
time excluded).

    python benchmarks/bounces.py [--reports N] [--batch-size N] [--database-url URL]

``--database-url`` is a PostgreSQL base URL: the run gets a scratch schema of its own,
dropped at the end. ``--batch-size 1`` is one transaction per report.

The reports are the fixture samples of tests/bounce_samples/ (DSNs from Gmail,
Outlook, Postfix, Exim's and qmail's own formats, ARF complaints), each
rewritten to name one of N subscribers and given its own Message-ID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.scratch
from feedpub.bounce_mailbox import BATCH_SIZE
from feedpub.bounces import Policy, apply_reports, parse_message
from feedpub.store import Status, open_store
from feedpub.store.schema import deliveries, editions, subscribers
from tests.scratch import scratch_schema

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "bounce_samples"
NOW = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)


def reports(count: int) -> list[bytes]:
    expected = json.loads((SAMPLES / "expected.json").read_text())
    usable = [(name, e["recipient"]) for name, e in expected.items() if e.get("recipient")]
    made = []
    for index in range(count):
        name, recipient = usable[index % len(usable)]
        raw = (SAMPLES / name).read_bytes().replace(recipient.encode(),
                                                    f"reader{index}@example.com".encode())
        made.append(raw.replace(b"Message-ID: <", f"Message-ID: <{index}.".encode(), 1)
                    .replace(b"Message-Id: <", f"Message-Id: <{index}.".encode(), 1))
    return made


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL base URL (a scratch schema is used)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        url = (stack.enter_context(scratch_schema(args.database_url, prefix="bench"))
               if args.database_url else f"sqlite:///{folder}/bench.db")
        store = open_store(url)
        with store.write() as conn:
            edition = conn.execute(editions.insert().values(
                newsletter="weekly", kind="digest", period_key="digest:bench", created_at=NOW,
                subject="s", html="h", text="t", status="ready").returning(editions.c.id)
            ).scalar_one()
            conn.execute(subscribers.insert(), [
                {"id": i + 1, "email": f"reader{i}@example.com",
                 "email_key": f"reader{i}@example.com", "status": Status.ACTIVE.value,
                 "source": "cli", "created_at": NOW, "status_changed_at": NOW,
                 "token_key": f"{i:032x}"} for i in range(args.reports)])
            conn.execute(deliveries.insert(), [
                {"edition_id": edition, "subscriber_id": i + 1, "status": "sent",
                 "attempts": 1, "sent_at": NOW} for i in range(args.reports)])
        raws = reports(args.reports)
        started = time.perf_counter()
        parsed = [parse_message(raw, secret="bench") for raw in raws]
        parse_seconds = time.perf_counter() - started
        kinds: dict[str, int] = {}
        for report in parsed:
            for finding in report.findings:
                kinds[finding.kind.value] = kinds.get(finding.kind.value, 0) + 1
        started = time.perf_counter()
        stored = 0
        for start in range(0, len(parsed), args.batch_size):
            with store.write() as conn:
                stored += sum(a.stored for a in apply_reports(
                    conn, parsed[start:start + args.batch_size], now=NOW, policy=Policy()))
        store_seconds = time.perf_counter() - started
        with store.read() as conn:
            statuses = dict(conn.execute(sa.select(subscribers.c.status, sa.func.count())
                                         .group_by(subscribers.c.status)).all())
        store.close()
    total = parse_seconds + store_seconds
    print(f"{args.reports} reports on {url.split(':')[0]}, {args.batch_size} per transaction: "
          f"parse+classify {parse_seconds:.2f} s "
          f"({args.reports / parse_seconds:,.0f}/s), store+policy {store_seconds:.2f} s "
          f"({args.reports / store_seconds:,.0f}/s), total {total:.2f} s; "
          f"{stored} events stored; kinds {kinds}; subscribers now {statuses}")


if __name__ == "__main__":
    main()
