"""Who reads the feeds: fetches classified by User-Agent and counted per UTC day.

A feed fetch (a GET of a feed answered 2xx or 304) comes from one of four kinds
of client. An aggregator (Feedly, Inoreader, NewsBlur, Feedbin…) fetches once for
all its users and states how many they are in its User-Agent; the count it stated
last is kept, per feed and day, never a sum of fetches. Any other feed reader is
one reader: it is counted once per feed and day by a keyed hash of its address
and User-Agent. Bots and browsers are not readers and are not counted.

Raw addresses are never stored. The hash key is derived from the site secret and
the day (:class:`DailyKeys`), so it changes every day and is stored nowhere: the
hashes of two days cannot be linked, while two ``serve`` processes, a restart,
or an import of the log of a day already counted all produce the same hashes,
which is what makes counting idempotent. Whoever holds the secret as well as the
database could still test a guessed address and User-Agent against a day's
hashes; the secret already signs every subscriber link, so it must stay private
anyway.

``feedpub serve`` counts with a :class:`FetchCounter` (memory, flushed in
batches); ``feedpub audience import`` reads nginx and Apache combined logs with
:func:`import_logs`, through the same :class:`Tally`, so both give the same
numbers.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from feedpub import urls
from feedpub.errors import FeedpubError

if TYPE_CHECKING:
    from feedpub.store.audience import ServiceCount
    from feedpub.store.engine import Store

log = logging.getLogger(__name__)

FEED_FILE_NAMES: frozenset[str] = frozenset(
    urls.path_for(name).rpartition("/")[2] for name in ("atom", "rss", "json")
)
"""A path whose last segment is one of these is a feed (``categories/x/atom.xml`` too)."""
MAX_FEED_PATH = 500
"""The longest feed path kept (the column's width); longer ones are not feeds feedpub wrote."""


# --- User-Agents ---------------------------------------------------------------------------


class Kind(StrEnum):
    SERVICE = "service"
    """An aggregator fetching for its users; ``subscribers`` is how many, when it says."""
    READER = "reader"
    BOT = "bot"
    BROWSER = "browser"


@dataclass(frozen=True, slots=True)
class Agent:
    kind: Kind
    service: str | None = None
    subscribers: int | None = None


KNOWN_SERVICES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE)) for name, pattern in (
        ("Feedly", r"feedly"),
        ("Inoreader", r"inoreader"),
        ("NewsBlur", r"newsblur"),
        ("Feedbin", r"feedbin"),
        ("The Old Reader", r"theoldreader"),
        ("BazQux", r"bazqux"),
        ("Feedspot", r"feedspot"),
        ("FeedHQ", r"feedhq"),
        ("Netvibes", r"netvibes"),
        ("Google Feedfetcher", r"feedfetcher-google"),
        ("Dreamwidth", r"dreamwidth"),
        ("LiveJournal", r"livejournal"),
        ("PlainFeeder", r"plainfeeder"),
        ("Feedsubs", r"feedsubs"),
        ("Overcast", r"overcast"),
    )
)
"""Aggregators by a name in their User-Agent (documented formats: the README, section
Readers). One that states a count but is not listed is named after its product token."""

_COUNT = re.compile(
    r"(\d[\d,]*)\s+(?:subscribers?|readers?)\b|subscriber count:\s*(\d[\d,]*)", re.IGNORECASE
)
_READER_HINT = re.compile(
    r"rss|atom|feed|reader|podcast|miniflux|netnewswire|reeder|elfeed|newsboat|newsbeuter"
    r"|liferea|thunderbird|akregator|vienna",
    re.IGNORECASE,
)
"""A feed reader that says so: checked before the bot patterns ("RSS Bot" is a reader)."""
_BOT = re.compile(
    r"bot\b|bot/|spider|crawl|slurp|archiver|scan|zgrab|monitor|uptime|pingdom|headless"
    r"|preview|facebookexternalhit|embedly|lighthouse|validator"
    r"|^curl/|^wget/|^python-|^python/|httpx|aiohttp|go-http-client|okhttp|^java/"
    r"|apache-httpclient|libwww-perl|^node|axios|undici|guzzle|_http_client|^ruby",
    re.IGNORECASE,
)
_BROWSER = re.compile(
    r"^Mozilla/\d.*(?:Gecko|Chrome/|Safari/|Firefox/|Trident/|MSIE |Edg/|OPR/)"
)
_PRODUCT = re.compile(r"compatible;\s*([^;/)]+)|^([^/;(]+?)(?:\s+v?\d|\s*[/;(]|\s+-\s|$)")


