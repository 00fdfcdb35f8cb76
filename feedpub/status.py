"""The operator's view: per newsletter, when it runs next, how its last edition went,
who subscribes, and what waits for a retry (``feedpub status``).

:func:`site_status` reads the store in one snapshot; :func:`status_document`
turns the result into the stable JSON document that monitoring reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedpub.config import NewsletterConfig, Settings
from feedpub.schedules import utc_iso
from feedpub.slots import next_slot
from feedpub.store.audience import FeedAudience, feed_audience
from feedpub.store.editions import DIGEST_PREFIX, EditionStatus
from feedpub.store.engine import Store
from feedpub.store.events import EventRates
from feedpub.store.schema import (
    DeliveryStatus,
    EventKind,
    Mode,
    Status,
    announced_entries,
    deliveries,
    delivery_events,
    editions,
    subscribers,
    subscriptions,
)
from feedpub.store.subscribers import count_by_status

STATUS_VERSION = 1
"""Bumped when a key of :func:`status_document` changes meaning or goes away."""


@dataclass(frozen=True)
class DeliveryCounts:
    queued: int = 0
    sending: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0

    @classmethod
    def from_mapping(cls, counts: Mapping[str, int]) -> DeliveryCounts:
        return cls(**{status.value: counts.get(status.value, 0) for status in DeliveryStatus})

    @property
    def total(self) -> int:
        return self.queued + self.sending + self.sent + self.retrying + self.failed + self.skipped


@dataclass(frozen=True)
class SubscriberCounts:
    pending: int = 0
    active: int = 0
    unsubscribed: int = 0
    bounced: int = 0

    @classmethod
    def from_mapping(cls, counts: Mapping[str, int]) -> SubscriberCounts:
        return cls(**{status.value: counts.get(status.value, 0) for status in Status})


@dataclass(frozen=True)
class Retries:
    """Deliveries that failed for a reason that may pass, waiting for their next attempt."""

    count: int = 0
    next_attempt_at: datetime | None = None


RATE_DAYS = 30
COMPLAINT_WARNING = 0.001
"""Gmail's bulk-sender guidance: keep spam complaints under 0.1% ..."""
COMPLAINT_LIMIT = 0.003
"""... and never reach 0.3%."""
BOUNCE_WARNING = 0.02
"""Hard bounces above 2% of messages sent: the list holds dead addresses."""


@dataclass(frozen=True)
class HeardBack:
    """Bounces and complaints against messages sent, flagged at the mailbox providers' limits."""

    rates: EventRates = field(default_factory=EventRates)

    @property
    def flags(self) -> tuple[str, ...]:
        rates, found = self.rates, []
        if rates.complaint_rate >= COMPLAINT_LIMIT:
            found.append("complaints-over-0.3%")
        elif rates.complaint_rate >= COMPLAINT_WARNING:
            found.append("complaints-over-0.1%")
        if rates.bounce_rate >= BOUNCE_WARNING:
            found.append("bounces-over-2%")
        return tuple(found)


@dataclass(frozen=True)
class LastEdition:
    id: int
    period_key: str
    kind: str
    """``digest`` or ``post`` (instant); ``baseline``, ``empty`` or ``missed`` for a slot
    that mailed nothing."""
    created_at: datetime
    subject: str
    entries: int
    deliveries: DeliveryCounts
    """Of the edition and of its category variants together."""
    heard_back: HeardBack = field(default_factory=lambda: HeardBack())
    """Bounces and complaints about this edition (and its variants)."""


@dataclass(frozen=True)
class NewsletterStatus:
    name: str
    title: str
    schedule: str
    next_run: datetime | None
    """In ``site.timezone``; None when the schedule never fires again."""
    last_edition: LastEdition | None
    """The newest edition of any kind."""
    last_digest: LastEdition | None
    """The newest scheduled slot: ``digest``, ``empty`` or ``missed``."""
    subscribers: SubscriberCounts
    """Subscribers of this newsletter, by their status."""
    subscriptions: Mapping[str, int]
    """Active subscribers of this newsletter by mode: ``digest`` and ``instant``."""
    retries: Retries
    heard_back: HeardBack = field(default_factory=lambda: HeardBack())
    """Bounces and complaints about what this newsletter sent in the last RATE_DAYS days."""


