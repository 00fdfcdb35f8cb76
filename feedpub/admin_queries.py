"""What the dashboard at ``/admin`` shows, read from the store: one function per panel.

Each returns JSON-ready data (the panel's endpoint sends it as it is, the page
renders it as tables). Counts and rates come from :mod:`feedpub.status`
(``DeliveryCounts``, ``HeardBack`` and its flags at Gmail's limits), the queue
from :mod:`feedpub.store.queue`, next runs from :func:`feedpub.slots.next_slot`:
this module only groups them by day, by edition and by person.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedpub.config import Settings
from feedpub.schedules import utc_iso
from feedpub.slots import next_slot
from feedpub.status import DeliveryCounts, HeardBack
from feedpub.store import queue as delivery_queue
from feedpub.store.audience import SERVICE_WINDOW_DAYS
from feedpub.store.editions import DIGEST_PREFIX, EditionStatus
from feedpub.store.events import EventRates, recent_events
from feedpub.store.schema import (
    FORGOTTEN_EVENT,
    DeliveryStatus,
    EventKind,
    Status,
    admin_audit,
    deliveries,
    delivery_events,
    editions,
    feed_readers,
    feed_service_counts,
    subscriber_events,
    subscribers,
)
from feedpub.store.subscribers import get_events, get_subscriber, get_subscriptions

RANGES: Mapping[str, int | None] = {"30d": 30, "1y": 365, "all": None}
"""The audience chart's ranges, in days (None: since the first subscriber)."""
OTHER_READERS = "other"
"""The feed-reader series of readers counted one by one (not by an aggregator)."""
EDITIONS_PER_PAGE = 20
SEARCH_LIMIT = 50


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else utc_iso(moment)


def _utc_day(conn: Connection, column: Any) -> Any:
    """The UTC calendar day of a stored time, computed by the database."""
    if conn.dialect.name == "postgresql":
        return sa.func.date(sa.func.timezone("UTC", column))
    return sa.func.date(column)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# --- audience over time -----------------------------------------------------------------


def audience(conn: Connection, now: datetime, range_name: str = "30d") -> dict[str, Any]:
    """Daily points: email subscribers by status (at the end of each UTC day, from the
    consent record) and feed readers by service (each aggregator's stated count,
    carried over days it did not state one; other readers counted one by one)."""
    if range_name not in RANGES:
        raise ValueError(f"unknown range {range_name!r}")
    today = now.astimezone(UTC).date()
    changes = _status_changes(conn)
    services = _service_counts(conn, today)
    span = RANGES[range_name]
    if span is None:
        counted_since = conn.execute(sa.select(sa.func.min(feed_readers.c.day))).scalar_one()
        known = [*changes, *services, *([_as_date(counted_since)] if counted_since else [])]
        first = min(known, default=today)
    else:
        first = today - timedelta(days=span - 1)
    others = _other_readers(conn, first)
    days = [first + timedelta(days=n) for n in range((today - first).days + 1)]

    counts = dict.fromkeys(Status, 0)
    for day in sorted(d for d in changes if d < first):
        _apply(counts, changes[day])
    by_status: dict[Status, list[int]] = {status: [] for status in Status}
    for day in days:
        _apply(counts, changes.get(day, {}))
        for status in Status:
            by_status[status].append(counts[status])

    names = sorted({name for stated in services.values() for name in stated}, key=str.casefold)
    by_service: dict[str, list[int]] = {name: [] for name in names}
    carried: dict[str, tuple[date, int]] = {}
    for day in sorted(d for d in services if d < first):
        for name, value in services[day].items():
            carried[name] = (day, value)
    for day in days:
        for name, value in services.get(day, {}).items():
            carried[name] = (day, value)
        for name in names:
            stated = carried.get(name)
            fresh = stated is not None and (day - stated[0]).days < SERVICE_WINDOW_DAYS
            by_service[name].append(stated[1] if stated is not None and fresh else 0)
    series = [
        {"key": status.value, "group": "email", "values": by_status[status]}
        for status in Status
    ] + [
        {"key": name, "group": "feeds", "values": by_service[name]} for name in names
    ] + [
        {"key": OTHER_READERS, "group": "feeds", "values": [others.get(day, 0) for day in days]}
    ]
    return {"range": range_name, "days": [day.isoformat() for day in days], "series": series,
            "generated_at": _iso(now)}