def _service_name(user_agent: str) -> str:
    for name, pattern in KNOWN_SERVICES:
        if pattern.search(user_agent):
            return name
    match = _PRODUCT.search(user_agent)
    found = (match.group(1) or match.group(2)) if match else None
    return (found or user_agent).strip()[:64] or "unknown"


@lru_cache(maxsize=8192)
def classify(user_agent: str) -> Agent:
    """What kind of client ``user_agent`` is; an aggregator's count when it states one."""
    agent = user_agent.strip()
    if not agent or agent == "-":
        return Agent(Kind.BOT)
    count = _COUNT.search(agent)
    if count is not None:
        digits = (count.group(1) or count.group(2)).replace(",", "")
        return Agent(Kind.SERVICE, _service_name(agent), int(digits))
    for name, pattern in KNOWN_SERVICES:
        if pattern.search(agent):
            # An aggregator's other fetchers (a feed check, a favicon) state no count.
            return Agent(Kind.SERVICE, name, None)
    if _READER_HINT.search(agent):
        return Agent(Kind.READER)
    if _BOT.search(agent):
        return Agent(Kind.BOT)
    if _BROWSER.search(agent):
        return Agent(Kind.BROWSER)
    return Agent(Kind.READER)


def feed_path(path: str, extra: frozenset[str] = frozenset()) -> str | None:
    """``path`` (percent-decoded, no query) if it names a feed, else None."""
    if len(path) > MAX_FEED_PATH:
        return None
    if path.rpartition("/")[2] in FEED_FILE_NAMES or path in extra:
        return path
    return None


# --- hashing ---------------------------------------------------------------------------------


class DailyKeys:
    """The key that hashes readers on one UTC day: HMAC(site secret, day). Kept in memory."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode("utf-8")
        self._keys: dict[date, bytes] = {}

    def key(self, day: date) -> bytes:
        found = self._keys.get(day)
        if found is None:
            if len(self._keys) > 64:
                self._keys.clear()
            found = hmac.digest(self._secret, b"feedpub feed readers " + day.isoformat().encode(),
                                "sha256")
            self._keys[day] = found
        return found

    def reader(self, day: date, address: str, user_agent: str) -> str:
        """32 hex digits naming one address and User-Agent on ``day`` only."""
        data = f"{address}\n{user_agent}".encode("utf-8", "surrogateescape")
        return hashlib.blake2b(data, key=self.key(day), digest_size=16).hexdigest()


# --- counting --------------------------------------------------------------------------------


ReaderRow = tuple[date, str, str]
"""(UTC day, feed path, reader hash)."""


@dataclass
class Tally:
    """Fetches not yet written: distinct readers, and each aggregator's latest count."""

    keys: DailyKeys
    readers: set[ReaderRow] = field(default_factory=set)
    services: dict[tuple[date, str, str], tuple[datetime, int]] = field(default_factory=dict)

    def add(self, at: datetime, feed: str, address: str, user_agent: str) -> bool:
        """Count one fetch of ``feed`` at ``at`` (aware); False when it is no reader's."""
        agent = classify(user_agent)
        day = at.astimezone(UTC).date()
        if agent.kind is Kind.READER:
            self.readers.add((day, feed, self.keys.reader(day, address, user_agent)))
            return True
        if agent.kind is Kind.SERVICE and agent.service and agent.subscribers is not None:
            self.add_count(day, feed, agent.service, at, agent.subscribers)
            return True
        return False

    def add_count(self, day: date, feed: str, service: str, at: datetime,
                  subscribers: int) -> None:
        key = (day, feed, service)
        stated = (at, subscribers)
        known = self.services.get(key)
        if known is None or stated > known:
            self.services[key] = stated

    def __len__(self) -> int:
        return len(self.readers) + len(self.services)

    def drain(self) -> tuple[list[ReaderRow], list[ServiceCount]]:
        """Everything counted so far, as rows for the store; the tally is empty after."""
        from feedpub.store.audience import ServiceCount

        readers = list(self.readers)
        services = [ServiceCount(day, feed, service, subscribers, at)
                    for (day, feed, service), (at, subscribers) in self.services.items()]
        self.readers = set()
        self.services = {}
        return readers, services


