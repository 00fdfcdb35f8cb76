"""Feed readers: User-Agents classified, fetches counted per day without addresses,
access logs imported idempotently and counted as `feedpub serve` counts them."""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from feedpub.audience import (
    DailyKeys,
    FetchCounter,
    Kind,
    Tally,
    classify,
    import_logs,
    parse_log_line,
)
from feedpub.cli import main
from feedpub.config import Settings
from feedpub.errors import StoreError
from feedpub.status import site_status, status_document
from feedpub.store import Store, open_store
from feedpub.store.audience import feed_audience
from feedpub.store.schema import feed_readers, feed_service_counts
from feedpub.web import create_app
from tests.conftest import Clock, SiteFactory

with warnings.catch_warnings():
    # Starlette 1.x asks for the httpx2 fork; httpx is what the project installs.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SECRET = "test-secret"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

# The formats each service documents (or shows in its fetcher's User-Agent).
AGGREGATORS = [
    ("Feedly/1.0 (+http://www.feedly.com/fetcher.html; 462 subscribers; )", "Feedly", 462),
    ("Feedly/1.0 (+https://feedly.com/poller.html; 1 subscriber)", "Feedly", 1),
    ("Inoreader/1.0 (+http://www.inoreader.com/feed-fetcher; 3 subscribers; )", "Inoreader", 3),
    ("Mozilla/5.0 (compatible; inoreader.com; 114 subscribers)", "Inoreader", 114),
    ('NewsBlur Feed Fetcher - 27 subscribers - https://www.newsblur.com/site/7704055/x '
     '("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like '
     'Gecko) Version/14.0.1 Safari/605.1.15")', "NewsBlur", 27),
    ("Feedbin feed-id:1697787 - 102 subscribers", "Feedbin", 102),
    ("Mozilla/5.0 (compatible; theoldreader.com; 5 subscribers; feed-id=cead6c3a837650eeefd8)",
     "The Old Reader", 5),
    ("Mozilla/5.0 (compatible; BazQux/2.4; +https://bazqux.com/fetcher; 6 subscribers)",
     "BazQux", 6),
    ("FeedHQ/1.2 (https://github.org/feedhq/feedhq; 1 subscriber; "
     "https://github.com/feedhq/feedhq/wiki/User-Agent; like FeedFetcher-Google)", "FeedHQ", 1),
    ("Dreamwidth Studios (webmaster@dreamwidth.org; for https://www.dreamwidth.org/users/x/; "
     "2 readers)", "Dreamwidth", 2),
    ("PlainFeeder v0.0.1 (+http://plainfeeder.com/about ; Subscriber Count: 1,204)",
     "PlainFeeder", 1204),
    # Not listed: named after its product token.
    ("Acme Fetcher/2.0 (+https://acme.example/fetcher; 7 subscribers)", "Acme Fetcher", 7),
]
READERS = [
    "Mozilla/5.0 (compatible; Miniflux/2.0.50; +https://miniflux.app)",
    "Tiny Tiny RSS/23.05-a4543de (Unsupported) (https://tt-rss.org/)",
    "NetNewsWire (RSS Reader; https://netnewswire.com/)",
    "FreshRSS/1.23.1 (Linux; https://freshrss.org)",
    "RSS Bot/2.8 (Mac OS X Version 10.14.5 (Build 18F132))",
    "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.0",
    "Emacs Elfeed 3.4.2",
    "SomeDesktopApp/1.0",
]
NOT_READERS = [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/132.0.0.0 Safari/537.36", Kind.BROWSER),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:131.0) Gecko/20100101 Firefox/131.0",
     Kind.BROWSER),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Kind.BOT),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
     "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36", Kind.BOT),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", Kind.BOT),
    ("curl/8.5.0", Kind.BOT),
    ("python-httpx/0.28.1", Kind.BOT),
    ("-", Kind.BOT),
    ("", Kind.BOT),
]
FEEDLY = AGGREGATORS[0][0]
MINIFLUX = READERS[0]
CHROME = NOT_READERS[0][0]


