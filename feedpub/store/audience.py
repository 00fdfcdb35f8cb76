"""Feed readers in the store: written idempotently, read back as an audience.

Readers are rows keyed by (day, feed, reader hash): a row inserted twice is one
row. An aggregator's count is kept per (day, feed, service) and replaced only by
a count stated later (ties: the larger), so the result does not depend on the
order in which fetches arrive or logs are imported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedpub.store.engine import insert_ignoring_conflicts
from feedpub.store.schema import feed_readers, feed_service_counts

T = TypeVar("T")
CHUNK = 5_000
SERVICE_WINDOW_DAYS = 30
"""An aggregator that has not fetched a feed for this long no longer counts for it."""


@dataclass(frozen=True, slots=True)
class ServiceCount:
    day: date
    feed: str
    service: str
    subscribers: int
    seen_at: datetime


def _chunks(rows: Sequence[T]) -> Iterator[list[T]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, CHUNK)):
        yield chunk


def add_readers(conn: Connection, rows: Sequence[tuple[date, str, str]]) -> None:
    """(day, feed, reader hash) rows; ones already stored are left as they are."""
    if not rows:
        return
    insert = insert_ignoring_conflicts(conn, feed_readers).on_conflict_do_nothing(
        index_elements=["day", "feed", "reader"]
    )
    for chunk in _chunks(rows):
        conn.execute(insert, [{"day": d, "feed": f, "reader": r} for d, f, r in chunk])


def add_service_counts(conn: Connection, rows: Sequence[ServiceCount]) -> None:
    """Each count replaces the stored one of its (day, feed, service) if stated later.

    ``rows`` must hold each (day, feed, service) once (PostgreSQL refuses to update a
    row twice in one statement); :class:`feedpub.audience.Tally` keeps only the latest.
    """
    if not rows:
        return
    insert = insert_ignoring_conflicts(conn, feed_service_counts)
    table = feed_service_counts
    upsert = insert.on_conflict_do_update(
        index_elements=["day", "feed", "service"],
        set_={"subscribers": insert.excluded.subscribers, "seen_at": insert.excluded.seen_at},
        where=sa.tuple_(insert.excluded.seen_at, insert.excluded.subscribers)
        > sa.tuple_(table.c.seen_at, table.c.subscribers),
    )
    for chunk in _chunks(rows):
        conn.execute(upsert, [
            {"day": r.day, "feed": r.feed, "service": r.service, "subscribers": r.subscribers,
             "seen_at": r.seen_at}
            for r in chunk
        ])


@dataclass(frozen=True)
class FeedReaders:
    """The readers of one feed."""

    feed: str
    services: dict[str, int]
    """Each aggregator's latest stated count."""
    others: int
    """Distinct other readers on the audience's ``day``."""

    @property
    def total(self) -> int:
        return sum(self.services.values()) + self.others


@dataclass(frozen=True)
class FeedAudience:
    """Who reads the feeds, as of a moment."""

    services: dict[str, int]
    """Per aggregator, the latest count it stated for each feed within
    ``SERVICE_WINDOW_DAYS``, added up over the feeds; largest first."""
    others: int
    """Distinct other readers (of any feed) on ``day``."""
    day: date | None
    """The UTC day whose other readers are counted: the last complete day with any,
    else today (then ``complete`` is False); None when none were counted yet."""
    complete: bool
    feeds: tuple[FeedReaders, ...]

    @property
    def total(self) -> int:
        return sum(self.services.values()) + self.others


def feed_audience(conn: Connection, now: datetime) -> FeedAudience:
    today = now.astimezone(UTC).date()
    latest: dict[tuple[str, str], tuple[date, datetime, int]] = {}
    rows = conn.execute(
        sa.select(feed_service_counts.c.feed, feed_service_counts.c.service,
                  feed_service_counts.c.day, feed_service_counts.c.seen_at,
                  feed_service_counts.c.subscribers)
        .where(feed_service_counts.c.day > today - timedelta(days=SERVICE_WINDOW_DAYS),
               feed_service_counts.c.day <= today)
    ).all()
    for feed, service, day, seen_at, subscribers in rows:
        stated = (day, seen_at, subscribers)
        known = latest.get((feed, service))
        if known is None or stated > known:
            latest[(feed, service)] = stated
    by_feed: dict[str, dict[str, int]] = {}
    for (feed, service), (_, _, subscribers) in latest.items():
        by_feed.setdefault(feed, {})[service] = subscribers

    day, complete = _readers_day(conn, today)
    others_by_feed: dict[str, int] = {}
    others = 0
    if day is not None:
        others_by_feed = dict(conn.execute(
            sa.select(feed_readers.c.feed, sa.func.count())
            .where(feed_readers.c.day == day).group_by(feed_readers.c.feed)
        ).all())
        others = conn.execute(
            sa.select(sa.func.count(sa.distinct(feed_readers.c.reader)))
            .where(feed_readers.c.day == day)
        ).scalar_one()
    totals: dict[str, int] = {}
    for services in by_feed.values():
        for service, subscribers in services.items():
            totals[service] = totals.get(service, 0) + subscribers
    feeds = tuple(
        FeedReaders(feed, _largest_first(by_feed.get(feed, {})), others_by_feed.get(feed, 0))
        for feed in sorted(set(by_feed) | set(others_by_feed))
    )
    return FeedAudience(_largest_first(totals), others, day, complete, feeds)


def _readers_day(conn: Connection, today: date) -> tuple[date | None, bool]:
    before = conn.execute(
        sa.select(sa.func.max(feed_readers.c.day)).where(feed_readers.c.day < today)
    ).scalar_one()
    if before is not None:
        return before, True
    counted_today = conn.execute(
        sa.select(feed_readers.c.day).where(feed_readers.c.day == today).limit(1)
    ).first()
    return (today, False) if counted_today is not None else (None, False)


def _largest_first(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0].casefold())))