def _apply(counts: dict[Status, int], moves: Mapping[tuple[Status | None, Status], int]) -> None:
    for (before, after), count in moves.items():
        if before is not None:
            counts[before] -= count
        counts[after] += count


Changes = dict[date, dict[tuple[Status | None, Status], int]]
_CHANGES: dict[str, tuple[int, Changes]] = {}
"""Per database, the newest consent event counted and the day-by-day changes so far: the
consent record only grows, so only the events added since need counting."""


def _status_changes(conn: Connection) -> Changes:
    """Per UTC day, how many subscribers went from one status to another. The first call
    counts the whole consent record; later calls count only the events added since."""
    # Events are only ever added (forgetting blanks their details, nothing deletes
    # them), so the newest id tells what is new: one index lookup.
    newest = int(conn.execute(sa.select(sa.func.max(subscriber_events.c.id))).scalar_one() or 0)
    url = conn.engine.url.render_as_string(hide_password=True)
    counted, known = _CHANGES.get(url, (0, {}))
    if counted == newest and url in _CHANGES:
        return known
    since = counted if 0 < counted < newest else 0
    changes = {day: dict(moves) for day, moves in known.items()} if since else {}
    _count_status_changes(conn, changes, after_id=since)
    _CHANGES[url] = (newest, changes)
    return changes


def _count_status_changes(conn: Connection, changes: Changes, *, after_id: int) -> None:
    """Add to ``changes`` each event after ``after_id`` against the one before it (a window
    over its subscriber's events), counted per UTC day and pair of statuses."""
    wanted = [status.value for status in Status] + [FORGOTTEN_EVENT]
    events = subscriber_events.c
    window = (
        sa.select(
            events.id.label("id"),
            _utc_day(conn, events.at).label("day"),
            events.event.label("event"),
            sa.func.lag(events.event).over(
                partition_by=events.subscriber_id, order_by=(events.at, events.id),
            ).label("before"),
        )
        .where(events.event.in_(wanted))
    )
    if after_id:
        # Only the subscribers with new events, whose earlier events give the "before".
        touched = sa.select(events.subscriber_id).where(events.id > after_id)
        window = window.where(events.subscriber_id.in_(touched))
    ordered = window.subquery()
    rows = conn.execute(
        sa.select(ordered.c.day, ordered.c.event, ordered.c.before, sa.func.count())
        .where(ordered.c.id > after_id)
        .group_by(ordered.c.day, ordered.c.event, ordered.c.before)
    ).all()
    for day, event, before, count in rows:
        previous = Status(before) if before in set(Status) else None
        if event == FORGOTTEN_EVENT:
            # Forgetting unsubscribes a pending or active subscriber; others stay as they were.
            if previous not in (Status.PENDING, Status.ACTIVE):
                continue
            after = Status.UNSUBSCRIBED
        else:
            after = Status(event)
        if previous == after:
            continue
        moves = changes.setdefault(_as_date(day), {})
        moves[(previous, after)] = moves.get((previous, after), 0) + count


def _service_counts(conn: Connection, today: date) -> dict[date, dict[str, int]]:
    rows = conn.execute(
        sa.select(feed_service_counts.c.day, feed_service_counts.c.service,
                  sa.func.sum(feed_service_counts.c.subscribers))
        .where(feed_service_counts.c.day <= today)
        .group_by(feed_service_counts.c.day, feed_service_counts.c.service)
    ).all()
    found: dict[date, dict[str, int]] = {}
    for day, service, total in rows:
        found.setdefault(_as_date(day), {})[service] = int(total)
    return found


