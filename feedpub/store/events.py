"""Delivery events (bounces and complaints heard back after sending) and the reports handled.

Each function takes a connection inside a transaction. A report's key is
claimed in ``inbound_reports`` before its events are written, in the same
transaction, so a report is applied once however many times it arrives.
Events keep their reason text until the subscriber is forgotten
(:func:`erase_reasons`); their kind and time stay, so the rates still add up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedpub.store.engine import insert_ignoring_conflicts
from feedpub.store.schema import (
    DeliveryStatus,
    EventKind,
    Status,
    deliveries,
    delivery_events,
    editions,
    inbound_reports,
    subscribers,
)


@dataclass(frozen=True)
class Target:
    """Who (and, when known, which delivery of which edition) an event is about."""

    subscriber_id: int
    delivery_id: int | None = None
    edition_id: int | None = None


@dataclass(frozen=True)
class DeliveryEvent:
    id: int
    at: datetime
    kind: EventKind
    source: str
    email: str
    newsletter: str | None
    edition: str | None
    """The edition's period key (``digest:2025-W10``…)."""
    status_code: str
    reason: str


@dataclass(frozen=True)
class EventRates:
    """Events against messages sent, for one newsletter or one edition."""

    sent: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0

    @property
    def bounce_rate(self) -> float:
        """Hard bounces per message sent (soft ones pass)."""
        return self.hard / self.sent if self.sent else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0


# --- reports ------------------------------------------------------------------------


def claim_report(conn: Connection, key: str, source: str, *, now: datetime, outcome: str) -> bool:
    """Record that report ``key`` is handled; False when it was handled before."""
    inserted = conn.execute(
        insert_ignoring_conflicts(conn, inbound_reports)
        .values(key=key[:255], source=source, received_at=now, outcome=outcome)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(inbound_reports.c.key)
    ).scalar()
    return inserted is not None


def set_outcome(conn: Connection, key: str, outcome: str) -> None:
    conn.execute(inbound_reports.update().where(inbound_reports.c.key == key[:255])
                 .values(outcome=outcome))


def report_handled(conn: Connection, key: str) -> bool:
    return conn.execute(
        sa.select(sa.literal(1)).where(inbound_reports.c.key == key[:255])
    ).first() is not None


# --- finding who an event is about ------------------------------------------------------


def delivery_target(conn: Connection, delivery_id: int) -> Target | None:
    row = conn.execute(
        sa.select(deliveries.c.subscriber_id, deliveries.c.edition_id)
        .where(deliveries.c.id == delivery_id)
    ).first()
    return Target(row.subscriber_id, delivery_id, row.edition_id) if row else None


def target_by_message_id(conn: Connection, message_id: str) -> Target | None:
    """The delivery that sent the message with this ``Message-ID`` (the newest, if resent)."""
    row = conn.execute(
        sa.select(deliveries.c.id, deliveries.c.subscriber_id, deliveries.c.edition_id)
        .where(deliveries.c.message_id == message_id.strip())
        .order_by(deliveries.c.id.desc())
        .limit(1)
    ).first()
    return Target(row.subscriber_id, row.id, row.edition_id) if row else None


def target_by_edition(conn: Connection, subscriber_id: int, edition_key: str | None) -> Target:
    """The subscriber's delivery of the edition ``newsletter/period_key`` if there is one,
    else their latest delivery that was sent, else the subscriber alone."""
    query = (
        sa.select(deliveries.c.id, deliveries.c.edition_id)
        .where(deliveries.c.subscriber_id == subscriber_id)
        .order_by(deliveries.c.sent_at.desc().nulls_last(), deliveries.c.id.desc())
        .limit(1)
    )
    newsletter, _, period = (edition_key or "").partition("/")
    if newsletter and period:
        row = conn.execute(query.join(editions, editions.c.id == deliveries.c.edition_id).where(
            editions.c.newsletter == newsletter, editions.c.period_key == period,
        )).first()
        if row:
            return Target(subscriber_id, row.id, row.edition_id)
    row = conn.execute(query.where(deliveries.c.status == DeliveryStatus.SENT.value)).first()
    return Target(subscriber_id, row.id, row.edition_id) if row else Target(subscriber_id)


