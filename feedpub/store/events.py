"""Delivery events (bounces and complaints heard back after sending) and the reports handled.

Each function takes a connection inside a transaction. A report's key is
claimed in ``inbound_reports`` before its events are written, in the same
transaction, so a report is applied once however many times it arrives.
The plural functions do the same for a batch of reports (``bounces fetch``)
with one statement each for the whole batch, whatever its size.
Events keep their reason text until the subscriber is forgotten
(:func:`erase_reasons`); their kind and time stay, so the rates still add up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedpub.store.engine import bulk_insert, insert_ignoring_conflicts
from feedpub.store.schema import (
    DeliveryStatus,
    EventKind,
    Status,
    deliveries,
    delivery_events,
    editions,
    inbound_reports,
    subscriber_events,
    subscribers,
    suppressed_addresses,
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


@dataclass(frozen=True)
class Claim:
    key: str
    source: str
    outcome: str


def claim_reports(conn: Connection, claims: Sequence[Claim], *, now: datetime) -> set[str]:
    """Record that these reports are handled, in one statement; returns the keys (cut to
    255 characters) that were new. A key handled before, or by a transaction that
    overlaps this one, is not returned (PostgreSQL waits for that one to end).

    The rows go in key order, so two overlapping batches wait for each other instead of
    deadlocking."""
    rows = {c.key[:255]: c for c in claims}
    if not rows:
        return set()
    # One statement with parameter sets, not .values([...]): SQLAlchemy turns it into
    # multi-row INSERTs itself ("insertmanyvalues") without compiling one per batch.
    return set(conn.execute(
        insert_ignoring_conflicts(conn, inbound_reports)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(inbound_reports.c.key),
        [{"key": key, "source": c.source, "received_at": now, "outcome": c.outcome}
         for key, c in sorted(rows.items())],
    ).scalars())


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


def targets_of_deliveries(conn: Connection, delivery_ids: Iterable[int]) -> dict[int, Target]:
    """:func:`delivery_target` for many deliveries at once; unknown ids are left out."""
    wanted = sorted(set(delivery_ids))
    if not wanted:
        return {}
    return {
        row.id: Target(row.subscriber_id, row.id, row.edition_id)
        for row in conn.execute(
            sa.select(deliveries.c.id, deliveries.c.subscriber_id, deliveries.c.edition_id)
            .where(deliveries.c.id.in_(wanted))
        )
    }


def targets_by_message_ids(conn: Connection, message_ids: Iterable[str]) -> dict[str, Target]:
    """:func:`target_by_message_id` for many ``Message-ID`` s (stripped) at once."""
    wanted = sorted({m.strip() for m in message_ids if m.strip()})
    if not wanted:
        return {}
    found: dict[str, Target] = {}
    for row in conn.execute(
        sa.select(deliveries.c.id, deliveries.c.subscriber_id, deliveries.c.edition_id,
                  deliveries.c.message_id)
        .where(deliveries.c.message_id.in_(wanted))
        .order_by(deliveries.c.id)
    ):
        found[row.message_id] = Target(row.subscriber_id, row.id, row.edition_id)  # newest wins
    return found


def subscriber_ids_by_key(conn: Connection, email_keys: Iterable[str]) -> dict[str, int]:
    """The subscribers with these address keys (lower-cased addresses), by key."""
    wanted = sorted(set(email_keys))
    if not wanted:
        return {}
    return dict(conn.execute(
        sa.select(subscribers.c.email_key, subscribers.c.id)
        .where(subscribers.c.email_key.in_(wanted))
    ).all())


def targets_by_editions(
    conn: Connection, wanted: Iterable[tuple[int, str | None]]
) -> dict[tuple[int, str | None], Target]:
    """:func:`target_by_edition` for many (subscriber, edition key) pairs, in two queries."""
    pairs = set(wanted)
    found: dict[tuple[int, str | None], Target] = {}
    by_edition: dict[tuple[int, str, str], tuple[int, str | None]] = {}
    for subscriber_id, edition_key in pairs:
        newsletter, _, period = (edition_key or "").partition("/")
        if newsletter and period:
            by_edition[(subscriber_id, newsletter, period)] = (subscriber_id, edition_key)
    if by_edition:
        rows = conn.execute(
            sa.select(deliveries.c.id, deliveries.c.subscriber_id, deliveries.c.edition_id,
                      editions.c.newsletter, editions.c.period_key)
            .join(editions, editions.c.id == deliveries.c.edition_id)
            .where(deliveries.c.subscriber_id.in_(sorted({k[0] for k in by_edition})),
                   editions.c.newsletter.in_(sorted({k[1] for k in by_edition})),
                   editions.c.period_key.in_(sorted({k[2] for k in by_edition})))
            # One delivery per subscriber and edition: the order only matters if an
            # edition key were ever reused; then the newest, as target_by_edition.
            .order_by(deliveries.c.sent_at.asc().nulls_first(), deliveries.c.id.asc())
        )
        for row in rows:
            pair = by_edition.get((row.subscriber_id, row.newsletter, row.period_key))
            if pair is not None:
                found[pair] = Target(row.subscriber_id, row.id, row.edition_id)
    rest = sorted({pair[0] for pair in pairs if pair not in found})
    latest: dict[int, Target] = {}
    if rest:
        rank = sa.func.row_number().over(
            partition_by=deliveries.c.subscriber_id,
            order_by=(deliveries.c.sent_at.desc().nulls_last(), deliveries.c.id.desc()),
        ).label("rank")
        ranked = (
            sa.select(deliveries.c.id, deliveries.c.subscriber_id, deliveries.c.edition_id, rank)
            .where(deliveries.c.subscriber_id.in_(rest),
                   deliveries.c.status == DeliveryStatus.SENT.value)
            .subquery()
        )
        for row in conn.execute(sa.select(ranked).where(ranked.c.rank == 1)):
            latest[row.subscriber_id] = Target(row.subscriber_id, row.id, row.edition_id)
    for pair in pairs:
        if pair not in found:
            found[pair] = latest.get(pair[0], Target(pair[0]))
    return found


@dataclass(frozen=True)
class SubscriberState:
    email: str
    status: Status


def subscriber_states(conn: Connection, subscriber_ids: Iterable[int]
                      ) -> dict[int, SubscriberState]:
    wanted = sorted(set(subscriber_ids))
    if not wanted:
        return {}
    return {
        row.id: SubscriberState(row.email, Status(row.status))
        for row in conn.execute(
            sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.status)
            .where(subscribers.c.id.in_(wanted))
        )
    }


@dataclass(frozen=True)
class StatusChange:
    subscriber_id: int
    values: Mapping[str, object]
    """The columns to set (``subscribers.status_change_values``)."""
    event: str
    detail: str


def change_statuses(conn: Connection, changes: Sequence[StatusChange], *, now: datetime,
                    source: str) -> None:
    """Apply status changes already allowed by ``next_status``, in order, and record each
    in the consent history: one UPDATE per kind of change, one INSERT for the history."""
    if not changes:
        return
    # A subscriber changed twice (bounced, then a complaint) gets its changes in order.
    rounds: list[list[StatusChange]] = []
    seen: dict[int, int] = {}
    for change in changes:
        index = seen.get(change.subscriber_id, 0)
        seen[change.subscriber_id] = index + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(change)
    for batch in rounds:
        by_values: dict[tuple[tuple[str, object], ...], list[int]] = {}
        for change in batch:
            by_values.setdefault(tuple(sorted(change.values.items())), []).append(
                change.subscriber_id)
        for values, ids in by_values.items():
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == sa.bindparam("target_id"))
                .values(dict(values)),
                [{"target_id": i} for i in sorted(ids)],
            )
    bulk_insert(conn, subscriber_events, [
        {"subscriber_id": c.subscriber_id, "at": now, "event": c.event, "source": source,
         "detail": c.detail}
        for c in changes
    ])


def suppress_hashes(conn: Connection, hashes: Iterable[str], *, now: datetime,
                    reason: str) -> None:
    """``subscribers.suppress_address`` for many address hashes, in one statement."""
    wanted = sorted(set(hashes))
    if wanted:
        conn.execute(
            insert_ignoring_conflicts(conn, suppressed_addresses)
            .on_conflict_do_nothing(index_elements=["hash"]),
            [{"hash": h, "reason": reason, "at": now} for h in wanted],
        )


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


@dataclass(frozen=True)
class NewEvent:
    target: Target
    kind: EventKind
    source: str
    at: datetime
    status_code: str
    reason: str
    report_key: str


def add_events(conn: Connection, new: Sequence[NewEvent]) -> None:
    """:func:`add_event` for many events, in one statement."""
    bulk_insert(conn, delivery_events, [
        {"subscriber_id": e.target.subscriber_id, "delivery_id": e.target.delivery_id,
         "edition_id": e.target.edition_id, "at": e.at, "kind": e.kind.value,
         "source": e.source, "status_code": e.status_code[:16], "reason": e.reason,
         "report_key": e.report_key[:255]}
        for e in new
    ])


def count_events_of(conn: Connection, subscriber_ids: Iterable[int], kind: EventKind, *,
                    since: datetime) -> dict[int, int]:
    """:func:`count_events` for many subscribers (those with none are left out)."""
    wanted = sorted(set(subscriber_ids))
    if not wanted:
        return {}
    return {
        subscriber_id: int(count)
        for subscriber_id, count in conn.execute(
            sa.select(delivery_events.c.subscriber_id, sa.func.count())
            .where(delivery_events.c.subscriber_id.in_(wanted),
                   delivery_events.c.kind == kind.value, delivery_events.c.at >= since)
            .group_by(delivery_events.c.subscriber_id)
        )
    }


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
