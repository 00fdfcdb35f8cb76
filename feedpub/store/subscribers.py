"""Subscribers and their subscriptions: the one API that the CLI, the web app and the sender use.

Every function takes a connection inside a transaction (``with store.write() as
conn:``) so that callers can group changes, and a ``now`` for the clock.
Each status change is written to ``subscriber_events`` with its source: the
consent record.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, RowMapping

from feedpub.errors import InvalidAddress, StoreError
from feedpub.store.addresses import Address, clean_name, email_key, parse_address
from feedpub.store.engine import insert_ignoring_conflicts
from feedpub.store.events import erase_reasons
from feedpub.store.schema import (
    FORGOTTEN_EVENT,
    Mode,
    Source,
    Status,
    subscriber_events,
    subscribers,
    subscriptions,
    suppressed_addresses,
)
from feedpub.tokens import TokenClaim, TokenError

FORGOTTEN_DOMAIN = "forgotten.invalid"
"""Erased subscribers get ``forgotten-ID@forgotten.invalid``: no real address can end so."""

SUPPRESSION_KEY = b"feedpub suppressed address v1"
"""The HMAC key of :func:`suppression_hash`. Fixed and public, so the hashes survive a
new site secret and the store needs no secret; it only keeps a hash from matching
ready-made tables of plain SHA-256 address hashes. The hashes are pseudonymous
data: whoever holds an address can test whether it was forgotten."""

SUPPRESSED_FORGOTTEN = "forgotten"


class SuppressedAddress(InvalidAddress):
    """The address was forgotten at its owner's request: it comes back only with ``resubscribe``.

    A kind of InvalidAddress so that callers that report a bad address and go on
    to the next one handle it the same way.
    """


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str | None
    status: Status
    source: str
    created_at: datetime
    status_changed_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    bounced_at: datetime | None
    consecutive_failures: int
    token_key: str
    """Signed into unsubscribe and preferences links; replaced when the subscriber is forgotten."""

    @property
    def forgotten(self) -> bool:
        return self.email.endswith("@" + FORGOTTEN_DOMAIN)

    @property
    def formatted(self) -> str:
        """``Name <email>`` for a To: header (the caller encodes it)."""
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class Subscription:
    subscriber_id: int
    newsletter: str
    mode: Mode
    categories: tuple[str, ...]
    """Empty: every category."""
    created_at: datetime

    def wants(self, entry_categories: Iterable[str]) -> bool:
        """Whether an entry in these categories belongs in this subscriber's mail."""
        return not self.categories or bool(set(self.categories) & set(entry_categories))


@dataclass(frozen=True)
class SubscriberEvent:
    at: datetime
    event: str
    """The status entered (``pending``, ``active``, …) or ``forgotten``."""
    source: str
    detail: str


@dataclass(frozen=True)
class AddResult:
    subscriber: Subscriber
    created: bool
    changed: bool
    """True when an existing subscriber's status or name changed."""
    refused: bool = False
    """True when the requested status would have resubscribed an unsubscribed or
    bounced address and ``resubscribe`` was not given."""


def new_token_key() -> str:
    return secrets.token_hex(16)


def new_token_keys(count: int) -> list[str]:
    """``count`` token keys from one read of the system's randomness (imports make many)."""
    pool = secrets.token_hex(16 * count)
    return [pool[i : i + 32] for i in range(0, 32 * count, 32)]


def normalise_categories(values: Iterable[str]) -> tuple[str, ...]:
    """Stripped, without blanks or duplicates, sorted: one spelling for comparisons."""
    return tuple(sorted({v.strip() for v in values if v.strip()}))


def encode_categories(values: Iterable[str]) -> str:
    normalised = normalise_categories(values)
    return json.dumps(list(normalised), ensure_ascii=False) if normalised else "[]"


def decode_categories(text: str) -> tuple[str, ...]:
    value = json.loads(text or "[]")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StoreError(f"subscriptions.categories holds {text!r}, not a JSON list of strings")
    return tuple(value)


