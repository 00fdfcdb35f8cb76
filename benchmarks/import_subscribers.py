"""How fast does `feedpub subscribers import` go? Generates a CSV and imports it.

    python benchmarks/import_subscribers.py                 # 100,000 rows into SQLite
    python benchmarks/import_subscribers.py --rows 20000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

PostgreSQL runs too when --database-url or FEEDPUB_TEST_DATABASE_URL is given;
the import goes into a schema of its own that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from feedpub.store import ImportReport, count_by_status, import_subscribers, open_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.scratch
from tests.scratch import scratch_schema

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DOMAINS = ["gmail.com", "example.org", "yahoo.co.jp", "bücher.de", "mail.example.co.uk",
           "outlook.com", "proton.me", "web.de"] + [f"company{i}.com" for i in range(300)]
GIVEN = ["Ada", "Grace", "Zoë", "José", "李", "Ngozi", "Åsa", "Mohammed", "O'Brien", "Émile"]
MAILBOX = ["ada", "grace", "zoe", "jose", "li", "ngozi", "asa", "mohammed", "o'brien", "emile"]
FAMILY = ["Lovelace", "Hopper", "王", "Müller", "Okafor", "Smith, Jr.", "d'Arc", "Nakamura"]


def write_csv(path: Path, rows: int, seed: int = 5) -> None:
    """One row per subscriber, as real lists look: Unicode names, mostly ASCII addresses
    (one in a hundred internationalised), a few unsubscribed."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "status", "newsletter", "mode", "categories"])
        for n in range(rows):
            index = rng.randrange(len(GIVEN))
            given, family = GIVEN[index], rng.choice(FAMILY)
            mailbox = given.lower() if n % 100 == 0 else MAILBOX[index]
            email = f"{mailbox}.{n}@{rng.choice(DOMAINS)}"
            status = "unsubscribed" if n % 50 == 0 else "active"
            newsletter, mode = ("daily", "instant") if n % 10 == 0 else ("weekly", "digest")
            categories = "python,web" if n % 7 == 0 else ""
            writer.writerow([email, f"{given} {family}", status, newsletter, mode, categories])


def postgres_cpu() -> float:
    """CPU seconds used so far by every PostgreSQL process on this machine (Linux; 0
    elsewhere): the server's share of an import, give or take other clients'."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, _, rest = stat.read_text().partition(") ")
        except OSError:
            continue
        if name.endswith("(postgres"):
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_import(
    url: str, csv_path: Path, rows: int, console: Console
) -> tuple[float, float, float, ImportReport]:
    store = open_store(url)
    try:
        with csv_path.open(encoding="utf-8", newline="") as handle, Progress(
            console=console, disable=not console.is_terminal, transient=True
        ) as progress:
            task = progress.add_task("importing", total=rows)

            def update(done: int) -> None:
                progress.update(task, completed=done)

            started, cpu_started = time.perf_counter(), time.process_time()
            server_started = postgres_cpu()
            report = import_subscribers(
                store, handle, now=NOW, newsletters={"weekly", "daily"}, path=csv_path,
                progress=update,
            )
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            server = postgres_cpu() - server_started
        with store.read() as conn:
            total = sum(count_by_status(conn).values())
        # One row in a hundred has a non-ASCII mailbox, which feedpub refuses (it cannot
        # send to it without SMTPUTF8): those rows are skipped with their line numbers.
        if report.added + len(report.skipped) != rows or total != report.added:
            raise SystemExit(
                f"expected {rows} rows added or skipped, the store has {total}: "
                f"added {report.added}, skipped {len(report.skipped)}"
            )
        return elapsed, cpu, server, report
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--database-url", default=os.environ.get("FEEDPUB_TEST_DATABASE_URL"),
        help="a PostgreSQL URL to measure as well (default: $FEEDPUB_TEST_DATABASE_URL)",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="measure PostgreSQL only")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="feedpub-bench-") as tmp:
        csv_path = Path(tmp) / "subscribers.csv"
        write_csv(csv_path, args.rows)
        targets = [] if args.no_sqlite else [
            ("SQLite", f"sqlite:///{Path(tmp) / 'feedpub.db'}", None)
        ]
        if args.database_url:
            targets.append(("PostgreSQL", "", args.database_url))
        for label, url, pg_base in targets:
            if pg_base is not None:
                with scratch_schema(pg_base, prefix="bench") as pg_url:
                    elapsed, cpu, server, _ = run_import(pg_url, csv_path, args.rows, console)
            else:
                elapsed, cpu, server, _ = run_import(url, csv_path, args.rows, console)
            load = os.getloadavg()[0]
            print(
                f"{label}: {args.rows:,} rows in {elapsed:.2f} s "
                f"({args.rows / elapsed:,.0f} rows/s); this process used {cpu:.2f} s of CPU"
                f"{f', PostgreSQL {server:.2f} s' if pg_base is not None else ''}; "
                f"load average {load:.1f} on {os.cpu_count()} CPUs"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
