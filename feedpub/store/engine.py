"""Engines that behave the same on SQLite and PostgreSQL, and the :class:`Store` handle.

SQLite gets WAL, a busy timeout and foreign keys on every connection, and
write transactions begin with ``BEGIN IMMEDIATE``: a second writer then waits
for the lock at the start instead of failing with "database is locked" when
it tries to upgrade a read lock half-way through.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from feedpub.errors import StoreError

BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "feedpub_write"


def _redact(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def create_store_engine(url: str) -> Engine:
    """An engine for ``sqlite:///…`` or ``postgresql+psycopg://…`` with feedpub's settings."""
    try:
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(parsed, pool_pre_ping=parsed.get_backend_name() != "sqlite")
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StoreError(
            f"cannot use database URL {_redact(url)!r}: {exc}; use sqlite:///FILE or "
            "postgresql+psycopg://USER@HOST/DB",
            key="database.url",
        ) from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _use_wal(cursor: Any) -> None:
    """Switch a new database to WAL once. The switch needs the database to itself and
    SQLite does not wait for it, so several processes opening a fresh file at once
    retry briefly instead of failing with "database is locked"."""
    for attempt in range(50):
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == 49:
                raise
            time.sleep(0.02 * (attempt + 1))


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # sqlite3 must not open transactions on its own: SQLAlchemy's "begin" below does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _first_line(error: sa.exc.DBAPIError) -> str:
    text = str(error.orig if error.orig is not None else error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def database_error(error: sa.exc.DBAPIError) -> StoreError:
    """One line for a database's error (a full disk, a lost server, a constraint): the
    driver's first line, not SQLAlchemy's page of statement and parameters."""
    return StoreError(f"the database failed: {_first_line(error)}")


def _connect(engine: Engine) -> Connection:
    try:
        return engine.connect()
    except sa.exc.DBAPIError as error:
        shown = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"cannot open database {shown}: {_first_line(error)}",
                         key="database.url") from error


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that will write: committed on success, else rolled back
    (nothing half-written). A database error becomes a one-line :class:`StoreError`."""
    try:
        with _connect(engine) as connection:
            connection = connection.execution_options(**{_WRITE_OPTION: True})
            with connection.begin():
                yield connection
    except sa.exc.DBAPIError as error:
        raise database_error(error) from error


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that only reads (a consistent snapshot). A database
    error becomes a one-line :class:`StoreError`."""
    try:
        with _connect(engine) as connection, connection.begin():
            yield connection
    except sa.exc.DBAPIError as error:
        raise database_error(error) from error


def insert_ignoring_conflicts(connection: Connection, table: sa.Table) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for this connection's database.

    Call ``.on_conflict_do_nothing(...)`` on the result; both dialects accept the
    same arguments (``index_elements=[...]``).
    """
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise StoreError(f"unsupported database {connection.dialect.name!r}")


def bulk_insert(
    connection: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    returning: Sequence[sa.ColumnElement[Any]] = (),
) -> list[tuple[Any, ...]]:
    """Insert many rows (all with the same keys) in one round trip where possible.

    PostgreSQL gets one ``INSERT … SELECT FROM unnest(arrays)``: one short
    statement however many rows, where a multi-row VALUES would make psycopg
    parse tens of thousands of placeholders. SQLite's executemany is fast as it is.
    Returns the ``returning`` columns of the new rows, in no particular order.
    """
    if not rows:
        return []
    names = list(rows[0])
    if connection.dialect.name != "postgresql":
        if returning:
            result = connection.execute(table.insert().returning(*returning), rows)
            return [tuple(row) for row in result]
        connection.execute(table.insert(), rows)
        return []
    arrays = [
        sa.bindparam(
            f"bulk_{name}", [row[name] for row in rows],
            type_=postgresql.ARRAY(table.c[name].type),
        )
        for name in names
    ]
    source = sa.func.unnest(*arrays).table_valued(*names).render_derived(name="bulk")
    statement = table.insert().from_select(names, sa.select(*[source.c[n] for n in names]))
    if returning:
        return [tuple(row) for row in connection.execute(statement.returning(*returning))]
    connection.execute(statement)
    return []


class Store:
    """An open database: its engine, and transactions to read and write in.

    Get one from :func:`feedpub.store.open_store`, which also applies migrations.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def write(self) -> AbstractContextManager[Connection]:
        """``with store.write() as conn:`` — a transaction that writes; waits for other writers."""
        return write_transaction(self.engine)

    def read(self) -> AbstractContextManager[Connection]:
        """``with store.read() as conn:`` — one read-only snapshot."""
        return read_transaction(self.engine)

    def upgrade(self) -> str:
        """Apply every migration that has not run yet; returns the revision now current."""
        from feedpub.store.migrate import upgrade

        return upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