def next_status(current: Status, requested: Status, *, resubscribe: bool) -> Status | None:
    """The status a subscriber moves to when ``requested``; None when it stays.

    Nothing moves an unsubscribed or bounced address back to pending or active
    unless ``resubscribe`` says the person asked for it; nothing turns an
    active subscriber back into a pending one.
    """
    if requested == current:
        return None
    if requested in (Status.ACTIVE, Status.PENDING):
        if current in (Status.UNSUBSCRIBED, Status.BOUNCED):
            return requested if resubscribe else None
        return requested if requested == Status.ACTIVE else None
    if requested == Status.BOUNCED and current == Status.UNSUBSCRIBED:
        return None
    return requested


def status_change_values(status: Status, now: datetime) -> dict[str, Any]:
    """The columns that change along with ``status``."""
    values: dict[str, Any] = {"status": status.value, "status_changed_at": now}
    if status == Status.ACTIVE:
        values["confirmed_at"] = now
        values["consecutive_failures"] = 0
    elif status == Status.UNSUBSCRIBED:
        values["unsubscribed_at"] = now
    elif status == Status.BOUNCED:
        values["bounced_at"] = now
    return values


def subscriber_from_row(row: RowMapping) -> Subscriber:
    return Subscriber(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        status=Status(row["status"]),
        source=row["source"],
        created_at=row["created_at"],
        status_changed_at=row["status_changed_at"],
        confirmed_at=row["confirmed_at"],
        unsubscribed_at=row["unsubscribed_at"],
        bounced_at=row["bounced_at"],
        consecutive_failures=row["consecutive_failures"],
        token_key=row["token_key"] or "",
    )


def subscription_from_row(row: RowMapping) -> Subscription:
    return Subscription(
        subscriber_id=row["subscriber_id"],
        newsletter=row["newsletter"],
        mode=Mode(row["mode"]),
        categories=decode_categories(row["categories"]),
        created_at=row["created_at"],
    )


def record_event(
    conn: Connection,
    subscriber_id: int,
    event: str,
    *,
    now: datetime,
    source: Source | str,
    detail: str = "",
) -> None:
    conn.execute(
        subscriber_events.insert().values(
            subscriber_id=subscriber_id, at=now, event=str(event), source=str(source),
            detail=detail,
        )
    )


# --- suppressed addresses ------------------------------------------------------


# HMAC (RFC 2104) with its two keyed states computed once: an import hashes every
# address, and OpenSSL's one-shot HMAC sets up a context (and lets go of the GIL) each time.
_INNER = hashlib.sha256(bytes(b ^ 0x36 for b in SUPPRESSION_KEY.ljust(64, b"\0")))
_OUTER = hashlib.sha256(bytes(b ^ 0x5C for b in SUPPRESSION_KEY.ljust(64, b"\0")))


def suppression_hash(address_key: str) -> str:
    """The keyed SHA-256 of an address key (lower-cased, normalised), in hex: HMAC-SHA256
    under SUPPRESSION_KEY."""
    inner = _INNER.copy()
    inner.update(address_key.encode("utf-8"))
    outer = _OUTER.copy()
    outer.update(inner.digest())
    return outer.hexdigest()


def suppressed_since(conn: Connection, address: str | Address) -> datetime | None:
    """When this address was suppressed (forgotten), or None. Raises InvalidAddress."""
    parsed = parse_address(address, allow_smtputf8=True) \
        if isinstance(address, str) else address
    return conn.execute(
        sa.select(suppressed_addresses.c.at)
        .where(suppressed_addresses.c.hash == suppression_hash(parsed.key))
    ).scalar()


def suppressed_hashes(conn: Connection, address_keys: Iterable[str]) -> set[str]:
    """Which of these address keys' hashes are suppressed."""
    hashes = [suppression_hash(key) for key in address_keys]
    if not hashes:
        return set()
    return set(conn.execute(
        sa.select(suppressed_addresses.c.hash).where(
            one_of(conn, suppressed_addresses.c.hash, hashes)
        )
    ).scalars())