def subscriber_status(conn: Connection, subscriber_id: int) -> Status | None:
    value = conn.execute(
        sa.select(subscribers.c.status).where(subscribers.c.id == subscriber_id)
    ).scalar()
    return Status(value) if value is not None else None


# --- events -------------------------------------------------------------------------


def add_event(
    conn: Connection, target: Target, *, kind: EventKind, source: str, at: datetime,
    status_code: str, reason: str, report_key: str,
) -> None:
    conn.execute(delivery_events.insert().values(
        subscriber_id=target.subscriber_id, delivery_id=target.delivery_id,
        edition_id=target.edition_id, at=at, kind=kind.value, source=source,
        status_code=status_code[:16], reason=reason, report_key=report_key[:255],
    ))


def count_events(conn: Connection, subscriber_id: int, kind: EventKind, *,
                 since: datetime) -> int:
    return int(conn.execute(
        sa.select(sa.func.count()).select_from(delivery_events).where(
            delivery_events.c.subscriber_id == subscriber_id,
            delivery_events.c.kind == kind.value,
            delivery_events.c.at >= since,
        )
    ).scalar_one())


def recent_events(
    conn: Connection, *, limit: int = 50, kinds: Iterable[EventKind] = (),
    since: datetime | None = None, subscriber_id: int | None = None,
) -> list[DeliveryEvent]:
    """The newest events first, with the address and the edition they are about."""
    query = (
        sa.select(delivery_events, subscribers.c.email, editions.c.newsletter,
                  editions.c.period_key)
        .join(subscribers, subscribers.c.id == delivery_events.c.subscriber_id)
        .outerjoin(editions, editions.c.id == delivery_events.c.edition_id)
        .order_by(delivery_events.c.at.desc(), delivery_events.c.id.desc())
        .limit(limit)
    )
    wanted = [kind.value for kind in kinds]
    if wanted:
        query = query.where(delivery_events.c.kind.in_(wanted))
    if since is not None:
        query = query.where(delivery_events.c.at >= since)
    if subscriber_id is not None:
        query = query.where(delivery_events.c.subscriber_id == subscriber_id)
    return [
        DeliveryEvent(
            id=row["id"], at=row["at"], kind=EventKind(row["kind"]), source=row["source"],
            email=row["email"], newsletter=row["newsletter"], edition=row["period_key"],
            status_code=row["status_code"], reason=row["reason"],
        )
        for row in conn.execute(query).mappings()
    ]


def erase_reasons(conn: Connection, subscriber_id: int) -> None:
    """Forgetting a subscriber: the reasons (which quote the address) go, the counts stay."""
    conn.execute(
        delivery_events.update()
        .where(delivery_events.c.subscriber_id == subscriber_id)
        .values(reason="", report_key="")
    )


# --- rates ----------------------------------------------------------------------------


def rates_for_editions(conn: Connection, edition_ids: sa.ScalarSelect[int] | list[int]
                       ) -> EventRates:
    """Sent messages and events of these editions."""
    sent = conn.execute(
        sa.select(sa.func.count()).select_from(deliveries).where(
            deliveries.c.edition_id.in_(edition_ids),
            deliveries.c.status == DeliveryStatus.SENT.value,
        )
    ).scalar_one()
    counts: dict[str, int] = dict(conn.execute(
        sa.select(delivery_events.c.kind, sa.func.count())
        .where(delivery_events.c.edition_id.in_(edition_ids))
        .group_by(delivery_events.c.kind)
    ).all())
    return EventRates(
        sent=int(sent), hard=int(counts.get(EventKind.HARD.value, 0)),
        soft=int(counts.get(EventKind.SOFT.value, 0)),
        complaints=int(counts.get(EventKind.COMPLAINT.value, 0)),
    )


def newsletter_rates(conn: Connection, newsletter: str, *, since: datetime) -> EventRates:
    """A newsletter's messages sent since ``since`` and the events heard back about them."""
    recent = (
        sa.select(editions.c.id)
        .where(editions.c.newsletter == newsletter, editions.c.created_at >= since)
        .scalar_subquery()
    )
    return rates_for_editions(conn, recent)
