"""The send queue: claiming due deliveries, recording what happened, the shared rate limit.

A delivery moves queued -> sending (claimed by one worker) -> sent | retrying |
failed | skipped; ``claimed_by`` keeps the worker that settled it. Claiming is
atomic: on PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets workers on many machines
take disjoint batches without waiting for each other; on SQLite the claim runs
in a ``BEGIN IMMEDIATE`` transaction, so claims take turns. A worker that dies
leaves its claims in ``sending``; once their lease has run out,
:func:`requeue_expired` puts them back, so nothing is lost and at most the
messages that were in flight are sent twice. A worker known to be dead (its
process is gone from this host, or on PostgreSQL its session is gone:
:func:`hold_presence`, :func:`session_gone`) has its claims put back at once
by :func:`requeue_claims_of`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedpub.store.engine import insert_ignoring_conflicts
from feedpub.store.schema import (
    DeliveryStatus,
    Status,
    deliveries,
    editions,
    send_rate,
    subscribers,
)

DUE = (DeliveryStatus.QUEUED.value, DeliveryStatus.RETRYING.value)


@dataclass(frozen=True)
class Claim:
    """One delivery a worker now holds, with what sending it needs."""

    delivery_id: int
    edition_id: int
    subscriber_id: int
    attempts: int
    email: str
    name: str | None
    subscriber_active: bool
    token_key: str


def _due(now: datetime, newsletter: str | None) -> sa.ColumnElement[bool]:
    # The statuses as literals, as in ix_deliveries_due's WHERE: the databases use a
    # partial index only for a query whose WHERE they can see implies the index's.
    condition = sa.and_(
        deliveries.c.status.in_(sa.bindparam("due_statuses", DUE, expanding=True,
                                             literal_execute=True)),
        deliveries.c.next_attempt_at <= now,
    )
    if newsletter is not None:
        in_newsletter = sa.select(editions.c.id).where(editions.c.newsletter == newsletter)
        condition = sa.and_(condition, deliveries.c.edition_id.in_(in_newsletter))
    return condition


def count_due(conn: Connection, now: datetime, *, newsletter: str | None = None) -> int:
    return conn.execute(
        sa.select(sa.func.count()).select_from(deliveries).where(_due(now, newsletter))
    ).scalar_one()


def requeue_expired(conn: Connection, now: datetime, lease: timedelta) -> int:
    """Claims older than ``lease`` (their worker died) go back to the queue."""
    result = conn.execute(
        deliveries.update()
        .where(
            deliveries.c.status == DeliveryStatus.SENDING.value,
            deliveries.c.claimed_at < now - lease,
        )
        .values(status=DeliveryStatus.QUEUED.value, claimed_by=None, claimed_at=None)
    )
    return max(result.rowcount, 0)


def claimers(conn: Connection) -> list[str]:
    """The workers that hold claims now."""
    return [
        worker for (worker,) in conn.execute(
            sa.select(deliveries.c.claimed_by).distinct().where(
                deliveries.c.status == DeliveryStatus.SENDING.value,
                deliveries.c.claimed_by.is_not(None),
            )
        )
    ]


def requeue_claims_of(conn: Connection, workers: Sequence[str]) -> int:
    """The claims of workers known to be dead go back to the queue at once, as they were."""
    if not workers:
        return 0
    result = conn.execute(
        deliveries.update()
        .where(
            deliveries.c.status == DeliveryStatus.SENDING.value,
            deliveries.c.claimed_by.in_(list(workers)),
        )
        .values(
            status=sa.case(
                (deliveries.c.attempts > 0, DeliveryStatus.RETRYING.value),
                else_=DeliveryStatus.QUEUED.value,
            ),
            claimed_by=None,
            claimed_at=None,
        )
    )
    return max(result.rowcount, 0)


def presence_key(worker: str) -> int:
    """The PostgreSQL advisory lock (a signed 64-bit key) that a live worker holds."""
    digest = hashlib.sha256(f"feedpub.worker:{worker}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def hold_presence(conn: Connection, worker: str) -> None:
    """PostgreSQL: take ``worker``'s session-level advisory lock on ``conn``, a connection the
    worker keeps open while it runs; the server frees it when the session ends, however
    the process died."""
    conn.execute(sa.select(sa.func.pg_advisory_lock(presence_key(worker))))


def session_gone(conn: Connection, worker: str) -> bool:
    """PostgreSQL: whether the session that held ``worker``'s presence lock has ended."""
    key = presence_key(worker)
    taken = conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one()
    if taken:
        conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
    return bool(taken)