def write_tally(store: Store, readers: Sequence[ReaderRow],
                services: Sequence[ServiceCount]) -> None:
    """One transaction; writing the same rows again changes nothing."""
    from feedpub.store.audience import add_readers, add_service_counts

    if not readers and not services:
        return
    with store.write() as conn:
        add_readers(conn, readers)
        add_service_counts(conn, services)


Clock = Callable[[], datetime]


class FetchCounter:
    """Counts the feed fetches ``feedpub serve`` answers, in memory; :meth:`flush` writes.

    :meth:`record` costs a cached classification, a hash and a set insertion under
    a lock: no I/O. The app flushes every ``FLUSH_SECONDS`` (sooner past
    ``FLUSH_AT`` pending rows) and at shutdown. Rows a failed flush could not write
    are kept for the next one, up to ``MAX_PENDING``; beyond that fetches are dropped
    (and logged) rather than memory growing without bound.
    """

    FLUSH_SECONDS = 30.0
    FLUSH_AT = 20_000
    MAX_PENDING = 500_000

    def __init__(self, store: Store, secret: str) -> None:
        self.store = store
        self._tally = Tally(DailyKeys(secret))
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._written: set[ReaderRow] = set()
        """Reader rows already in the store, of the last two days: not sent again."""
        self.dropped = 0

    def record(self, at: datetime, path: str, address: str, user_agent: str) -> None:
        feed = feed_path(path)
        if feed is None:
            return
        with self._lock:
            if len(self._tally) >= self.MAX_PENDING:
                self.dropped += 1
                return
            self._tally.add(at, feed, address, user_agent)

    @property
    def pending(self) -> int:
        return len(self._tally)

    @property
    def due(self) -> bool:
        return len(self._tally) >= self.FLUSH_AT

    def flush(self) -> int:
        """Write what was counted; returns the rows written. Raises StoreError and
        SQLAlchemy errors after putting the rows back."""
        with self._flush_lock:
            with self._lock:
                readers, services = self._tally.drain()
            fresh = [row for row in readers if row not in self._written]
            try:
                write_tally(self.store, fresh, services)
            except Exception:
                with self._lock:
                    self._tally.readers.update(fresh)
                    for row in services:
                        self._tally.add_count(row.day, row.feed, row.service, row.seen_at,
                                              row.subscribers)
                raise
            if fresh:
                newest = max(row[0] for row in fresh)
                self._written = {row for row in self._written
                                 if row[0] >= newest - timedelta(days=1)}
                self._written.update(fresh)
            return len(fresh) + len(services)


# --- access logs -------------------------------------------------------------------------------


class LogError(FeedpubError):
    """An access log that cannot be read at all."""