_READERS: dict[tuple[str, int, date], dict[date, int]] = {}
"""The last distinct-reader counts worked out, per database and first day: rows are
only ever added (``serve`` counting, ``audience import`` of older logs), so the
number of rows tells whether they still stand."""


def _other_readers(conn: Connection, since: date) -> dict[date, int]:
    rows_now = int(conn.execute(
        sa.select(sa.func.count()).select_from(feed_readers)).scalar_one())
    key = (conn.engine.url.render_as_string(hide_password=True), rows_now, since)
    known = _READERS.get(key)
    if known is None:
        rows = conn.execute(
            sa.select(feed_readers.c.day, sa.func.count(sa.distinct(feed_readers.c.reader)))
            .where(feed_readers.c.day >= since)
            .group_by(feed_readers.c.day)
        ).all()
        known = {_as_date(day): int(count) for day, count in rows}
        if len(_READERS) >= len(RANGES) * 2:
            _READERS.clear()
        _READERS[key] = known
    return known


# --- editions ---------------------------------------------------------------------------


def _is_variant(period_key: Any) -> Any:
    return sa.and_(period_key.startswith(DIGEST_PREFIX), period_key.contains("/"))


def edition_list(conn: Connection, settings: Settings, *, limit: int = EDITIONS_PER_PAGE
                 ) -> list[dict[str, Any]]:
    """The newest editions that mailed something, each with its category variants'
    deliveries and reports added in: recipients, by status, bounced, complained, the
    rates with their flags, and how long the queue took to send it."""
    top = conn.execute(
        sa.select(editions.c.id, editions.c.newsletter, editions.c.kind, editions.c.period_key,
                  editions.c.created_at, editions.c.subject, editions.c.web_path)
        .where(editions.c.status == EditionStatus.READY.value,
               sa.not_(_is_variant(editions.c.period_key)))
        .order_by(editions.c.created_at.desc(), editions.c.id.desc())
        .limit(limit)
    ).all()
    if not top:
        return []
    family: dict[int, int] = {row.id: row.id for row in top}
    roots = {(row.newsletter, row.period_key): row.id for row in top}
    oldest = min(row.created_at for row in top)
    for variant in conn.execute(
        sa.select(editions.c.id, editions.c.newsletter, editions.c.period_key)
        .where(_is_variant(editions.c.period_key), editions.c.created_at >= oldest,
               editions.c.newsletter.in_({row.newsletter for row in top}))
    ):
        root = roots.get((variant.newsletter, variant.period_key.partition("/")[0]))
        if root is not None:
            family[variant.id] = root
    ids = list(family)
    counts: dict[int, dict[str, int]] = {}
    last_sent: dict[int, datetime] = {}
    for edition_id, status, count, latest in conn.execute(
        sa.select(deliveries.c.edition_id, deliveries.c.status, sa.func.count(),
                  sa.func.max(deliveries.c.sent_at))
        .where(deliveries.c.edition_id.in_(ids))
        .group_by(deliveries.c.edition_id, deliveries.c.status)
    ):
        root = family[edition_id]
        by_status = counts.setdefault(root, {})
        by_status[status] = by_status.get(status, 0) + count
        if latest is not None:
            latest = _aware(latest)
            last_sent[root] = max(last_sent.get(root, latest), latest)
    reports: dict[int, dict[str, int]] = {}
    for edition_id, kind, count in conn.execute(
        sa.select(delivery_events.c.edition_id, delivery_events.c.kind, sa.func.count())
        .where(delivery_events.c.edition_id.in_(ids))
        .group_by(delivery_events.c.edition_id, delivery_events.c.kind)
    ):
        by_kind = reports.setdefault(family[edition_id], {})
        by_kind[kind] = by_kind.get(kind, 0) + count
    listed = []
    for row in top:
        tally = DeliveryCounts.from_mapping(counts.get(row.id, {}))
        kinds = reports.get(row.id, {})
        heard = HeardBack(EventRates(
            sent=tally.sent, hard=kinds.get(EventKind.HARD.value, 0),
            soft=kinds.get(EventKind.SOFT.value, 0),
            complaints=kinds.get(EventKind.COMPLAINT.value, 0),
        ))
        draining = tally.queued + tally.sending + tally.retrying
        created = _aware(row.created_at)
        drained = last_sent.get(row.id)
        listed.append({
            "id": row.id,
            "newsletter": row.newsletter,
            "kind": row.kind,
            "period_key": row.period_key,
            "subject": row.subject,
            "created_at": _iso(created),
            "recipients": tally.total,
            "deliveries": asdict(tally),
            "bounced": heard.rates.hard + heard.rates.soft,
            "hard_bounces": heard.rates.hard,
            "complained": heard.rates.complaints,
            "bounce_rate": round(heard.rates.bounce_rate, 6),
            "complaint_rate": round(heard.rates.complaint_rate, 6),
            "flags": list(heard.flags),
            "drain_seconds": None if draining or drained is None
            else max(int((drained - created).total_seconds()), 0),
            # web_path is the page's quoted path below public/, as the edition wrote it.
            "url": settings.site.url + row.web_path if row.web_path else None,
        })
    return listed


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- the queue now ----------------------------------------------------------------------