def claimable(now: datetime, limit: int, newsletter: str | None = None) -> sa.Select[Any]:
    """The ids of the next ``limit`` due deliveries, oldest first: read from
    ``ix_deliveries_due`` (migration 0008), a hundred rows however long the queue."""
    return (
        sa.select(deliveries.c.id)
        .where(_due(now, newsletter))
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit)
    )


def claim(
    conn: Connection,
    *,
    worker: str,
    now: datetime,
    limit: int,
    newsletter: str | None = None,
) -> list[Claim]:
    """Take up to ``limit`` due deliveries for ``worker``, oldest first."""
    chosen = claimable(now, limit, newsletter)
    if conn.dialect.name == "postgresql":
        chosen = chosen.with_for_update(skip_locked=True)
    claimed = conn.execute(
        deliveries.update()
        .where(deliveries.c.id.in_(chosen.scalar_subquery()))
        .values(status=DeliveryStatus.SENDING.value, claimed_by=worker, claimed_at=now)
        .returning(
            deliveries.c.id, deliveries.c.edition_id, deliveries.c.subscriber_id,
            deliveries.c.attempts,
        )
    ).all()
    if not claimed:
        return []
    people = {
        row.id: row
        for row in conn.execute(
            sa.select(
                subscribers.c.id, subscribers.c.email, subscribers.c.name,
                subscribers.c.status, subscribers.c.token_key,
            ).where(subscribers.c.id.in_([row.subscriber_id for row in claimed]))
        )
    }
    claims = [
        Claim(
            delivery_id=row.id,
            edition_id=row.edition_id,
            subscriber_id=row.subscriber_id,
            attempts=row.attempts,
            email=people[row.subscriber_id].email,
            name=people[row.subscriber_id].name,
            subscriber_active=people[row.subscriber_id].status == Status.ACTIVE.value,
            token_key=people[row.subscriber_id].token_key or "",
        )
        for row in claimed
    ]
    return sorted(claims, key=lambda c: c.delivery_id)


def renew(conn: Connection, worker: str, delivery_ids: Sequence[int], now: datetime) -> None:
    """Extend the lease of claims that are still waiting for their turn."""
    for start in range(0, len(delivery_ids), 500):
        conn.execute(
            deliveries.update()
            .where(
                deliveries.c.id.in_(delivery_ids[start : start + 500]),
                deliveries.c.claimed_by == worker,
                deliveries.c.status == DeliveryStatus.SENDING.value,
            )
            .values(claimed_at=now)
        )


def release(conn: Connection, worker: str, delivery_ids: Sequence[int]) -> None:
    """Give back claims that were never tried (a stop or an outage), as they were."""
    for start in range(0, len(delivery_ids), 500):
        conn.execute(
            deliveries.update()
            .where(
                deliveries.c.id.in_(delivery_ids[start : start + 500]),
                deliveries.c.claimed_by == worker,
                deliveries.c.status == DeliveryStatus.SENDING.value,
            )
            .values(
                status=sa.case(
                    (deliveries.c.attempts > 0, DeliveryStatus.RETRYING.value),
                    else_=DeliveryStatus.QUEUED.value,
                ),
                claimed_by=None,
                claimed_at=None,
            )
        )


def _mine(delivery_id: int, worker: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        deliveries.c.id == delivery_id,
        deliveries.c.claimed_by == worker,
        deliveries.c.status == DeliveryStatus.SENDING.value,
    )


@dataclass(frozen=True)
class Sent:
    """A delivery that the mail server accepted."""

    delivery_id: int
    subscriber_id: int
    sent_at: datetime
    reply: str
    message_id: str | None


