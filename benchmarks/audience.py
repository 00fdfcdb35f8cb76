"""How fast `feedpub audience import` reads an access log.

Writes a combined-format log of ``--lines`` lines (1,000,000 by default) over
``--days`` days: page views by browsers, crawlers, and feed fetches by
aggregators (with their subscriber counts), by ``--readers`` distinct feed
readers, and by bots and browsers. Then runs the real command
(``python -m feedpub audience import``, interpreter start-up included) on it
twice (the second import changes nothing) and on the same log gzipped, into
SQLite or, with ``--database-url``, a scratch schema of PostgreSQL.

    python benchmarks/audience.py
    python benchmarks/audience.py --lines 200000 --database-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.scratch import scratch_schema

AGGREGATORS = [
    "Feedly/1.0 (+http://www.feedly.com/fetcher.html; {n} subscribers; )",
    "Mozilla/5.0 (compatible; inoreader.com; {n} subscribers)",
    "Feedbin feed-id:1697787 - {n} subscribers",
    "Mozilla/5.0 (compatible; BazQux/2.4; +https://bazqux.com/fetcher; {n} subscribers)",
]
READER_APPS = [
    "Mozilla/5.0 (compatible; Miniflux/2.0.{v}; +https://miniflux.app)",
    "Tiny Tiny RSS/23.{v} (https://tt-rss.org/)",
    "NetNewsWire (RSS Reader; https://netnewswire.com/) {v}",
]
BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/13{v}.0.0.0 Safari/537.36")
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
FEEDS = ["/atom.xml", "/rss.xml", "/feed.json", "/categories/python/atom.xml"]
CONFIG = """\
[site]
title = "Benchmark"
url = "https://example.com/"

[[newsletter]]
name = "weekly"
"""


def write_log(path: Path, lines: int, days: int, readers: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    step = timedelta(days=days) / lines
    clients = [(f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
                READER_APPS[n % 3].format(v=n % 40)) for n in range(readers)]
    with path.open("w", encoding="latin-1") as out:
        for number in range(lines):
            at = start + step * number
            stamp = at.strftime("%d/%b/%Y:%H:%M:%S +0000")
            roll = rng.random()
            status = 304 if rng.random() < 0.6 else 200
            if roll < 0.35:  # page views
                address = f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"
                path_, agent, status = f"/2026/11/{rng.randrange(1, 29):02}/post/", \
                    BROWSER.format(v=rng.randrange(10)), 200
            elif roll < 0.45:
                address, path_, agent, status = "66.249.66.1", "/2026/11/01/post/", BOT, 200
            elif roll < 0.50:
                address, path_, agent = "203.0.113.9", rng.choice(FEEDS), \
                    rng.choice(AGGREGATORS).format(n=400 + number // 10000)
            elif roll < 0.55:
                address = f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"
                path_, agent = rng.choice(FEEDS), BROWSER.format(v=rng.randrange(10))
            else:
                address, agent = rng.choice(clients)
                path_ = rng.choice(FEEDS)
            out.write(f'{address} - - [{stamp}] "GET {path_} HTTP/1.1" {status} 5120 '
                      f'"-" "{agent}"\n')


def run_import(site: Path, env: dict[str, str], log: Path) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "feedpub", "--site", str(site), "audience", "import", str(log)],
        env=env, check=True, capture_output=True, text=True,
    )
    return time.perf_counter() - started, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--readers", type=int, default=5_000)
    parser.add_argument("--database-url", help="PostgreSQL base URL (a scratch schema is used)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        site = Path(folder) / "site"
        site.mkdir()
        (site / "feedpub.toml").write_text(CONFIG, encoding="utf-8")
        url = (stack.enter_context(scratch_schema(options.database_url, prefix="bench"))
               if options.database_url else f"sqlite:///{site / 'feedpub.db'}")
        env = {**os.environ, "FEEDPUB_SECRET": "benchmark-secret", "FEEDPUB_DATABASE_URL": url}
        log = Path(folder) / "access.log"
        started = time.perf_counter()
        write_log(log, options.lines, options.days, options.readers)
        print(f"wrote {options.lines:,} lines in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        log_bytes = log.stat().st_size
        packed = log.with_suffix(".log.gz")
        packed.write_bytes(gzip.compress(log.read_bytes(), compresslevel=6))
        results = {}
        for name, path in (("first import", log), ("same log again", log),
                           ("same log gzipped", packed)):
            seconds, output = run_import(site, env, path)
            results[name] = {"seconds": round(seconds, 2),
                             "lines_per_second": round(options.lines / seconds),
                             "output": output}
            print(f"{name:18} {seconds:6.2f} s  {options.lines / seconds:10,.0f} lines/s  "
                  f"{output}", file=sys.stderr)
    print(json.dumps({
        "lines": options.lines, "days": options.days, "readers": options.readers,
        "log_bytes": log_bytes,
        "database": "postgresql" if options.database_url else "sqlite",
        "cpus": os.cpu_count(), "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