def queue_now(conn: Connection, now: datetime) -> dict[str, Any]:
    """Deliveries due now, being sent, waiting for a retry; messages sent in the last hour."""
    # Only the statuses still in the queue: an index range, not every delivery ever made.
    waiting = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.RETRYING)
    counts = DeliveryCounts.from_mapping(dict(conn.execute(
        sa.select(deliveries.c.status, sa.func.count())
        .where(deliveries.c.status.in_([status.value for status in waiting]))
        .group_by(deliveries.c.status)
    ).all()))
    hour_ago = now - timedelta(hours=1)
    sent_last_hour = conn.execute(
        sa.select(sa.func.count()).select_from(deliveries).where(
            deliveries.c.sent_at > hour_ago, deliveries.c.sent_at <= now,
        )
    ).scalar_one()
    next_retry = conn.execute(
        sa.select(sa.func.min(deliveries.c.next_attempt_at))
        .where(deliveries.c.status == DeliveryStatus.RETRYING.value)
    ).scalar_one()
    return {
        "generated_at": _iso(now),
        "due": delivery_queue.count_due(conn, now),
        "queued": counts.queued,
        "sending": counts.sending,
        "retrying": counts.retrying,
        "next_retry_at": _iso(_aware(next_retry)) if next_retry is not None else None,
        "sent_last_hour": int(sent_last_hour),
        "per_minute": round(int(sent_last_hour) / 60, 2),
    }


# --- upcoming ---------------------------------------------------------------------------


def upcoming(settings: Settings, store: Any, now: datetime) -> list[dict[str, Any]]:
    """Each newsletter's next run and the posts waiting for it, with ``check``'s findings
    for those posts."""
    from feedpub.catalog import load_catalog
    from feedpub.digest import pending_entries

    catalog = load_catalog(settings, now, jobs=1)
    waiting = {n.name: pending_entries(catalog, store, n) for n in settings.newsletters}
    sources = {entry.source for entries in waiting.values() for entry in entries}
    findings: dict[str, list[dict[str, Any]]] = {}
    if sources:
        for finding in catalog.lint(sources=sources).findings:
            findings.setdefault(finding.path, []).append({
                "severity": finding.severity, "code": finding.code, "line": finding.line,
                "message": finding.message,
            })
    listed = []
    for newsletter in settings.newsletters:
        run = next_slot(settings, newsletter, now)
        listed.append({
            "name": newsletter.name,
            "title": newsletter.title,
            "schedule": newsletter.schedule,
            "next_run": None if run is None else {
                "local": run.isoformat(timespec="minutes"), "utc": _iso(run),
            },
            "posts": [
                {"title": entry.title, "url": entry.url, "published": _iso(entry.published),
                 "source": entry.source, "findings": _findings_of(findings, entry.source)}
                for entry in waiting[newsletter.name]
            ],
        })
    return listed