@dataclass(frozen=True)
class Audience:
    """Everyone the site reaches: active email subscribers and feed readers."""

    email: int
    feeds: FeedAudience

    @property
    def total(self) -> int:
        return self.email + self.feeds.total


NO_FEED_READERS = FeedAudience(services={}, others=0, day=None, complete=False, feeds=())


@dataclass(frozen=True)
class SiteStatus:
    generated_at: datetime
    timezone: str
    database: str | None
    """The store's URL without its password; None when there is no database yet."""
    subscribers: SubscriberCounts
    queue: DeliveryCounts
    """Every delivery of every edition, by status."""
    retries: Retries
    newsletters: tuple[NewsletterStatus, ...]
    audience: Audience = Audience(0, NO_FEED_READERS)


def site_status(settings: Settings, store: Store | None, now: datetime) -> SiteStatus:
    """The state of every newsletter at ``now``; ``store`` None means no database yet."""
    if store is None:
        return SiteStatus(
            generated_at=now, timezone=settings.site.timezone, database=None,
            subscribers=SubscriberCounts(), queue=DeliveryCounts(), retries=Retries(),
            newsletters=tuple(
                _newsletter(settings, n, now, None, None, SubscriberCounts(), {}, Retries())
                for n in settings.newsletters
            ),
        )
    with store.read() as conn:
        # Every count of deliveries below comes from this one pass over them (an index
        # holds edition and status), not one pass per figure: a million rows each.
        by_edition = _delivery_counts_by_edition(conn)
        by_newsletter = []
        for n in settings.newsletters:
            # Each edition's counts once: the last edition is most often the last digest.
            seen: dict[int, LastEdition] = {}
            people, modes = _subscribers_of(conn, n.name)
            since = now - timedelta(days=RATE_DAYS)
            by_newsletter.append(_newsletter(
                settings, n, now, _last_edition(conn, n.name, by_edition, seen=seen),
                _last_edition(conn, n.name, by_edition, digest_only=True, seen=seen),
                people, modes, _retries(conn, n.name),
                HeardBack(_rates(conn, by_edition, sa.select(editions.c.id).where(
                    editions.c.newsletter == n.name, editions.c.created_at >= since)).rates),
            ))
        totals = count_by_status(conn)
        queue: dict[str, int] = {}
        for counts in by_edition.values():
            for status, count in counts.items():
                queue[status] = queue.get(status, 0) + count
        retries = _retries(conn, None)
        readers = feed_audience(conn, now)
    return SiteStatus(
        generated_at=now,
        timezone=settings.site.timezone,
        database=store.url,
        subscribers=SubscriberCounts.from_mapping({s.value: c for s, c in totals.items()}),
        queue=DeliveryCounts.from_mapping(queue),
        retries=retries,
        newsletters=tuple(by_newsletter),
        audience=Audience(totals.get(Status.ACTIVE, 0), readers),
    )


def _newsletter(
    settings: Settings,
    newsletter: NewsletterConfig,
    now: datetime,
    last: LastEdition | None,
    last_digest: LastEdition | None,
    people: SubscriberCounts,
    modes: Mapping[str, int],
    retries: Retries,
    heard_back: HeardBack | None = None,
) -> NewsletterStatus:
    return NewsletterStatus(
        name=newsletter.name,
        title=newsletter.title,
        schedule=newsletter.schedule,
        next_run=next_slot(settings, newsletter, now),
        last_edition=last,
        last_digest=last_digest,
        subscribers=people,
        subscriptions={mode.value: modes.get(mode.value, 0) for mode in Mode},
        retries=retries,
        heard_back=heard_back or HeardBack(),
    )


# --- queries ----------------------------------------------------------------------------