def one_of(conn: Connection, column: sa.ColumnElement[Any], values: list[Any]
           ) -> sa.ColumnElement[bool]:
    """``column IN (values)`` with one parameter, not the thousands an import's batch
    would compile and bind: ``= ANY(array)`` on PostgreSQL, ``IN json_each(…)`` on SQLite.
    ``values`` are strings or integers."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    listed = sa.func.json_each(sa.bindparam(None, json.dumps(values))).table_valued("value")
    return column.in_(sa.select(listed.c.value))


def suppress_address(
    conn: Connection, address_key: str, *, now: datetime, reason: str = SUPPRESSED_FORGOTTEN
) -> None:
    """Keep this address out of imports and adds until it is resubscribed."""
    conn.execute(
        insert_ignoring_conflicts(conn, suppressed_addresses)
        .values(hash=suppression_hash(address_key), reason=reason, at=now)
        .on_conflict_do_nothing(index_elements=["hash"])
    )


def lift_suppressions(conn: Connection, hashes: Iterable[str]) -> None:
    """The people behind these hashes asked to come back."""
    wanted = list(hashes)
    if wanted:
        conn.execute(suppressed_addresses.delete().where(suppressed_addresses.c.hash.in_(wanted)))


# --- reading ---------------------------------------------------------------


def get_subscriber(conn: Connection, subscriber_id: int) -> Subscriber | None:
    row = conn.execute(
        sa.select(subscribers).where(subscribers.c.id == subscriber_id)
    ).mappings().first()
    return subscriber_from_row(row) if row else None


def find_subscriber(conn: Connection, address: str | Address) -> Subscriber | None:
    """The subscriber with this address, whatever its case; raises InvalidAddress."""
    parsed = parse_address(address, allow_smtputf8=True) \
        if isinstance(address, str) else address
    row = conn.execute(
        sa.select(subscribers).where(subscribers.c.email_key == parsed.key)
    ).mappings().first()
    return subscriber_from_row(row) if row else None


def require_subscriber(conn: Connection, subscriber_id: int) -> Subscriber:
    subscriber = get_subscriber(conn, subscriber_id)
    if subscriber is None:
        raise StoreError(f"no subscriber with id {subscriber_id}")
    return subscriber


def iter_subscribers(
    conn: Connection, *, status: Status | None = None, batch_size: int = 1000
) -> Iterator[Subscriber]:
    """Every subscriber (or those with ``status``) by id, streamed from the database."""
    query = sa.select(subscribers).order_by(subscribers.c.id)
    if status is not None:
        query = query.where(subscribers.c.status == status.value)
    result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(query)
    for row in result.mappings():
        yield subscriber_from_row(row)


def iter_subscribers_with_subscriptions(
    conn: Connection, *, status: Status | None = None, batch_size: int = 1000
) -> Iterator[tuple[Subscriber, list[Subscription]]]:
    """Like :func:`iter_subscribers`, with each subscriber's subscriptions, in one query."""
    query = (
        sa.select(
            subscribers,
            subscriptions.c.newsletter,
            subscriptions.c.mode,
            subscriptions.c.categories,
            subscriptions.c.created_at.label("subscribed_at"),
        )
        .select_from(subscribers.outerjoin(subscriptions))
        .order_by(subscribers.c.id, subscriptions.c.newsletter)
    )
    if status is not None:
        query = query.where(subscribers.c.status == status.value)
    result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(query)
    current: Subscriber | None = None
    subs: list[Subscription] = []
    for row in result.mappings():
        if current is None or current.id != row["id"]:
            if current is not None:
                yield current, subs
            current, subs = subscriber_from_row(row), []
        if row["newsletter"] is not None:
            subs.append(_joined_subscription(row))
    if current is not None:
        yield current, subs


