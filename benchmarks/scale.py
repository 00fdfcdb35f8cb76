"""A million subscribers: queueing an edition, `feedpub status`, the sender's memory, and
two send workers sharing one queue (issue 18, parts 5 and 6).

    python benchmarks/scale.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
    python benchmarks/scale.py --sizes 100000,1000000 --workers-subscribers 20000 \\
        --rate-subscribers 3000 --rate 150

For each of ``--sizes`` (on PostgreSQL, in a schema of its own that is dropped
afterwards; ``--sqlite`` adds SQLite):

1. the subscribers are written straight with SQL (one INSERT … SELECT: making
   them is not what is measured; ``import_subscribers.py`` measures the import),
   one in fifty unsubscribed, then ANALYZE as autovacuum would after a bulk load;
2. ``feedpub digest send --queue-only``: one three-post edition queued for every
   active subscriber (the whole process: start-up, rendering, the INSERT … SELECT);
3. ``feedpub status --json``: the whole process, and the queries alone in-process
   (:func:`feedpub.status.site_status`), median of three each;
4. one claim of 100 due deliveries (rolled back), median of five: what each send
   worker does every few seconds while the queue is full;
5. ``feedpub digest send`` to a local aiosmtpd server, stopped with SIGTERM after
   ``--memory-seconds``: its peak RSS (``ru_maxrss``) and the messages it sent.

Then, on PostgreSQL, two ``feedpub digest send`` processes started together drain
one queue of ``--workers-subscribers`` (no rate limit), and again a queue of
``--rate-subscribers`` with ``mail.rate_limit = --rate``, which both share.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.scratch
from send import (
    BODY,
    MONDAY_9,
    SEND_AT,
    T0,
    Run,
    Sink,
    Site,
    smtp_sink,
    write_posts,
    write_site_files,
)

from tests.scratch import scratch_schema


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the site and its subscribers ----------------------------------------------------------


def write_site(root: Path, database_url: str, port: int, *, rate: float = 0,
               concurrency: int = 8) -> Site:
    write_site_files(root, port, concurrency, rate=rate)
    return Site(root, database_url)


def add_posts(site: Site, posts: int = 3) -> None:
    write_posts(site.root, posts, BODY)


def seed(site: Site, count: int) -> float:
    """The baseline edition, then ``count`` subscribers of ``weekly`` in two statements;
    returns the seconds it took."""
    from feedpub.config import load_settings
    from feedpub.digest import make_editions
    from feedpub.store import open_store

    store = open_store(site.database_url)
    started = time.perf_counter()
    try:
        make_editions(load_settings(site.root, env=site.env()), store, T0)  # the baseline
        postgres = store.dialect == "postgresql"
        numbers = ("generate_series(1, :count) AS g(n)" if postgres else
                   "(WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
                   "WHERE n < :count) SELECT n FROM g) AS g")
        when = "CAST(:t0 AS timestamptz)" if postgres else ":t0"
        token = "md5(n::text)" if postgres else "lower(hex(randomblob(16)))"
        concat = "'reader' || n || '@example.org'"
        with store.write() as conn:
            conn.execute(sa.text(f"""
                INSERT INTO subscribers (email, email_key, name, status, source, created_at,
                    status_changed_at, confirmed_at, consecutive_failures, token_key)
                SELECT {concat}, {concat}, 'Reader ' || n,
                    CASE WHEN n % 50 = 0 THEN 'unsubscribed' ELSE 'active' END,
                    'import', {when}, {when}, {when}, 0, {token}
                FROM {numbers}"""), {"count": count, "t0": _stored(store.dialect)})
            conn.execute(sa.text(f"""
                INSERT INTO subscriptions (subscriber_id, newsletter, mode, categories,
                    created_at)
                SELECT id, 'weekly', 'digest', '[]', {when} FROM subscribers"""),
                {"t0": _stored(store.dialect)})
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    finally:
        store.close()
    return time.perf_counter() - started


def _stored(dialect: str) -> object:
    return T0 if dialect == "postgresql" else T0.replace(tzinfo=None).isoformat(" ")


@contextmanager
def database(kind: str, folder: Path, postgres: str | None) -> Iterator[str]:
    if kind == "SQLite":
        yield f"sqlite:///{folder / 'feedpub.db'}"
        return
    assert postgres is not None
    with scratch_schema(postgres, prefix="scale") as url:
        yield url


# --- the measurements ---------------------------------------------------------------------------


def status_in_process(site: Site) -> float:
    from feedpub.config import load_settings
    from feedpub.status import site_status
    from feedpub.store import open_existing_store

    settings = load_settings(site.root, env=site.env())
    store = open_existing_store(site.database_url)
    assert store is not None
    try:
        site_status(settings, store, SEND_AT)  # connect once, outside the timing
        started = time.perf_counter()
        site_status(settings, store, SEND_AT)
        return time.perf_counter() - started
    finally:
        store.close()


def claim_seconds(site: Site) -> float:
    from feedpub.store import open_store, queue

    store = open_store(site.database_url)
    try:
        times = []
        for _ in range(5):
            with store.engine.connect() as conn, conn.begin() as transaction:
                started = time.perf_counter()
                claimed = queue.claim(conn, worker="bench", now=SEND_AT, limit=100)
                times.append(time.perf_counter() - started)
                transaction.rollback()
            assert len(claimed) == 100
        return statistics.median(times)
    finally:
        store.close()


def send_for(site: Site, sink: Sink, seconds: float) -> tuple[Run, int]:
    """``digest send`` stopped with SIGTERM after ``seconds``: its run and messages sent."""
    before = site.sent()
    start = time.perf_counter()
    process = subprocess.Popen(
        site.command("digest", "send", "--now", SEND_AT.isoformat()), env=site.env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    # os.wait4, not Popen's own waiting, which would reap the process and lose its usage;
    # a queue drained before ``seconds`` ends the run early.
    deadline = time.monotonic() + seconds
    pid = 0
    while pid == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        pid, _status, usage = os.wait4(process.pid, os.WNOHANG)
    if pid == 0:
        os.kill(process.pid, signal.SIGTERM)
        _, _status, usage = os.wait4(process.pid, 0)
    process.returncode = 0  # reaped above
    assert process.stdout is not None
    output = process.stdout.read().decode()
    wall = time.perf_counter() - start
    run = Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, 0.0,
              os.getloadavg()[0], output)
    return run, site.sent() - before


@dataclass
class SizeResult:
    database: str
    subscribers: int
    seed_s: float
    queue: Run
    queued: int
    status_cli: list[float]
    status_queries: list[float]
    claim_s: float
    memory: Run | None
    memory_sent: int


def measure(kind: str, count: int, sink: Sink, tmp: Path, postgres: str | None,
            memory_seconds: float) -> SizeResult:
    folder = tmp / f"{kind}-{count}"
    folder.mkdir()
    with database(kind, folder, postgres) as url:
        site = write_site(folder / "site", url, sink.port)
        say(f"{kind} {count:,}: seeding (load {load()})")
        seed_s = seed(site, count)
        add_posts(site)
        say(f"{kind} {count:,}: queueing (load {load()})")
        queued_run = site.feedpub("digest", "send", "--queue-only", "--now", MONDAY_9.isoformat())
        from feedpub.store import open_store, queue

        store = open_store(url)
        with store.read() as conn:
            queued = queue.status_counts(conn).get("queued", 0)
        store.close()
        say(f"{kind} {count:,}: queued {queued:,} in {queued_run.wall:.1f} s (load {load()})")
        status_cli, status_queries = [], []
        for _ in range(3):
            run = site.feedpub("status", "--json", "--now", SEND_AT.isoformat())
            document = json.loads(run.output)
            assert document["deliveries"]["queued"] == queued, document["deliveries"]
            status_cli.append(run.wall)
            status_queries.append(status_in_process(site))
        say(f"{kind} {count:,}: status {statistics.median(status_cli):.2f} s, queries "
            f"{statistics.median(status_queries):.2f} s (load {load()})")
        claim_s = claim_seconds(site)
        memory, sent = None, 0
        if memory_seconds:
            memory, sent = send_for(site, sink, memory_seconds)
            say(f"{kind} {count:,}: sender peak RSS {memory.rss_kib / 1024:.1f} MiB after "
                f"{sent:,} messages (load {load()})")
    return SizeResult(kind, count, seed_s, queued_run, queued, status_cli, status_queries,
                      claim_s, memory, sent)


@dataclass
class WorkersResult:
    subscribers: int
    rate: float
    wall: float
    per_worker: dict[str, int]
    sent: int
    attempts_over_one: int
    load: str
    span: float
    """Seconds from the first message sent to the last (start-up left out)."""


def two_workers(sink: Sink, tmp: Path, postgres: str, count: int, rate: float,
                concurrency: int) -> WorkersResult:
    """Two ``digest send`` processes at once, one queue of ``count``."""
    folder = tmp / f"workers-{count}-{rate}"
    folder.mkdir()
    with database("PostgreSQL", folder, postgres) as url:
        site = write_site(folder / "site", url, sink.port, rate=rate, concurrency=concurrency)
        seed(site, count)
        add_posts(site)
        site.feedpub("digest", "send", "--queue-only", "--now", MONDAY_9.isoformat())
        say(f"two workers, {count:,} queued, rate {rate or 'none'} (load {load()})")
        command = site.command("digest", "send", "--now", SEND_AT.isoformat())
        started = time.perf_counter()
        processes = [subprocess.Popen(command, env=site.env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT) for _ in range(2)]
        outputs = [p.communicate()[0].decode() for p in processes]
        wall = time.perf_counter() - started
        for process, output in zip(processes, outputs, strict=True):
            if process.returncode != 0:
                raise SystemExit(f"a worker failed:\n{output}")
        from feedpub.store import open_store
        from feedpub.store.schema import deliveries

        store = open_store(url)
        with store.read() as conn:
            per_worker = {
                str(worker): int(n) for worker, n in conn.execute(
                    sa.select(deliveries.c.claimed_by, sa.func.count())
                    .where(deliveries.c.status == "sent").group_by(deliveries.c.claimed_by))
            }
            sent = sum(per_worker.values())
            again = conn.execute(sa.select(sa.func.count()).select_from(deliveries)
                                 .where(deliveries.c.attempts > 1)).scalar_one()
            active = conn.execute(sa.text(
                "SELECT count(*) FROM subscribers WHERE status = 'active'")).scalar_one()
            first, last = conn.execute(sa.select(sa.func.min(deliveries.c.sent_at),
                                                 sa.func.max(deliveries.c.sent_at))).one()
        store.close()
        if sent != active:
            raise SystemExit(f"sent {sent} of {active}:\n{outputs}")
    say(f"two workers: {sent:,} in {wall:.1f} s = {sent / wall:.0f} msg/s, split "
        f"{sorted(per_worker.values())} (load {load()})")
    span = (last - first).total_seconds() if first and last else 0.0
    return WorkersResult(count, rate, wall, per_worker, sent, again, load(), span)


# --- the report ---------------------------------------------------------------------------


def report(sizes: list[SizeResult], workers: list[WorkersResult]) -> None:
    print(f"load average at the end: {load()} on {os.cpu_count()} CPUs")
    print("| database | subscribers | queue (`digest send --queue-only`) | `status` command "
          "(3 runs) | status queries | claim 100 | sender peak RSS (messages sent) |")
    print("| --- | ---: | --- | --- | --- | ---: | --- |")
    for r in sizes:
        memory = (f"{r.memory.rss_kib / 1024:.1f} MiB ({r.memory_sent:,})"
                  if r.memory else "-")
        print(f"| {r.database} | {r.subscribers:,} | {r.queue.wall:.1f} s for {r.queued:,} "
              f"(CPU {r.queue.cpu:.1f} s, load {r.queue.load:.1f}) | "
              f"{', '.join(f'{s:.2f}' for s in r.status_cli)} s | "
              f"{', '.join(f'{s:.2f}' for s in r.status_queries)} s | "
              f"{r.claim_s * 1000:.0f} ms | {memory} |")
    for w in workers:
        print(f"two workers, {w.subscribers:,} messages, rate limit {w.rate or 'none'}: "
              f"{w.wall:.1f} s = {w.sent / w.wall:.0f} msg/s (first to last message: "
              f"{w.span:.1f} s = {w.sent / max(w.span, 0.001):.0f} msg/s); split "
              f"{sorted(w.per_worker.values())}; deliveries tried twice: "
              f"{w.attempts_over_one}; load {w.load}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--postgres", default=os.environ.get("FEEDPUB_TEST_DATABASE_URL"))
    parser.add_argument("--sqlite", action="store_true", help="measure SQLite as well")
    parser.add_argument("--memory-seconds", type=float, default=30.0)
    parser.add_argument("--workers-subscribers", type=int, default=20_000)
    parser.add_argument("--rate-subscribers", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    if not args.postgres:
        parser.error("--postgres or FEEDPUB_TEST_DATABASE_URL is needed")
    kinds = ["PostgreSQL"] + (["SQLite"] if args.sqlite else [])
    sizes: list[SizeResult] = []
    workers: list[WorkersResult] = []
    with tempfile.TemporaryDirectory(prefix="feedpub-scale-") as name, smtp_sink() as sink:
        tmp = Path(name)
        for count in (int(s) for s in args.sizes.split(",") if s):
            for kind in kinds:
                sizes.append(measure(kind, count, sink, tmp, args.postgres,
                                     args.memory_seconds))
        if args.workers_subscribers:
            workers.append(two_workers(sink, tmp, args.postgres, args.workers_subscribers,
                                       0, args.concurrency))
        if args.rate_subscribers:
            workers.append(two_workers(sink, tmp, args.postgres, args.rate_subscribers,
                                       args.rate, args.concurrency))
    report(sizes, workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
