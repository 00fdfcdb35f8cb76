"""Editions, the entries each newsletter has announced, and queueing an edition's deliveries.

Every function takes a connection inside a transaction (``with store.write() as
conn:``): :mod:`feedpub.digest` makes an edition, announces its entries and
queues its deliveries in one transaction, so that either all of it happened or
none of it did.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedpub.store.engine import insert_ignoring_conflicts
from feedpub.store.schema import (
    DeliveryStatus,
    Mode,
    Status,
    announced_entries,
    deliveries,
    editions,
    subscribers,
    subscriptions,
)

INSTANT_PREFIX = "post:"
"""The period key of an instant edition: ``post:`` and the entry's id."""
DIGEST_PREFIX = "digest:"
"""The period key of a digest: ``digest:`` and its slot in UTC."""

BASELINE_KEY = "baseline"
"""The period key of the row that records a newsletter's first run."""

_BATCH = 500


class EditionStatus(StrEnum):
    BASELINE = "baseline"
    """The first run: the entries it found are announced, nothing is mailed."""
    READY = "ready"
    """Rendered, its entries announced, its deliveries queued."""
    EMPTY = "empty"
    """A scheduled slot with nothing new: recorded so that the slot is not made again."""
    MISSED = "missed"
    """A slot noticed later than ``scheduler.misfire_grace_hours``: its entries wait."""


@dataclass(frozen=True)
class Edition:
    id: int
    newsletter: str
    kind: Mode
    period_key: str
    created_at: datetime
    subject: str
    html: str
    text: str
    entry_ids: tuple[str, ...]
    web_path: str | None
    """The web version's path relative to ``public/``, e.g. ``editions/weekly/x.html``."""
    status: EditionStatus


def _edition_from_row(row: Any) -> Edition:
    return Edition(
        id=row.id,
        newsletter=row.newsletter,
        kind=Mode(row.kind),
        period_key=row.period_key,
        created_at=row.created_at,
        subject=row.subject,
        html=row.html,
        text=row.text,
        entry_ids=tuple(json.loads(row.entry_ids or "[]")),
        web_path=row.web_path,
        status=EditionStatus(row.status),
    )


def get_edition(conn: Connection, edition_id: int) -> Edition | None:
    row = conn.execute(sa.select(editions).where(editions.c.id == edition_id)).first()
    return _edition_from_row(row) if row else None


def find_edition(conn: Connection, newsletter: str, period_key: str) -> Edition | None:
    row = conn.execute(
        sa.select(editions).where(
            editions.c.newsletter == newsletter, editions.c.period_key == period_key
        )
    ).first()
    return _edition_from_row(row) if row else None


def period_keys(conn: Connection, newsletter: str, prefix: str) -> set[str]:
    """The period keys of ``newsletter``'s editions that start with ``prefix``."""
    rows = conn.execute(
        sa.select(editions.c.period_key).where(
            editions.c.newsletter == newsletter,
            editions.c.period_key.startswith(prefix, autoescape=True),
        )
    )
    return {row[0] for row in rows}


def insert_edition(
    conn: Connection,
    *,
    newsletter: str,
    kind: Mode,
    period_key: str,
    now: datetime,
    status: EditionStatus,
    subject: str = "",
    html: str = "",
    text: str = "",
    entry_ids: Sequence[str] = (),
    web_path: str | None = None,
) -> int | None:
    """The new edition's id; None when ``(newsletter, period_key)`` exists already.

    On PostgreSQL a concurrent insert of the same key waits for the other
    transaction and then returns None; on SQLite writers take turns.
    """
    return conn.execute(
        insert_ignoring_conflicts(conn, editions)
        .values(
            newsletter=newsletter,
            kind=kind.value,
            period_key=period_key,
            created_at=now,
            subject=subject,
            html=html,
            text=text,
            entry_ids=json.dumps(list(entry_ids), ensure_ascii=False),
            web_path=web_path,
            status=status.value,
        )
        .on_conflict_do_nothing(index_elements=["newsletter", "period_key"])
        .returning(editions.c.id)
    ).scalar()