def _joined_subscription(row: RowMapping) -> Subscription:
    return Subscription(
        subscriber_id=row["id"],
        newsletter=row["newsletter"],
        mode=Mode(row["mode"]),
        categories=decode_categories(row["categories"]),
        created_at=row["subscribed_at"],
    )


def count_by_status(conn: Connection) -> dict[Status, int]:
    """How many subscribers are in each status; every status is present, zero or not."""
    counts = dict.fromkeys(Status, 0)
    rows = conn.execute(
        sa.select(subscribers.c.status, sa.func.count()).group_by(subscribers.c.status)
    )
    for status, count in rows:
        counts[Status(status)] = count
    return counts


def get_events(conn: Connection, subscriber_id: int) -> list[SubscriberEvent]:
    """The consent record of one subscriber, oldest first."""
    rows = conn.execute(
        sa.select(subscriber_events)
        .where(subscriber_events.c.subscriber_id == subscriber_id)
        .order_by(subscriber_events.c.at, subscriber_events.c.id)
    ).mappings()
    return [
        SubscriberEvent(at=r["at"], event=r["event"], source=r["source"], detail=r["detail"])
        for r in rows
    ]


# --- changing ----------------------------------------------------------------


def add_subscriber(
    conn: Connection,
    address: str | Address,
    *,
    now: datetime,
    name: str | None = None,
    status: Status = Status.PENDING,
    source: Source = Source.CLI,
    resubscribe: bool = False,
    detail: str = "",
) -> AddResult:
    """Add ``address`` (``ada@example.com`` or ``Ada <ada@example.com>``), or find it.

    An existing subscriber moves towards ``status`` as :func:`next_status`
    allows, and takes ``name`` when one is given. Raises InvalidAddress.

    A forgotten (suppressed) address raises SuppressedAddress unless
    ``resubscribe``, which lifts the suppression. A pending sign-up from the
    web is let through: the double opt-in link proves the person asked, and
    following it (:func:`change_status` to active) lifts the suppression.
    """
    parsed = parse_address(address) if isinstance(address, str) else address
    since = suppressed_since(conn, parsed)
    if since is not None:
        if resubscribe:
            lift_suppressions(conn, [suppression_hash(parsed.key)])
        elif not (source == Source.WEB and status == Status.PENDING):
            raise SuppressedAddress(
                f"{parsed.email} was forgotten at their request on {since:%Y-%m-%d}; "
                "not added (add --resubscribe if they asked to come back)"
            )
    name = clean_name(name) or parsed.name
    inserted = conn.execute(
        insert_ignoring_conflicts(conn, subscribers)
        .values(
            email=parsed.email,
            email_key=parsed.key,
            name=name,
            source=source.value,
            created_at=now,
            token_key=new_token_key(),
            **status_change_values(status, now),
        )
        .on_conflict_do_nothing(index_elements=["email_key"])
        .returning(subscribers.c.id)
    ).scalar()
    if inserted is not None:
        record_event(conn, inserted, status.value, now=now, source=source, detail=detail)
        return AddResult(require_subscriber(conn, inserted), created=True, changed=False)

    existing = find_subscriber(conn, parsed)
    if existing is None:
        raise StoreError(f"{parsed.email} was neither inserted nor found; try again")
    values: dict[str, Any] = {}
    if name and name != existing.name:
        values["name"] = name
    target = next_status(existing.status, status, resubscribe=resubscribe)
    refused = (
        target is None
        and status in (Status.ACTIVE, Status.PENDING)
        and existing.status in (Status.UNSUBSCRIBED, Status.BOUNCED)
    )
    if target is not None:
        values.update(status_change_values(target, now))
    if not values:
        return AddResult(existing, created=False, changed=False, refused=refused)
    conn.execute(subscribers.update().where(subscribers.c.id == existing.id).values(**values))
    if target is not None:
        record_event(conn, existing.id, target.value, now=now, source=source, detail=detail)
    return AddResult(
        require_subscriber(conn, existing.id), created=False, changed=True, refused=refused
    )