# Built once: building a statement costs more than running it, once per few messages.
_MARK_SENT = (
    deliveries.update()
    .where(deliveries.c.id == sa.bindparam("sent_id"))
    .values(
        status=DeliveryStatus.SENT.value,
        attempts=deliveries.c.attempts + 1,
        sent_at=sa.bindparam("sent_sent_at", type_=deliveries.c.sent_at.type),
        last_reply=sa.bindparam("sent_reply"),
        message_id=sa.bindparam("sent_message_id"),
        next_attempt_at=None,
    )
)
_RESET_FAILURES = (
    subscribers.update()
    .where(subscribers.c.id.in_(sa.bindparam("reset_ids", expanding=True)),
           subscribers.c.consecutive_failures != 0)
    .values(consecutive_failures=0)
)


def mark_sent(conn: Connection, sent: Sequence[Sent]) -> None:
    """Sent, whoever holds the claims now: the server has the messages either way.

    One statement for the group (an executemany); the subscribers' counts of
    hard failures in a row start again.
    """
    if not sent:
        return
    conn.execute(_MARK_SENT, [
        {"sent_id": s.delivery_id, "sent_sent_at": s.sent_at, "sent_reply": s.reply,
         "sent_message_id": s.message_id}
        for s in sent
    ])
    ids = sorted({s.subscriber_id for s in sent})
    for start in range(0, len(ids), 500):
        conn.execute(_RESET_FAILURES, {"reset_ids": ids[start : start + 500]})


def mark_retrying(
    conn: Connection, delivery_id: int, worker: str, *, next_attempt_at: datetime, reply: str
) -> bool:
    """A temporary failure: try again at ``next_attempt_at``. False if the claim was lost."""
    result = conn.execute(
        deliveries.update()
        .where(_mine(delivery_id, worker))
        .values(
            status=DeliveryStatus.RETRYING.value,
            attempts=deliveries.c.attempts + 1,
            next_attempt_at=next_attempt_at,
            last_reply=reply,
            claimed_by=None,
            claimed_at=None,
        )
    )
    return result.rowcount == 1


def mark_failed(conn: Connection, delivery_id: int, worker: str, *, reply: str) -> bool:
    """Given up for good. False if the claim was lost."""
    result = conn.execute(
        deliveries.update()
        .where(_mine(delivery_id, worker))
        .values(
            status=DeliveryStatus.FAILED.value,
            attempts=deliveries.c.attempts + 1,
            next_attempt_at=None,
            last_reply=reply,
        )
    )
    return result.rowcount == 1


def mark_skipped(conn: Connection, delivery_id: int, worker: str, *, reason: str) -> None:
    conn.execute(
        deliveries.update()
        .where(_mine(delivery_id, worker))
        .values(
            status=DeliveryStatus.SKIPPED.value,
            next_attempt_at=None,
            last_reply=reason,
        )
    )


def status_counts(conn: Connection, *, edition_id: int | None = None) -> dict[str, int]:
    """How many deliveries are in each status (of one edition, if given)."""
    query = sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status)
    if edition_id is not None:
        query = query.where(deliveries.c.edition_id == edition_id)
    return {status: count for status, count in conn.execute(query)}


# --- the shared rate limit -----------------------------------------------------------


def reserve_slots(
    conn: Connection, name: str, *, now: float, count: int, interval: float, horizon: float
) -> float:
    """Reserve ``count`` send slots ``interval`` seconds apart; returns the first one's time.

    All workers share the ``send_rate`` row, so their messages together keep
    the rate. A stored slot further ahead than ``horizon`` seconds cannot come
    from a live worker (a clock was wrong, or ``--now`` was far ahead): it is
    ignored instead of making everyone wait for it.
    """
    conn.execute(
        insert_ignoring_conflicts(conn, send_rate)
        .values(name=name, next_slot_at=0.0)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    stored = send_rate.c.next_slot_at
    start = sa.case(
        (sa.and_(stored > now, stored < now + horizon), stored), else_=sa.literal(now)
    )
    new_next = conn.execute(
        send_rate.update()
        .where(send_rate.c.name == name)
        .values(next_slot_at=start + count * interval)
        .returning(send_rate.c.next_slot_at)
    ).scalar_one()
    return float(new_next) - count * interval