_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_COMBINED = re.compile(
    r'(\S+) \S+ .*?\[([^\]]+)\] ' + _QUOTED + r' (\d{3}) \S+ ' + _QUOTED + r' ' + _QUOTED
)
"""``%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"`` (nginx's ``combined``)."""
_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})|\\(.)")
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def _unescape(text: str) -> str:
    """nginx writes ``"`` as ``\\x22``, Apache as ``\\"``; both write other bytes as ``\\xHH``."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else m[2], text)


@lru_cache(maxsize=256)
def _log_day_start(day: str, offset: str) -> float:
    """Seconds since the epoch at the start of ``10/Oct/2026`` in the zone ``-0700``."""
    minutes = int(offset[1:3]) * 60 + int(offset[3:5])
    zone = timezone(timedelta(minutes=-minutes if offset[0] == "-" else minutes))
    return datetime(int(day[7:11]), _MONTHS[day[3:6]], int(day[0:2]), tzinfo=zone).timestamp()


def _log_time(text: str) -> datetime:
    """``10/Oct/2026:13:55:36 -0700`` as an aware UTC datetime (a log has few days and
    zones, and a line a second or more: the day is parsed once, the time added)."""
    if len(text) != 26 or text[21] not in "+-":
        raise ValueError(text)
    seconds = int(text[12:14]) * 3600 + int(text[15:17]) * 60 + int(text[18:20])
    return datetime.fromtimestamp(_log_day_start(text[:11], text[21:]) + seconds, UTC)


@dataclass(frozen=True, slots=True)
class Fetch:
    at: datetime
    path: str
    address: str
    user_agent: str


def parse_log_line(line: str, extra_feeds: frozenset[str] = frozenset()) -> Fetch | None:
    """The feed fetch a combined-log line records, or None (another file, an error,
    not a GET). Raises ValueError for a line that is not in the combined format."""
    match = _COMBINED.match(line)
    if match is None:
        raise ValueError("not a combined log line")
    address, moment, request, status, _referer, agent = match.groups()
    code = int(status)
    if not (200 <= code < 300 or code == 304):
        return None
    method, _, rest = _unescape(request).partition(" ")
    if method != "GET":
        return None
    target = rest.rpartition(" ")[0] if rest.endswith(("HTTP/1.0", "HTTP/1.1", "HTTP/2.0",
                                                       "HTTP/2", "HTTP/3")) else rest
    if target.startswith(("http://", "https://")):
        target = urlsplit(target).path or "/"
    feed = feed_path(unquote(target.partition("?")[0], errors="surrogateescape"), extra_feeds)
    if feed is None:
        return None
    try:
        at = _log_time(moment)
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"unreadable time {moment!r}") from None
    return Fetch(at, feed, address, _unescape(agent))


def _open_text(path: Path) -> io.TextIOWrapper:
    """A log as text, gunzipped when it starts with gzip's magic number. Latin-1, as
    HTTP header bytes are decoded by the server."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(path, "rb"), encoding="latin-1", newline="\n")
    return io.TextIOWrapper(path.open("rb"), encoding="latin-1", newline="\n")


@dataclass
class ImportReport:
    lines: int = 0
    fetches: int = 0
    """Feed fetches by readers and aggregators (bots and browsers left out)."""
    ignored: int = 0
    """Feed fetches by bots and browsers."""
    unreadable: int = 0
    first_day: date | None = None
    last_day: date | None = None

    def saw(self, day: date) -> None:
        if self.first_day is None or day < self.first_day:
            self.first_day = day
        if self.last_day is None or day > self.last_day:
            self.last_day = day


def import_logs(store: Store, secret: str, paths: Iterable[Path], *,
                extra_feeds: Iterable[str] = (), batch: int = 200_000,
                progress: Callable[[int], None] | None = None) -> ImportReport:
    """Count the feed fetches in nginx or Apache combined logs (plain or gzip).

    Writes every ``batch`` counted rows, each batch in one transaction; importing
    a log again, or a log that overlaps one imported before, changes nothing.
    ``extra_feeds`` are more paths (as requested, e.g. ``/index.xml``) to count as
    feeds. Raises LogError for a file that cannot be read.
    """
    extra = frozenset(extra_feeds)
    # Most lines of a site's log are pages and images: one search rules them out.
    candidate = re.compile("|".join(re.escape(n) for n in sorted(FEED_FILE_NAMES | extra)))
    tally = Tally(DailyKeys(secret))
    report = ImportReport()
    for path in paths:
        try:
            for line in _lines(path):
                report.lines += 1
                if progress is not None and report.lines % 100_000 == 0:
                    progress(report.lines)
                if candidate.search(line) is None:
                    continue
                try:
                    fetch = parse_log_line(line, extra)
                except ValueError:
                    report.unreadable += 1
                    continue
                if fetch is None:
                    continue
                report.saw(fetch.at.astimezone(UTC).date())
                if tally.add(fetch.at, fetch.path, fetch.address, fetch.user_agent):
                    report.fetches += 1
                else:
                    report.ignored += 1
                if len(tally) >= batch:
                    write_tally(store, *tally.drain())
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise LogError(f"cannot read the log: {exc}", path=path) from None
    write_tally(store, *tally.drain())
    return report


def _lines(path: Path) -> Iterator[str]:
    with _open_text(path) as text:
        yield from text
