"""The database: SQLite by default, PostgreSQL by URL; migrations applied on first use.

>>> store = open_store("sqlite:///feedpub.db")        # doctest: +SKIP
>>> with store.write() as conn:                       # doctest: +SKIP
...     add_subscriber(conn, "Ada <ada@example.com>", now=now)
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from feedpub.errors import CsvError, InvalidAddress, StoreError
from feedpub.store.addresses import Address, parse_address
from feedpub.store.engine import (
    Store,
    bulk_insert,
    create_store_engine,
    insert_ignoring_conflicts,
    read_transaction,
    write_transaction,
)
from feedpub.store.migrate import current_revision, head_revision, is_current, upgrade
from feedpub.store.schema import DeliveryStatus, Mode, Source, Status
from feedpub.store.subscriber_csv import (
    CSV_COLUMNS,
    ImportProblem,
    ImportReport,
    export_subscribers,
    import_subscribers,
)
from feedpub.store.subscribers import (
    AddResult,
    Subscriber,
    SubscriberEvent,
    Subscription,
    add_subscriber,
    change_status,
    confirm_subscriber,
    count_by_status,
    find_subscriber,
    forget_subscriber,
    get_events,
    get_subscriber,
    get_subscription,
    get_subscriptions,
    iter_subscribed,
    iter_subscribers,
    iter_subscribers_with_subscriptions,
    mark_bounced,
    record_delivery_failure,
    record_delivery_success,
    remove_subscription,
    set_subscription,
    subscriber_for_token,
    unsubscribe_subscriber,
)


def _reason(exc: sa.exc.DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the database at ``url`` and bring its tables up to date (unless ``migrate=False``).

    Raises StoreError when the database cannot be reached or migrated.
    """
    engine = create_store_engine(url)
    try:
        if migrate and not is_current(engine):
            upgrade(engine)
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        shown = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"cannot open database {shown}: {_reason(exc)}", key="database.url") \
            from None
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)


def open_existing_store(url: str) -> Store | None:
    """The store at ``url`` as it is, for commands that must not change anything:
    None when it has no tables yet (nothing is created); StoreError when it cannot be
    reached or needs ``feedpub db upgrade``."""
    parsed = sa.make_url(url)
    if (
        parsed.get_backend_name() == "sqlite"
        and parsed.database
        and parsed.database != ":memory:"
        and not Path(parsed.database).exists()
    ):
        return None
    engine = create_store_engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with read_transaction(engine) as conn:
            revision = current_revision(conn)
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        raise StoreError(f"cannot open database {shown}: {_reason(exc)}", key="database.url") \
            from None
    if revision == head_revision():
        return Store(engine)
    engine.dispose()
    if revision is None:
        return None
    raise StoreError(
        f"database {shown} is at an older migration ({revision}); run `feedpub db upgrade`",
        key="database.url",
    )


__all__ = [
    "CSV_COLUMNS",
    "AddResult",
    "Address",
    "CsvError",
    "DeliveryStatus",
    "ImportProblem",
    "ImportReport",
    "InvalidAddress",
    "Mode",
    "Source",
    "Status",
    "Store",
    "Subscriber",
    "SubscriberEvent",
    "Subscription",
    "add_subscriber",
    "bulk_insert",
    "change_status",
    "confirm_subscriber",
    "count_by_status",
    "create_store_engine",
    "export_subscribers",
    "find_subscriber",
    "forget_subscriber",
    "get_events",
    "get_subscriber",
    "get_subscription",
    "get_subscriptions",
    "head_revision",
    "import_subscribers",
    "insert_ignoring_conflicts",
    "is_current",
    "iter_subscribed",
    "iter_subscribers",
    "iter_subscribers_with_subscriptions",
    "mark_bounced",
    "open_existing_store",
    "open_store",
    "parse_address",
    "read_transaction",
    "record_delivery_failure",
    "record_delivery_success",
    "remove_subscription",
    "set_subscription",
    "subscriber_for_token",
    "unsubscribe_subscriber",
    "write_transaction",
]