def _findings_of(findings: Mapping[str, list[dict[str, Any]]], source: str
                 ) -> list[dict[str, Any]]:
    for path, found in findings.items():
        if path == source or path.endswith("/" + source) or source.endswith("/" + path):
            return found
    return []


# --- subscribers ------------------------------------------------------------------------


def search_subscribers(conn: Connection, text: str, *, limit: int = SEARCH_LIMIT
                       ) -> list[dict[str, Any]]:
    """Subscribers whose address or name contains ``text`` (case-insensitive), newest first."""
    needle = text.strip().lower()
    if not needle:
        return []
    pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = conn.execute(
        sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.name,
                  subscribers.c.status, subscribers.c.created_at)
        .where(sa.or_(subscribers.c.email_key.like(pattern, escape="\\"),
                      sa.func.lower(subscribers.c.name).like(pattern, escape="\\")))
        .order_by(subscribers.c.id.desc())
        .limit(limit)
    ).all()
    return [
        {"id": row.id, "email": row.email, "name": row.name or "", "status": row.status,
         "created_at": _iso(_aware(row.created_at))}
        for row in rows
    ]


def subscriber_history(conn: Connection, subscriber_id: int) -> dict[str, Any] | None:
    """One person: who they are, their consent record, what they were sent, what came back."""
    subscriber = get_subscriber(conn, subscriber_id)
    if subscriber is None:
        return None
    received = conn.execute(
        sa.select(editions.c.id, editions.c.newsletter, editions.c.subject,
                  editions.c.created_at, deliveries.c.status, deliveries.c.sent_at,
                  deliveries.c.attempts)
        .join(editions, editions.c.id == deliveries.c.edition_id)
        .where(deliveries.c.subscriber_id == subscriber_id)
        .order_by(editions.c.created_at.desc(), editions.c.id.desc())
        .limit(200)
    ).all()
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name or "",
        "status": subscriber.status.value,
        "forgotten": subscriber.forgotten,
        "created_at": _iso(subscriber.created_at),
        "subscriptions": [
            {"newsletter": s.newsletter, "mode": s.mode.value, "categories": list(s.categories)}
            for s in get_subscriptions(conn, subscriber_id)
        ],
        "consent": [
            {"at": _iso(e.at), "event": e.event, "source": e.source, "detail": e.detail}
            for e in get_events(conn, subscriber_id)
        ],
        "editions": [
            {"id": r.id, "newsletter": r.newsletter, "subject": r.subject,
             "created_at": _iso(_aware(r.created_at)), "status": r.status,
             "sent_at": _iso(_aware(r.sent_at)) if r.sent_at else None, "attempts": r.attempts}
            for r in received
        ],
        "reports": [
            {"at": _iso(e.at), "kind": e.kind.value, "source": e.source,
             "status_code": e.status_code, "reason": e.reason, "edition": e.edition}
            for e in recent_events(conn, subscriber_id=subscriber_id, limit=200)
        ],
    }


# --- the audit log ----------------------------------------------------------------------


def record_audit(conn: Connection, *, at: datetime, actor: str, action: str,
                 subscriber_id: int | None = None, client: str = "", detail: str = "") -> None:
    """One change made from the dashboard: who, what, when (a subscriber by id only)."""
    conn.execute(admin_audit.insert().values(
        at=at, actor=actor[:64], action=action[:32], subscriber_id=subscriber_id,
        client=client[:64], detail=detail,
    ))


def audit_log(conn: Connection, *, limit: int = 100,
              subscriber_id: int | None = None) -> list[dict[str, Any]]:
    query = sa.select(admin_audit).order_by(admin_audit.c.at.desc(), admin_audit.c.id.desc())
    if subscriber_id is not None:
        query = query.where(admin_audit.c.subscriber_id == subscriber_id)
    return [
        {"at": _iso(row["at"]), "actor": row["actor"], "action": row["action"],
         "subscriber_id": row["subscriber_id"], "client": row["client"],
         "detail": row["detail"]}
        for row in conn.execute(query.limit(limit)).mappings()
    ]