# --- User-Agents ------------------------------------------------------------------------


@pytest.mark.parametrize(("agent", "service", "count"), AGGREGATORS)
def test_aggregators_state_their_subscriber_count(agent: str, service: str, count: int) -> None:
    found = classify(agent)
    assert (found.kind, found.service, found.subscribers) == (Kind.SERVICE, service, count)


def test_an_aggregator_fetch_without_a_count_is_not_a_reader() -> None:
    found = classify("Feedly/1.0 (+http://www.feedly.com/fetcher.html; like FeedFetcher-Google)")
    assert (found.kind, found.service, found.subscribers) == (Kind.SERVICE, "Feedly", None)
    tally = Tally(DailyKeys(SECRET))
    assert not tally.add(T0, "/atom.xml", "192.0.2.1", "Feedly/1.0 (+http://feedly.com)")
    assert len(tally) == 0


@pytest.mark.parametrize("agent", READERS)
def test_feed_reader_applications_are_readers(agent: str) -> None:
    assert classify(agent).kind is Kind.READER


@pytest.mark.parametrize(("agent", "kind"), NOT_READERS)
def test_bots_and_browsers_are_not_readers(agent: str, kind: Kind) -> None:
    assert classify(agent).kind is kind
    tally = Tally(DailyKeys(SECRET))
    assert not tally.add(T0, "/atom.xml", "192.0.2.1", agent)
    assert len(tally) == 0


# --- counting ---------------------------------------------------------------------------


def test_a_reader_counts_once_per_feed_and_day_and_days_cannot_be_linked() -> None:
    tally = Tally(DailyKeys(SECRET))
    for minutes in range(0, 600, 30):
        tally.add(T0 + timedelta(minutes=minutes), "/atom.xml", "192.0.2.1", MINIFLUX)
    tally.add(T0, "/rss.xml", "192.0.2.1", MINIFLUX)
    tally.add(T0, "/atom.xml", "192.0.2.2", MINIFLUX)  # another address
    tally.add(T0, "/atom.xml", "192.0.2.1", READERS[1])  # another app at the same address
    tally.add(T0 + timedelta(days=1), "/atom.xml", "192.0.2.1", MINIFLUX)
    readers, _ = tally.drain()
    by_day: dict[tuple[date, str], set[str]] = {}
    for day, feed, reader in readers:
        by_day.setdefault((day, feed), set()).add(reader)
    assert {key: len(value) for key, value in by_day.items()} == {
        (T0.date(), "/atom.xml"): 3, (T0.date(), "/rss.xml"): 1,
        (T0.date() + timedelta(days=1), "/atom.xml"): 1,
    }
    # The same reader on two days is two unrelated hashes; the same day, one.
    keys = DailyKeys(SECRET)
    first = keys.reader(T0.date(), "192.0.2.1", MINIFLUX)
    assert first in by_day[(T0.date(), "/rss.xml")]
    assert first not in by_day[(T0.date() + timedelta(days=1), "/atom.xml")]
    assert DailyKeys("another-secret").reader(T0.date(), "192.0.2.1", MINIFLUX) != first
    assert len(first) == 32 and "192.0.2.1" not in first


def test_the_latest_stated_count_wins_not_the_sum() -> None:
    tally = Tally(DailyKeys(SECRET))
    tally.add(T0 + timedelta(hours=2), "/atom.xml", "192.0.2.9",
              "Feedly/1.0 (+http://www.feedly.com/fetcher.html; 470 subscribers; )")
    tally.add(T0, "/atom.xml", "192.0.2.9", FEEDLY)  # earlier, arriving later
    tally.add(T0 + timedelta(hours=1), "/atom.xml", "192.0.2.9", FEEDLY)
    _, services = tally.drain()
    assert [(s.service, s.subscribers, s.seen_at) for s in services] == [
        ("Feedly", 470, T0 + timedelta(hours=2))
    ]


# --- access logs ------------------------------------------------------------------------