def _is_variant(period_key: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """A category variant of a digest: ``digest:<slot>/<hash>`` (an instant key may hold
    a ``/`` of its entry id; a digest key has none of its own)."""
    return sa.and_(period_key.startswith(DIGEST_PREFIX), period_key.contains("/"))


def _last_edition(
    conn: Connection, newsletter: str, by_edition: Mapping[int, Mapping[str, int]], *,
    digest_only: bool = False,
    seen: dict[int, LastEdition] | None = None,
) -> LastEdition | None:
    """The newest edition (of any kind, or the newest slot); ``seen`` holds the editions
    counted already, so that one edition's deliveries are counted once."""
    query = (
        sa.select(editions.c.id, editions.c.period_key, editions.c.kind, editions.c.status,
                  editions.c.created_at, editions.c.subject, editions.c.entry_ids)
        .where(editions.c.newsletter == newsletter, sa.not_(_is_variant(editions.c.period_key)))
        .order_by(editions.c.created_at.desc(), editions.c.id.desc())
        .limit(1)
    )
    if digest_only:
        query = query.where(editions.c.period_key.startswith(DIGEST_PREFIX))
    row = conn.execute(query).first()
    if row is None:
        return None
    if seen is not None and row.id in seen:
        return seen[row.id]
    status = EditionStatus(row.status)
    if status == EditionStatus.READY:
        kind = "digest" if row.kind == Mode.DIGEST.value else "post"
    else:
        kind = status.value
    if status == EditionStatus.BASELINE:
        entries = conn.execute(
            sa.select(sa.func.count()).select_from(announced_entries)
            .where(announced_entries.c.edition_id == row.id)
        ).scalar_one()
    else:
        entries = len(_json_list(row.entry_ids))
    family = sa.select(editions.c.id).where(
        editions.c.newsletter == newsletter,
        sa.or_(editions.c.id == row.id,
               editions.c.period_key.startswith(row.period_key + "/", autoescape=True)),
    )
    rates = _rates(conn, by_edition, family)
    counts: dict[str, int] = {}
    no_counts: Mapping[str, int] = {}
    for edition_id in rates.editions:
        for delivery_status, count in by_edition.get(edition_id, no_counts).items():
            counts[delivery_status] = counts.get(delivery_status, 0) + count
    edition = LastEdition(
        id=row.id, period_key=row.period_key, kind=kind, created_at=row.created_at,
        subject=row.subject, entries=entries, deliveries=DeliveryCounts.from_mapping(counts),
        heard_back=HeardBack(rates.rates),
    )
    if seen is not None:
        seen[row.id] = edition
    return edition


def _json_list(text: str) -> list[Any]:
    value = json.loads(text or "[]")
    return value if isinstance(value, list) else []


def _subscribers_of(conn: Connection, newsletter: str) -> tuple[SubscriberCounts, dict[str, int]]:
    """The newsletter's subscribers by status, and its active ones by mode: one pass over
    its subscriptions (a million rows at most once)."""
    rows = conn.execute(
        sa.select(subscribers.c.status, subscriptions.c.mode, sa.func.count())
        .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
        .where(subscriptions.c.newsletter == newsletter)
        .group_by(subscribers.c.status, subscriptions.c.mode)
    ).all()
    by_status: dict[str, int] = {}
    modes: dict[str, int] = {}
    for status, mode, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        if status == Status.ACTIVE.value:
            modes[mode] = modes.get(mode, 0) + count
    return SubscriberCounts.from_mapping(by_status), modes


def _delivery_counts_by_edition(conn: Connection) -> dict[int, dict[str, int]]:
    """Every edition's deliveries by status."""
    counts: dict[int, dict[str, int]] = {}
    for edition_id, status, count in conn.execute(
        sa.select(deliveries.c.edition_id, deliveries.c.status, sa.func.count())
        .group_by(deliveries.c.edition_id, deliveries.c.status)
    ):
        counts.setdefault(edition_id, {})[status] = count
    return counts


@dataclass(frozen=True)
class _EditionRates:
    editions: tuple[int, ...]
    rates: EventRates


def _rates(conn: Connection, by_edition: Mapping[int, Mapping[str, int]],
           chosen: sa.Select[Any]) -> _EditionRates:
    """Messages sent (from ``by_edition``) and events heard back of the ``chosen`` editions."""
    ids: tuple[int, ...] = tuple(int(i) for i in conn.execute(chosen).scalars())
    no_counts: Mapping[str, int] = {}
    sent = sum(by_edition.get(i, no_counts).get(DeliveryStatus.SENT.value, 0) for i in ids)
    kinds: dict[str, int] = {}
    if ids:
        kinds = dict(conn.execute(
            sa.select(delivery_events.c.kind, sa.func.count())
            .where(delivery_events.c.edition_id.in_(ids))
            .group_by(delivery_events.c.kind)
        ).all())
    return _EditionRates(ids, EventRates(
        sent=sent, hard=int(kinds.get(EventKind.HARD.value, 0)),
        soft=int(kinds.get(EventKind.SOFT.value, 0)),
        complaints=int(kinds.get(EventKind.COMPLAINT.value, 0)),
    ))


def _retries(conn: Connection, newsletter: str | None) -> Retries:
    query = sa.select(sa.func.count(), sa.func.min(deliveries.c.next_attempt_at)).where(
        deliveries.c.status == DeliveryStatus.RETRYING.value
    )
    if newsletter is not None:
        query = query.join(editions, editions.c.id == deliveries.c.edition_id).where(
            editions.c.newsletter == newsletter
        )
    count, next_attempt = conn.execute(query).one()
    return Retries(count, next_attempt)


# --- the JSON document -----------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else utc_iso(moment)


def _counts(counts: DeliveryCounts | SubscriberCounts) -> dict[str, int]:
    return asdict(counts)


def _retries_document(retries: Retries) -> dict[str, Any]:
    return {"count": retries.count, "next_attempt_at": _iso(retries.next_attempt_at)}


def status_document(status: SiteStatus) -> dict[str, Any]:
    """The status as JSON-ready data; its shape is in ``feedpub status --help``."""
    return {
        "version": STATUS_VERSION,
        "generated_at": _iso(status.generated_at),
        "timezone": status.timezone,
        "database": status.database,
        "subscribers": _counts(status.subscribers),
        "deliveries": _counts(status.queue),
        "retries": _retries_document(status.retries),
        "newsletters": [_newsletter_document(n) for n in status.newsletters],
        "audience": _audience_document(status.audience),
    }


def _audience_document(audience: Audience) -> dict[str, Any]:
    feeds = audience.feeds
    return {
        "email_subscribers": audience.email,
        "feed_readers": {
            "services": dict(feeds.services),
            "other_readers": feeds.others,
            "day": None if feeds.day is None else feeds.day.isoformat(),
            "complete": feeds.complete,
            "total": feeds.total,
            "feeds": [
                {"path": f.feed, "services": dict(f.services), "other_readers": f.others,
                 "total": f.total}
                for f in feeds.feeds
            ],
        },
        "total": audience.total,
    }


def _edition_document(edition: LastEdition | None) -> dict[str, Any] | None:
    if edition is None:
        return None
    return {
        "id": edition.id,
        "period_key": edition.period_key,
        "kind": edition.kind,
        "created_at": _iso(edition.created_at),
        "subject": edition.subject,
        "entries": edition.entries,
        "deliveries": _counts(edition.deliveries),
        "heard_back": _heard_back_document(edition.heard_back),
    }


def _heard_back_document(heard: HeardBack) -> dict[str, Any]:
    rates = heard.rates
    return {
        "sent": rates.sent, "hard_bounces": rates.hard, "soft_bounces": rates.soft,
        "complaints": rates.complaints, "bounce_rate": round(rates.bounce_rate, 6),
        "complaint_rate": round(rates.complaint_rate, 6), "flags": list(heard.flags),
    }


def _newsletter_document(newsletter: NewsletterStatus) -> dict[str, Any]:
    return {
        "name": newsletter.name,
        "title": newsletter.title,
        "schedule": newsletter.schedule,
        "next_run": None if newsletter.next_run is None else {
            "local": newsletter.next_run.isoformat(timespec="seconds"),
            "utc": _iso(newsletter.next_run),
        },
        "last_edition": _edition_document(newsletter.last_edition),
        "last_digest": _edition_document(newsletter.last_digest),
        "subscribers": _counts(newsletter.subscribers),
        "subscriptions": dict(newsletter.subscriptions),
        "retries": _retries_document(newsletter.retries),
        "heard_back": _heard_back_document(newsletter.heard_back),
    }
