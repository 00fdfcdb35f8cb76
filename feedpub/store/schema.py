"""The tables, as SQLAlchemy Core metadata: the contract that every store module builds on.

The migrations under ``migrations/versions`` create exactly these tables; a test
compares the two so that they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class Status(StrEnum):
    """Where a subscriber is: pending -> active -> unsubscribed | bounced."""

    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class Source(StrEnum):
    """Who made a change: kept with each status change as the consent record."""

    CLI = "cli"
    IMPORT = "import"
    WEB = "web"
    SENDER = "sender"
    REPORT = "report"
    """A bounce or complaint that came back after sending (``feedpub bounces``)."""
    ADMIN = "admin"
    """The operator, from the dashboard at ``/admin``."""


class Mode(StrEnum):
    DIGEST = "digest"
    INSTANT = "instant"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    SKIPPED = "skipped"


FORGOTTEN_EVENT = "forgotten"
"""The ``subscriber_events.event`` of an erasure; every other event is the status entered."""


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every database.

    SQLite has no time zones: values are stored as naive UTC text (which sorts
    and compares correctly) and get their UTC zone back when read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} given to the store; pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        process = super().bind_processor(dialect)
        if process is None:
            return None
        # Bulk writes pass the same ``now`` thousands of times: convert it once.
        last: list[tuple[Any, Any]] = [(None, None)]

        def process_once(value: Any) -> Any:
            seen, converted = last[0]
            if value is not None and value is seen:
                return converted
            converted = process(value)
            last[0] = (value, converted)
            return converted

        return process_once

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _check_in(column: str, values: type[StrEnum], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)


metadata = sa.MetaData()

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("email_key", sa.String(320), nullable=False),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("status_changed_at", UTCDateTime, nullable=False),
    sa.Column("confirmed_at", UTCDateTime, nullable=True),
    sa.Column("unsubscribed_at", UTCDateTime, nullable=True),
    sa.Column("bounced_at", UTCDateTime, nullable=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    # Added by migration 0002; the code always sets it. Changing it voids every
    # unsubscribe and preferences link made for this subscriber.
    sa.Column("token_key", sa.String(32), nullable=True),
    sa.UniqueConstraint("email_key", name="uq_subscribers_email_key"),
    _check_in("status", Status, "ck_subscribers_status"),
    sa.Index("ix_subscribers_status", "status"),
)

subscriber_events = sa.Table(
    "subscriber_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "subscriber_id",
        sa.Integer,
        sa.ForeignKey("subscribers.id", ondelete="CASCADE", name="fk_subscriber_events_subscriber"),
        nullable=False,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_subscriber_events_subscriber_id", "subscriber_id"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "subscriber_id",
        sa.Integer,
        sa.ForeignKey("subscribers.id", ondelete="CASCADE", name="fk_subscriptions_subscriber"),
        nullable=False,
    ),
    sa.Column("newsletter", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    # A JSON list of category names; an empty list means every category.
    sa.Column("categories", sa.Text, nullable=False, server_default="[]"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint(
        "subscriber_id", "newsletter", name="uq_subscriptions_subscriber_newsletter"
    ),
    _check_in("mode", Mode, "ck_subscriptions_mode"),
    sa.Index("ix_subscriptions_newsletter", "newsletter"),
)

editions = sa.Table(
    "editions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("newsletter", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("period_key", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("entry_ids", sa.Text, nullable=False, server_default="[]"),
    sa.Column("web_path", sa.Text, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.UniqueConstraint("newsletter", "period_key", name="uq_editions_newsletter_period"),
    _check_in("kind", Mode, "ck_editions_kind"),
)

announced_entries = sa.Table(
    "announced_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("newsletter", sa.String(64), nullable=False),
    sa.Column("entry_id", sa.Text, nullable=False),
    sa.Column("announced_at", UTCDateTime, nullable=False),
    sa.Column(
        "edition_id",
        sa.Integer,
        sa.ForeignKey("editions.id", ondelete="SET NULL", name="fk_announced_entries_edition"),
        nullable=True,
    ),
    sa.UniqueConstraint("newsletter", "entry_id", name="uq_announced_entries_newsletter_entry"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "edition_id",
        sa.Integer,
        sa.ForeignKey("editions.id", ondelete="CASCADE", name="fk_deliveries_edition"),
        nullable=False,
    ),
    sa.Column(
        "subscriber_id",
        sa.Integer,
        sa.ForeignKey("subscribers.id", ondelete="CASCADE", name="fk_deliveries_subscriber"),
        nullable=False,
    ),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Column("claimed_at", UTCDateTime, nullable=True),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Column("last_reply", sa.Text, nullable=True),
    sa.Column("message_id", sa.String(998), nullable=True),
    sa.UniqueConstraint("edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"),
    _check_in("status", DeliveryStatus, "ck_deliveries_status"),
    sa.Index("ix_deliveries_status_next_attempt", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_subscriber_id", "subscriber_id"),
    # Added by migration 0004: a bounce that quotes the original finds its delivery.
    sa.Index("ix_deliveries_message_id", "message_id"),
    # Added by migration 0007, for the dashboard: each edition's counts from the index
    # alone, and the messages sent in the last hour.
    sa.Index("ix_deliveries_edition_status_sent", "edition_id", "status", "sent_at"),
    sa.Index("ix_deliveries_sent_at", "sent_at"),
    # Added by migration 0008: the deliveries still to send, in the order workers claim
    # them; sent rows leave it, so a claim reads what it takes however large the table.
    sa.Index(
        "ix_deliveries_due", "next_attempt_at", "id",
        postgresql_where=sa.text("status IN ('queued', 'retrying')"),
        sqlite_where=sa.text("status IN ('queued', 'retrying')"),
    ),
)

send_rate = sa.Table(
    "send_rate",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    # Seconds since the epoch: the earliest moment the next message may leave.
    sa.Column("next_slot_at", sa.Float, nullable=False, server_default="0"),
)

suppressed_addresses = sa.Table(
    "suppressed_addresses",
    metadata,
    # A keyed SHA-256 of the address key (see subscribers.suppression_hash): the
    # address that asked to be forgotten is recognised without being kept.
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
)


class EventKind(StrEnum):
    """What a report that came back after sending says about one delivery."""

    HARD = "hard"
    """A permanent failure (5.x.x): no such user, no such domain."""
    SOFT = "soft"
    """A temporary failure (4.x.x): mailbox full, over quota."""
    COMPLAINT = "complaint"
    """The recipient reported the message as spam (ARF, a feedback loop, a relay)."""


delivery_events = sa.Table(
    "delivery_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "subscriber_id",
        sa.Integer,
        sa.ForeignKey("subscribers.id", ondelete="CASCADE", name="fk_delivery_events_subscriber"),
        nullable=False,
    ),
    sa.Column(
        "delivery_id",
        sa.Integer,
        sa.ForeignKey("deliveries.id", ondelete="SET NULL", name="fk_delivery_events_delivery"),
        nullable=True,
    ),
    sa.Column(
        "edition_id",
        sa.Integer,
        sa.ForeignKey("editions.id", ondelete="SET NULL", name="fk_delivery_events_edition"),
        nullable=True,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    # Where the report came from: dsn, arf, ses, postmark, mailgun, sendgrid.
    sa.Column("source", sa.String(16), nullable=False),
    # The enhanced status code (RFC 3463), e.g. 5.1.1; empty when the report gave none.
    sa.Column("status_code", sa.String(16), nullable=False, server_default=""),
    # The reason as the report gave it (a Diagnostic-Code, a relay's text); erased on forget.
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("report_key", sa.String(255), nullable=False),
    _check_in("kind", EventKind, "ck_delivery_events_kind"),
    sa.Index("ix_delivery_events_subscriber_id", "subscriber_id"),
    sa.Index("ix_delivery_events_edition_id", "edition_id"),
    sa.Index("ix_delivery_events_at", "at"),
)

inbound_reports = sa.Table(
    "inbound_reports",
    metadata,
    # ``imap:<Message-ID>``, ``ses:<SNS MessageId>``, ``mailgun:<token>``…: a report seen
    # twice (overlapping fetches, a replayed webhook) finds its key taken and does nothing.
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    # What came of it: events, ignored (auto-reply, junk, nobody we know).
    sa.Column("outcome", sa.String(16), nullable=False),
)

# --- feed readers (migration 0005) ------------------------------------------------------

feed_readers = sa.Table(
    "feed_readers",
    metadata,
    # One row per reader, feed and UTC day: a keyed hash of address and User-Agent
    # under a key that changes every day (feedpub.audience.DailyKeys). Inserting a
    # row twice changes nothing, which is what makes counting idempotent.
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("feed", sa.String(500), primary_key=True),
    sa.Column("reader", sa.String(32), primary_key=True),
)

feed_service_counts = sa.Table(
    "feed_service_counts",
    metadata,
    # The subscriber count an aggregator (Feedly, Inoreader…) stated in its
    # User-Agent: per feed and UTC day, the one it stated last.
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("feed", sa.String(500), primary_key=True),
    sa.Column("service", sa.String(64), primary_key=True),
    sa.Column("subscribers", sa.Integer, nullable=False),
    sa.Column("seen_at", UTCDateTime, nullable=False),
)

# --- the web form's shared rate limits (migration 0006) ------------------------------

web_rate_limits = sa.Table(
    "web_rate_limits",
    metadata,
    # One token bucket of `feedpub serve` (feedpub.web.guards.SharedBuckets): a scope and
    # the hash of a client or email address, and the moment (seconds since the epoch)
    # its bucket is full again. Shared by every process, so limits do not multiply.
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("full_at", sa.Float, nullable=False, server_default="0"),
)

# --- the dashboard's audit log (migration 0007) -------------------------------------

admin_audit = sa.Table(
    "admin_audit",
    metadata,
    # Every change made from /admin (and each login): who, what, when. A subscriber is
    # named by id only, so forgetting them leaves nothing of their address here.
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("subscriber_id", sa.Integer, nullable=True),
    sa.Column("client", sa.String(64), nullable=False, server_default=""),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_admin_audit_at", "at"),
)