def log_line(at: datetime, address: str, agent: str, path: str = "/atom.xml",
             status: int = 200, method: str = "GET", apache: bool = False) -> str:
    """A combined-format line, escaped the way nginx (or Apache) writes it."""
    quote = '\\"' if apache else "\\x22"
    escaped = agent.replace("\\", "\\\\" if apache else "\\x5C").replace('"', quote)
    stamp = at.strftime("%d/%b/%Y:%H:%M:%S %z")
    return (f'{address} - - [{stamp}] "{method} {path} HTTP/1.1" {status} 1234 '
            f'"-" "{escaped}"\n')


@pytest.mark.parametrize("apache", [False, True])
def test_a_log_line_gives_back_the_user_agent_the_server_received(apache: bool) -> None:
    agent = NOT_READERS[0][0].replace("537.36", '"quoted" 537.36')
    line = log_line(T0, "2001:db8::1", agent, path="/categories/caf%C3%A9/rss.xml?x=1",
                    apache=apache)
    fetch = parse_log_line(line)
    assert fetch is not None
    assert (fetch.at, fetch.path, fetch.address, fetch.user_agent) == (
        T0, "/categories/café/rss.xml", "2001:db8::1", agent)


def test_a_log_line_is_counted_on_its_utc_day() -> None:
    evening = datetime(2026, 12, 1, 23, 30, tzinfo=timezone(timedelta(hours=-7)))
    fetch = parse_log_line(log_line(evening, "192.0.2.1", MINIFLUX))
    assert fetch is not None and fetch.at.astimezone(UTC).date() == date(2026, 12, 2)


@pytest.mark.parametrize("line", [
    log_line(T0, "192.0.2.1", MINIFLUX, status=404),
    log_line(T0, "192.0.2.1", MINIFLUX, status=301),
    log_line(T0, "192.0.2.1", MINIFLUX, method="HEAD"),
    log_line(T0, "192.0.2.1", MINIFLUX, method="POST"),
    log_line(T0, "192.0.2.1", MINIFLUX, path="/2026/12/01/post/"),
    log_line(T0, "192.0.2.1", MINIFLUX, path="/feed.xsl"),
])
def test_lines_that_are_not_feed_fetches(line: str) -> None:
    assert parse_log_line(line) is None


def test_a_304_is_a_fetch_and_other_feed_paths_can_be_named() -> None:
    assert parse_log_line(log_line(T0, "192.0.2.1", MINIFLUX, status=304)) is not None
    line = log_line(T0, "192.0.2.1", MINIFLUX, path="/index.xml")
    assert parse_log_line(line) is None
    fetch = parse_log_line(line, frozenset({"/index.xml"}))
    assert fetch is not None and fetch.path == "/index.xml"


def test_a_line_in_another_format_is_reported() -> None:
    with pytest.raises(ValueError, match="combined"):
        parse_log_line('192.0.2.1 "GET /atom.xml HTTP/1.1" 200\n')


# --- the store --------------------------------------------------------------------------


def sample_log(tmp: Path, *, name: str = "access.log") -> Path:
    """Two days of fetches: aggregators, readers, a browser, a bot and a 404."""
    day2 = T0 + timedelta(days=1)
    lines = [
        log_line(T0, "192.0.2.9", FEEDLY),
        log_line(T0 + timedelta(hours=5), "192.0.2.9",
                 "Feedly/1.0 (+http://www.feedly.com/fetcher.html; 470 subscribers; )"),
        log_line(T0, "192.0.2.8", AGGREGATORS[2][0], path="/rss.xml"),
        log_line(T0, "192.0.2.1", MINIFLUX),
        log_line(T0 + timedelta(hours=1), "192.0.2.1", MINIFLUX, status=304),
        log_line(T0, "192.0.2.2", READERS[2]),
        log_line(T0, "192.0.2.2", READERS[2], path="/rss.xml"),
        log_line(T0, "192.0.2.3", CHROME),
        log_line(T0, "192.0.2.4", NOT_READERS[2][0]),
        log_line(T0, "192.0.2.5", READERS[3], status=404),
        log_line(day2, "192.0.2.1", MINIFLUX),
        log_line(day2, "192.0.2.9", FEEDLY.replace("462", "480")),
        "this line is not an access log line atom.xml\n",
    ]
    path = tmp / name
    path.write_text("".join(lines), encoding="latin-1")
    return path