def announced_ids(conn: Connection, newsletter: str, *, edition_id: int | None = None) -> set[str]:
    """The entry ids ``newsletter`` has announced (only those of ``edition_id``, if given)."""
    query = sa.select(announced_entries.c.entry_id).where(
        announced_entries.c.newsletter == newsletter
    )
    if edition_id is not None:
        query = query.where(announced_entries.c.edition_id == edition_id)
    return {row[0] for row in conn.execute(query)}


def announce(
    conn: Connection,
    newsletter: str,
    entry_ids: Iterable[str],
    *,
    edition_id: int | None,
    now: datetime,
) -> None:
    """Record entries as announced; an entry announced before keeps its first record."""
    rows = [
        {"newsletter": newsletter, "entry_id": entry_id, "announced_at": now,
         "edition_id": edition_id}
        for entry_id in dict.fromkeys(entry_ids)
    ]
    for start in range(0, len(rows), _BATCH):
        conn.execute(
            insert_ignoring_conflicts(conn, announced_entries).on_conflict_do_nothing(
                index_elements=["newsletter", "entry_id"]
            ),
            rows[start : start + _BATCH],
        )


# --- recipients ----------------------------------------------------------------


def category_filters(conn: Connection, newsletter: str, mode: Mode) -> list[str]:
    """The distinct ``subscriptions.categories`` texts of active subscribers in ``mode``.

    A handful of texts stand for any number of subscribers: recipients are then
    chosen with ``categories IN (...)`` without reading subscribers one by one.
    """
    rows = conn.execute(
        sa.select(subscriptions.c.categories)
        .distinct()
        .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
        .where(
            subscriptions.c.newsletter == newsletter,
            subscriptions.c.mode == mode.value,
            subscribers.c.status == Status.ACTIVE.value,
        )
    )
    return sorted(row[0] for row in rows)


def _recipients(newsletter: str, mode: Mode, filters: Sequence[str]) -> sa.Select[Any]:
    return (
        sa.select(subscribers.c.id)
        .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
        .where(
            subscriptions.c.newsletter == newsletter,
            subscriptions.c.mode == mode.value,
            subscriptions.c.categories.in_(list(filters)),
            subscribers.c.status == Status.ACTIVE.value,
        )
    )


def count_recipients(
    conn: Connection, newsletter: str, mode: Mode, filters: Sequence[str]
) -> int:
    if not filters:
        return 0
    subquery = _recipients(newsletter, mode, filters).subquery()
    return conn.execute(sa.select(sa.func.count()).select_from(subquery)).scalar_one()


def queue_deliveries(
    conn: Connection,
    edition_id: int,
    *,
    newsletter: str,
    mode: Mode,
    filters: Sequence[str],
    now: datetime,
) -> int:
    """Queue the edition for every active subscriber in ``mode`` whose categories text is
    one of ``filters``; one INSERT … SELECT, so no subscriber passes through Python.
    Returns how many deliveries the edition has."""
    if not filters:
        return 0
    chosen = _recipients(newsletter, mode, filters).add_columns(
        sa.literal(edition_id, sa.Integer),
        sa.literal(DeliveryStatus.QUEUED.value, sa.String),
        sa.literal(0, sa.Integer),
        sa.literal(now, deliveries.c.next_attempt_at.type),
    )
    conn.execute(
        deliveries.insert().from_select(
            ["subscriber_id", "edition_id", "status", "attempts", "next_attempt_at"], chosen
        )
    )
    # Counted, not taken from rowcount: psycopg reports -1 for INSERT … SELECT here.
    return conn.execute(
        sa.select(sa.func.count()).select_from(deliveries)
        .where(deliveries.c.edition_id == edition_id)
    ).scalar_one()


def web_editions(conn: Connection, newsletter: str) -> list[tuple[str, datetime, str]]:
    """(subject, created_at, web_path) of the newsletter's digests that have a web page,
    newest first; category variants are left out (the full edition stands for them)."""
    rows = conn.execute(
        sa.select(editions.c.subject, editions.c.created_at, editions.c.web_path)
        .where(
            editions.c.newsletter == newsletter,
            editions.c.kind == Mode.DIGEST.value,
            editions.c.status == EditionStatus.READY.value,
            editions.c.web_path.is_not(None),
            ~editions.c.period_key.contains("/"),
        )
        .order_by(editions.c.created_at.desc(), editions.c.id.desc())
    )
    return [(row.subject, row.created_at, row.web_path) for row in rows]