def change_status(
    conn: Connection,
    subscriber_id: int,
    status: Status,
    *,
    now: datetime,
    source: Source,
    detail: str = "",
    resubscribe: bool = False,
) -> Subscriber:
    """Move one subscriber to ``status`` if :func:`next_status` allows; returns it as it is now.

    Becoming active (the person confirmed) lifts a suppression of the address.
    """
    subscriber = require_subscriber(conn, subscriber_id)
    target = next_status(subscriber.status, status, resubscribe=resubscribe)
    if target is None:
        return subscriber
    if target == Status.ACTIVE and not subscriber.forgotten:
        lift_suppressions(conn, [suppression_hash(email_key(subscriber.email))])
    conn.execute(
        subscribers.update()
        .where(subscribers.c.id == subscriber_id)
        .values(**status_change_values(target, now))
    )
    record_event(conn, subscriber_id, target.value, now=now, source=source, detail=detail)
    return require_subscriber(conn, subscriber_id)


def confirm_subscriber(
    conn: Connection, subscriber_id: int, *, now: datetime, source: Source = Source.WEB
) -> Subscriber:
    """pending -> active. An unsubscribed or bounced subscriber stays as it is."""
    return change_status(conn, subscriber_id, Status.ACTIVE, now=now, source=source)


def unsubscribe_subscriber(
    conn: Connection,
    subscriber_id: int,
    *,
    now: datetime,
    source: Source = Source.WEB,
    detail: str = "",
) -> Subscriber:
    """Stop all mail to this subscriber; the record (and its consent history) stays."""
    return change_status(
        conn, subscriber_id, Status.UNSUBSCRIBED, now=now, source=source, detail=detail
    )


def mark_bounced(
    conn: Connection,
    subscriber_id: int,
    *,
    now: datetime,
    source: Source = Source.SENDER,
    detail: str = "",
) -> Subscriber:
    return change_status(conn, subscriber_id, Status.BOUNCED, now=now, source=source, detail=detail)


def record_delivery_failure(
    conn: Connection, subscriber_id: int, *, now: datetime, bounce_after: int, detail: str = ""
) -> Subscriber:
    """Count a permanent failure; the ``bounce_after``-th in a row marks the subscriber bounced."""
    conn.execute(
        subscribers.update()
        .where(subscribers.c.id == subscriber_id)
        .values(consecutive_failures=subscribers.c.consecutive_failures + 1)
    )
    subscriber = require_subscriber(conn, subscriber_id)
    if subscriber.consecutive_failures >= bounce_after:
        return mark_bounced(conn, subscriber_id, now=now, detail=detail)
    return subscriber


def record_delivery_success(conn: Connection, subscriber_id: int) -> None:
    conn.execute(
        subscribers.update()
        .where(subscribers.c.id == subscriber_id, subscribers.c.consecutive_failures != 0)
        .values(consecutive_failures=0)
    )


def forget_subscriber(
    conn: Connection, subscriber_id: int, *, now: datetime, source: Source = Source.CLI
) -> Subscriber:
    """Erase the personal data: address, name, subscriptions, event details.

    The row stays (as ``forgotten-ID@forgotten.invalid``, unsubscribed) so that
    deliveries still add up; its old links stop working. A hash of the address
    is kept (:func:`suppress_address`) so that no later import or add brings it back.
    """
    subscriber = require_subscriber(conn, subscriber_id)
    if not subscriber.forgotten:
        suppress_address(conn, email_key(subscriber.email), now=now)
    placeholder = f"forgotten-{subscriber_id}@{FORGOTTEN_DOMAIN}"
    values: dict[str, Any] = {
        "email": placeholder,
        "email_key": placeholder,
        "name": None,
        "token_key": new_token_key(),
    }
    if subscriber.status in (Status.PENDING, Status.ACTIVE):
        values.update(status_change_values(Status.UNSUBSCRIBED, now))
    conn.execute(subscribers.update().where(subscribers.c.id == subscriber_id).values(**values))
    conn.execute(subscriptions.delete().where(subscriptions.c.subscriber_id == subscriber_id))
    conn.execute(
        subscriber_events.update()
        .where(subscriber_events.c.subscriber_id == subscriber_id)
        .values(detail="")
    )
    erase_reasons(conn, subscriber_id)  # bounce texts quote the address
    record_event(conn, subscriber_id, FORGOTTEN_EVENT, now=now, source=source)
    return require_subscriber(conn, subscriber_id)