def table_rows(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    with store.read() as conn:
        return {
            table.name: sorted(tuple(row) for row in conn.execute(sa.select(table)))
            for table in (feed_readers, feed_service_counts)
        }


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with open_store(database_url) as opened:
        yield opened


def test_importing_a_log_twice_or_gzipped_changes_nothing(store: Store, tmp_path: Path) -> None:
    log = sample_log(tmp_path)
    report = import_logs(store, SECRET, [log])
    assert (report.lines, report.fetches, report.ignored, report.unreadable) == (13, 9, 2, 1)
    assert (report.first_day, report.last_day) == (T0.date(), T0.date() + timedelta(days=1))
    first = table_rows(store)
    assert len(first["feed_readers"]) == 4  # Miniflux x2 days, NetNewsWire x2 feeds
    assert [(r[1], r[2], r[3]) for r in first["feed_service_counts"]] == [
        ("/atom.xml", "Feedly", 470), ("/rss.xml", "Inoreader", 3), ("/atom.xml", "Feedly", 480),
    ]
    import_logs(store, SECRET, [log])
    packed = tmp_path / "access.log.1.gz"
    packed.write_bytes(gzip.compress(log.read_bytes()))
    import_logs(store, SECRET, [packed], batch=2)
    assert table_rows(store) == first


def test_an_older_log_imported_later_does_not_replace_a_newer_count(
    store: Store, tmp_path: Path,
) -> None:
    newer = tmp_path / "new.log"
    newer.write_text(log_line(T0 + timedelta(hours=3), "192.0.2.9", FEEDLY.replace("462", "9")))
    older = tmp_path / "old.log"
    older.write_text(log_line(T0, "192.0.2.9", FEEDLY))
    import_logs(store, SECRET, [newer])
    import_logs(store, SECRET, [older])
    assert [r[3] for r in table_rows(store)["feed_service_counts"]] == [9]


def test_no_address_or_user_agent_reaches_the_database(store: Store, tmp_path: Path) -> None:
    import_logs(store, SECRET, [sample_log(tmp_path)])
    stored = json.dumps(table_rows(store), default=str)
    for secret_part in ("192.0.2", "Miniflux", "NetNewsWire", SECRET):
        assert secret_part not in stored


def test_the_audience_counts_the_last_complete_day(store: Store, tmp_path: Path) -> None:
    import_logs(store, SECRET, [sample_log(tmp_path)])
    with store.read() as conn:
        during_day2 = feed_audience(conn, T0 + timedelta(days=1, hours=12))
        after_day2 = feed_audience(conn, T0 + timedelta(days=2, hours=1))
        on_day1 = feed_audience(conn, T0 + timedelta(hours=12))
        much_later = feed_audience(conn, T0 + timedelta(days=60))
    # Day 1 is complete: Miniflux and NetNewsWire (two feeds, one reader).
    assert (during_day2.day, during_day2.complete, during_day2.others) == (T0.date(), True, 2)
    assert during_day2.services == {"Feedly": 480, "Inoreader": 3}
    assert during_day2.total == 485
    assert [(f.feed, f.services, f.others) for f in during_day2.feeds] == [
        ("/atom.xml", {"Feedly": 480}, 2), ("/rss.xml", {"Inoreader": 3}, 1),
    ]
    assert (after_day2.day, after_day2.others) == (T0.date() + timedelta(days=1), 1)
    # Only a partial day so far: shown, and said to be partial.
    assert (on_day1.day, on_day1.complete, on_day1.others) == (T0.date(), False, 2)
    assert on_day1.services == {"Feedly": 470, "Inoreader": 3}
    # Aggregators that stopped fetching a month ago no longer count.
    assert much_later.services == {} and much_later.total == 1


# --- feedpub serve ----------------------------------------------------------------------


FEED_FILES = {
    "public/atom.xml": "<feed>atom</feed>\n" * 40,
    "public/rss.xml": "<rss>rss</rss>\n",
    "public/categories/python/atom.xml": "<feed>python</feed>\n",
    "public/index.html": "<p>home</p>\n",
}


@dataclass
class Served:
    settings: Settings
    store: Store
    clock: Clock

    def get(self, address: str, agent: str, path: str = "/atom.xml",
            headers: dict[str, str] | None = None, method: str = "GET") -> int:
        app = create_app(self.settings, now=self.clock, store=self.store)
        with TestClient(app, client=(address, 50000)) as client:
            response = client.request(method, path, headers={"User-Agent": agent,
                                                             **(headers or {})})
            return response.status_code


@pytest.fixture
def served(make_site: SiteFactory, database_url: str) -> Iterator[Served]:
    make_site(files=FEED_FILES)
    settings = make_site.settings({"FEEDPUB_SECRET": SECRET,
                                   "FEEDPUB_DATABASE_URL": database_url})
    with open_store(database_url) as opened:
        yield Served(settings, opened, Clock(T0))


def test_serve_counts_as_the_log_import_does(served: Served, tmp_path: Path) -> None:
    requests = [
        ("192.0.2.9", FEEDLY, "/atom.xml", 200),
        ("192.0.2.8", AGGREGATORS[2][0], "/rss.xml", 200),
        ("192.0.2.1", MINIFLUX, "/atom.xml", 200),
        ("192.0.2.1", MINIFLUX, "/categories/python/atom.xml", 200),
        ("192.0.2.2", READERS[2], "/atom.xml", 200),
        ("192.0.2.3", CHROME, "/atom.xml", 200),
        ("192.0.2.4", NOT_READERS[2][0], "/rss.xml", 200),
        ("192.0.2.5", READERS[3], "/missing/atom.xml", 404),
        ("192.0.2.6", READERS[4], "/", 200),
    ]
    lines = []
    for address, agent, path, expected in requests:
        assert served.get(address, agent, path) == expected
        lines.append(log_line(served.clock.now, address, agent, path=path, status=expected))
        served.clock.advance(minutes=7)
    # A conditional GET answered 304 is a fetch too; a HEAD is not.
    assert served.get("192.0.2.7", READERS[5], headers={"If-None-Match": "*"}) == 304
    lines.append(log_line(served.clock.now, "192.0.2.7", READERS[5], status=304))
    assert served.get("192.0.2.10", READERS[6], method="HEAD") == 200
    lines.append(log_line(served.clock.now, "192.0.2.10", READERS[6], method="HEAD"))

    log = tmp_path / "same-requests.log"
    log.write_text("".join(lines), encoding="latin-1")
    with open_store(f"sqlite:///{tmp_path / 'imported.db'}") as imported:
        import_logs(imported, SECRET, [log])
        assert table_rows(served.store) == table_rows(imported)
    rows = table_rows(served.store)
    assert len(rows["feed_readers"]) == 4
    assert [(r[1], r[2], r[3]) for r in rows["feed_service_counts"]] == [
        ("/atom.xml", "Feedly", 462), ("/rss.xml", "Inoreader", 3),
    ]


def test_serving_writes_nothing_until_a_flush(served: Served) -> None:
    counter = FetchCounter(served.store, SECRET)
    for number in range(500):
        counter.record(T0, "/atom.xml", f"192.0.2.{number % 250}", MINIFLUX)
    counter.record(T0, "/atom.xml", "192.0.2.9", FEEDLY)
    counter.record(T0, "/index.html", "192.0.2.9", MINIFLUX)
    assert counter.pending == 251
    assert table_rows(served.store)["feed_readers"] == []
    assert counter.flush() == 251 and counter.pending == 0
    assert len(table_rows(served.store)["feed_readers"]) == 250
    # Readers already written today are not written again.
    counter.record(T0 + timedelta(hours=1), "/atom.xml", "192.0.2.1", MINIFLUX)
    assert counter.flush() == 0


def test_a_failed_flush_keeps_what_was_counted(served: Served, tmp_path: Path) -> None:
    broken = open_store(f"sqlite:///{tmp_path / 'gone.db'}")
    counter = FetchCounter(broken, SECRET)
    counter.record(T0, "/atom.xml", "192.0.2.1", MINIFLUX)
    counter.record(T0, "/atom.xml", "192.0.2.9", FEEDLY)
    with broken.write() as conn:
        conn.execute(sa.text("DROP TABLE feed_readers"))
    with pytest.raises(StoreError, match="feed_readers"):
        counter.flush()
    assert counter.pending == 2
    counter.store = served.store
    assert counter.flush() == 2
    broken.close()


# --- status and the command line --------------------------------------------------------


def test_status_shows_email_and_feed_readers(store: Store, tmp_path: Path,
                                             make_site: SiteFactory) -> None:
    from feedpub.store import Status, add_subscriber

    make_site()
    settings = make_site.settings()
    with store.write() as conn:
        for number in range(3):
            add_subscriber(conn, f"reader{number}@example.com", now=T0, status=Status.ACTIVE)
    import_logs(store, SECRET, [sample_log(tmp_path)])
    document = status_document(site_status(settings, store, T0 + timedelta(days=1, hours=1)))
    assert document["audience"] == {
        "email_subscribers": 3,
        "feed_readers": {
            "services": {"Feedly": 480, "Inoreader": 3},
            "other_readers": 2,
            "day": "2026-12-01",
            "complete": True,
            "total": 485,
            "feeds": [
                {"path": "/atom.xml", "services": {"Feedly": 480}, "other_readers": 2,
                 "total": 482},
                {"path": "/rss.xml", "services": {"Inoreader": 3}, "other_readers": 1,
                 "total": 4},
            ],
        },
        "total": 488,
    }


def test_the_import_command_and_status(make_site: SiteFactory, tmp_path: Path,
                                       cli_env: Callable[..., Any]) -> None:
    root = make_site()
    log = sample_log(tmp_path)
    runner = CliRunner()
    imported = runner.invoke(main, ["--site", str(root), "audience", "import", str(log)])
    assert imported.exit_code == 0, imported.output
    assert imported.output == (
        "13 lines: 9 feed fetches by readers from 2026-12-01 to 2026-12-02 (UTC), "
        "2 by bots and browsers, 1 lines not in the combined format\n"
    )
    quiet = runner.invoke(main, ["--site", str(root), "audience", "import", "--quiet", str(log)])
    assert (quiet.exit_code, quiet.output) == (0, "")
    now = "2026-12-03T08:00:00+00:00"
    table = runner.invoke(main, ["--site", str(root), "status", "--now", now],
                          env={"COLUMNS": "120"})
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[-1] == (
        "audience: 484 = 0 by email + 484 by feed (Feedly 480, Inoreader 3, "
        "1 other readers on 2026-12-02)"
    )
    document = json.loads(runner.invoke(
        main, ["--site", str(root), "status", "--json", "--now", now]).output)
    assert document["audience"]["feed_readers"]["services"] == {"Feedly": 480, "Inoreader": 3}


def test_the_import_command_needs_the_secret_and_a_readable_log(
    make_site: SiteFactory, tmp_path: Path, cli_env: Callable[..., Any], monkeypatch: Any,
) -> None:
    root = make_site()
    broken = tmp_path / "broken.log.gz"
    packed = gzip.compress(sample_log(tmp_path).read_bytes())
    broken.write_bytes(packed[: len(packed) // 2])
    result = CliRunner().invoke(main, ["--site", str(root), "audience", "import", str(broken)])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {broken}: cannot read the log")
    assert result.output.count("\n") == 1
    monkeypatch.delenv("FEEDPUB_SECRET")
    result = CliRunner().invoke(main, ["--site", str(root), "audience", "import",
                                       str(sample_log(tmp_path))])
    assert result.exit_code == 2 and "FEEDPUB_SECRET" in result.output