# --- subscriptions -------------------------------------------------------------


def set_subscription(
    conn: Connection,
    subscriber_id: int,
    newsletter: str,
    *,
    now: datetime,
    mode: Mode = Mode.DIGEST,
    categories: Iterable[str] = (),
) -> Subscription:
    """Subscribe to ``newsletter`` in ``mode`` (and only ``categories``, if any), or change it.

    The caller checks that the newsletter exists in the configuration.
    """
    encoded = encode_categories(categories)
    updated = conn.execute(
        subscriptions.update()
        .where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.newsletter == newsletter,
        )
        .values(mode=mode.value, categories=encoded)
    ).rowcount
    if not updated:
        conn.execute(
            subscriptions.insert().values(
                subscriber_id=subscriber_id, newsletter=newsletter, mode=mode.value,
                categories=encoded, created_at=now,
            )
        )
    subscription = get_subscription(conn, subscriber_id, newsletter)
    if subscription is None:
        raise StoreError(f"subscription of {subscriber_id} to {newsletter!r} vanished")
    return subscription


def get_subscription(conn: Connection, subscriber_id: int, newsletter: str) -> Subscription | None:
    row = conn.execute(
        sa.select(subscriptions).where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.newsletter == newsletter,
        )
    ).mappings().first()
    return subscription_from_row(row) if row else None


def get_subscriptions(conn: Connection, subscriber_id: int) -> list[Subscription]:
    rows = conn.execute(
        sa.select(subscriptions)
        .where(subscriptions.c.subscriber_id == subscriber_id)
        .order_by(subscriptions.c.newsletter)
    ).mappings()
    return [subscription_from_row(r) for r in rows]


def remove_subscription(conn: Connection, subscriber_id: int, newsletter: str) -> bool:
    """Leave one newsletter; True when there was a subscription to remove."""
    removed = conn.execute(
        subscriptions.delete().where(
            subscriptions.c.subscriber_id == subscriber_id,
            subscriptions.c.newsletter == newsletter,
        )
    ).rowcount
    return bool(removed)


def iter_subscribed(
    conn: Connection, newsletter: str, *, mode: Mode | None = None, batch_size: int = 1000
) -> Iterator[tuple[Subscriber, Subscription]]:
    """Active subscribers of ``newsletter`` (in ``mode``, if given), by subscriber id."""
    query = (
        sa.select(subscribers, subscriptions.c.newsletter, subscriptions.c.mode,
                  subscriptions.c.categories,
                  subscriptions.c.created_at.label("subscribed_at"))
        .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
        .where(subscriptions.c.newsletter == newsletter,
               subscribers.c.status == Status.ACTIVE.value)
        .order_by(subscribers.c.id)
    )
    if mode is not None:
        query = query.where(subscriptions.c.mode == mode.value)
    result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(query)
    for row in result.mappings():
        yield subscriber_from_row(row), _joined_subscription(row)


# --- links -------------------------------------------------------------------


def subscriber_for_token(conn: Connection, claim: TokenClaim) -> Subscriber:
    """The subscriber a verified token names, if the token is still theirs.

    Raises TokenError when the subscriber no longer exists or was forgotten.
    """
    subscriber = get_subscriber(conn, claim.subscriber_id)
    if subscriber is None or not secrets.compare_digest(subscriber.token_key, claim.check):
        raise TokenError("this link is no longer valid")
    return subscriber
