"""Subscribers to and from CSV: a streamed, batched, idempotent import and its export.

Columns: ``email`` (required; ``Name <addr>`` accepted), ``name``, ``status``,
``newsletter``, ``mode``, ``categories`` (comma-separated). One row per
subscription: a subscriber to two newsletters is two rows. Rows are read in
batches; each batch is one transaction, so a large file never holds the
database for long, and running the same file again changes nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedpub.errors import CsvError, InvalidAddress, StoreError
from feedpub.store.addresses import Address, clean_name, parse_address
from feedpub.store.engine import Store
from feedpub.store.schema import (
    Mode,
    Source,
    Status,
    UTCDateTime,
    subscriber_events,
    subscribers,
    subscriptions,
)
from feedpub.store.subscribers import (
    FORGOTTEN_DOMAIN,
    decode_categories,
    encode_categories,
    lift_suppressions,
    new_token_keys,
    next_status,
    normalise_categories,
    one_of,
    status_change_values,
    suppressed_hashes,
    suppression_hash,
)

CSV_COLUMNS = ("email", "name", "status", "newsletter", "mode", "categories")
BATCH_SIZE = 5000



@dataclass(frozen=True)
class ImportProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class ImportReport:
    """What an import did, one count per data row."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: tuple[ImportProblem, ...] = ()
    not_resubscribed: int = 0
    """Rows that asked to make an unsubscribed, bounced or forgotten address active (refused)."""
    ignored_columns: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return self.added + self.updated + self.unchanged + len(self.skipped)


@dataclass(frozen=True)
class _Row:
    line: int
    address: Address
    name: str | None
    status: Status
    newsletter: str | None
    mode: Mode
    categories: str
    """Encoded as stored."""


class _Outcome(Enum):
    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


# --- reading the file ------------------------------------------------------------


def _choice(enum: type[Status] | type[Mode], value: str, column: str) -> Any:
    try:
        return enum(value.strip().lower())
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise ValueError(f"{column} {value!r} is not one of: {allowed}") from None


_STATUS_BY_TEXT = {status.value: status for status in Status}
_MODE_BY_TEXT = {mode.value: mode for mode in Mode}
_NO_CATEGORIES = encode_categories(())


def _cell(cells: list[str], at: int | None) -> str:
    return cells[at].strip() if at is not None else ""


@dataclass
class _RowReader:
    newsletters: Collection[str]
    default_newsletter: str | None
    default_status: Status
    columns: dict[str, int] = field(default_factory=dict)
    indexes: tuple[int | None, ...] = ()
    """Where each of CSV_COLUMNS is in a row (None: not in the file); set from the header."""

    def parse(self, line: int, cells: list[str]) -> _Row:
        # Called once per row of files of a million rows: plain lookups, no helpers
        # for the common case (a known status and mode, no categories).
        columns = self.columns
        width = len(columns)
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            raise ValueError(
                f"{len(cells)} cells but the header names {width} columns "
                "(a comma in an unquoted name?)"
            )
        if len(cells) < width:
            cells = cells + [""] * (width - len(cells))
        email_at, name_at, status_at, newsletter_at, mode_at, categories_at = self.indexes

        address = parse_address(_cell(cells, email_at))
        status_text = _cell(cells, status_at)
        if not status_text:
            status = self.default_status
        else:
            status = _STATUS_BY_TEXT.get(status_text) or _choice(Status, status_text, "status")
        if "newsletter" in columns:
            newsletter = _cell(cells, newsletter_at) or None
        else:
            newsletter = self.default_newsletter
        if newsletter is not None and newsletter not in self.newsletters:
            known = ", ".join(self.newsletters) or "none"
            raise ValueError(f"no newsletter named {newsletter!r} (this site has: {known})")
        mode_text = _cell(cells, mode_at)
        category_text = _cell(cells, categories_at)
        categories = normalise_categories(category_text.split(",")) if category_text else ()
        if newsletter is None and (mode_text or categories):
            raise ValueError("mode or categories given without a newsletter")
        if not mode_text:
            mode = Mode.DIGEST
        else:
            mode = _MODE_BY_TEXT.get(mode_text) or _choice(Mode, mode_text, "mode")
        name = _cell(cells, name_at)
        return _Row(
            line=line,
            address=address,
            name=(clean_name(name) if name else None) or address.name,
            status=status,
            newsletter=newsletter,
            mode=mode,
            categories=encode_categories(categories) if categories else _NO_CATEGORIES,
        )


def _records(
    lines: Iterable[str], path: Path | str | None
) -> Iterator[tuple[int, list[str] | ImportProblem]]:
    """(line where the record starts, its cells or why it is unreadable), blank ones left out."""
    records = csv.reader(lines)
    while True:
        line = records.line_num + 1
        try:
            cells = next(records)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise CsvError(
                'is not UTF-8 text: save it as "CSV UTF-8" and import it again (importing '
                "twice is safe; rows before this line may already be in)",
                path=path,
                line=line,
            ) from None
        except csv.Error as exc:
            yield line, ImportProblem(line, f"unreadable CSV: {exc}")
            continue
        if any(c.strip() for c in cells):
            yield line, cells


def _read_rows(
    lines: Iterable[str], reader: _RowReader, path: Path | str | None, ignored: list[str]
) -> Iterator[_Row | ImportProblem]:
    records = _records(lines, path)
    first = next(records, None)
    if first is None:
        raise CsvError("the file is empty; it needs a header row naming an email column", path=path)
    header_line, header = first
    if isinstance(header, ImportProblem):
        raise CsvError(f"the header row is {header.message}", path=path, line=header_line)
    names = [cell.strip().lower().lstrip("\ufeff") for cell in header]
    for index, name in enumerate(names):
        if name in reader.columns:
            raise CsvError(f"column {name!r} appears twice", path=path, line=header_line)
        reader.columns[name] = index
    if "email" not in reader.columns:
        raise CsvError(
            f"no email column in the header ({', '.join(repr(n) for n in names)}); "
            f"expected columns: {', '.join(CSV_COLUMNS)}",
            path=path,
            line=header_line,
        )
    ignored.extend(n for n in names if n not in CSV_COLUMNS)
    reader.indexes = tuple(reader.columns.get(name) for name in CSV_COLUMNS)
    for line, cells in records:
        if isinstance(cells, ImportProblem):
            yield cells
            continue
        try:
            yield reader.parse(line, cells)
        except (InvalidAddress, ValueError) as exc:
            yield ImportProblem(line, getattr(exc, "message", None) or str(exc))


# --- applying rows -------------------------------------------------------------------


@dataclass
class _SubscriptionDraft:
    id: int | None
    mode: str
    categories: str
    dirty: bool = False


@dataclass(eq=False)
class _Draft:
    """A subscriber as this batch will leave it."""

    id: int | None
    values: dict[str, Any]
    subscriptions: dict[str, _SubscriptionDraft]
    dirty: bool = False


_MUTABLE = (
    "name", "status", "status_changed_at", "confirmed_at", "unsubscribed_at", "bounced_at",
    "consecutive_failures",
)


@dataclass
class _Batch:
    now: datetime
    resubscribe: bool
    detail_prefix: str
    drafts: dict[str, _Draft] = field(default_factory=dict)
    events: list[tuple[_Draft, str, str]] = field(default_factory=list)
    not_resubscribed: int = 0
    suppressed: set[str] = field(default_factory=set)
    lifted: set[str] = field(default_factory=set)

    def load(self, conn: Connection, keys: Collection[str]) -> None:
        self.suppressed = suppressed_hashes(conn, keys)
        rows = conn.execute(
            sa.select(subscribers).where(one_of(conn, subscribers.c.email_key, list(keys)))
        ).mappings()
        by_id: dict[int, _Draft] = {}
        for row in rows:
            draft = _Draft(id=row["id"], values=dict(row), subscriptions={})
            self.drafts[row["email_key"]] = by_id[row["id"]] = draft
        if not by_id:
            return
        for sub in conn.execute(
            sa.select(subscriptions)
            .where(one_of(conn, subscriptions.c.subscriber_id, list(by_id)))
        ).mappings():
            by_id[sub["subscriber_id"]].subscriptions[sub["newsletter"]] = _SubscriptionDraft(
                id=sub["id"], mode=sub["mode"], categories=sub["categories"]
            )

    def apply(self, row: _Row) -> _Outcome:
        detail = f"{self.detail_prefix}line {row.line}"
        if self.suppressed and not self._may_use(row):
            return _Outcome.UNCHANGED
        draft = self.drafts.get(row.address.key)
        if draft is None:
            draft = _Draft(
                id=None,
                values={
                    "email": row.address.email,
                    "email_key": row.address.key,
                    "name": row.name,
                    "source": Source.IMPORT.value,
                    "created_at": self.now,
                    "confirmed_at": None,
                    "unsubscribed_at": None,
                    "bounced_at": None,
                    "consecutive_failures": 0,
                    **status_change_values(row.status, self.now),
                },
                subscriptions={},
            )
            self.drafts[row.address.key] = draft
            self.events.append((draft, row.status.value, detail))
            self._subscribe(draft, row)
            return _Outcome.ADDED

        current = Status(draft.values["status"])
        target = next_status(current, row.status, resubscribe=self.resubscribe)
        if target is None and row.status in (Status.ACTIVE, Status.PENDING) and current in (
            Status.UNSUBSCRIBED, Status.BOUNCED
        ):
            # They left: a list that still has them changes nothing about them.
            self.not_resubscribed += 1
            return _Outcome.UNCHANGED
        changed = False
        if row.name and row.name != draft.values["name"]:
            draft.values["name"] = row.name
            changed = True
        if target is not None:
            draft.values.update(status_change_values(target, self.now))
            self.events.append((draft, target.value, detail))
            changed = True
        draft.dirty = draft.dirty or changed
        changed = self._subscribe(draft, row) or changed
        return _Outcome.UPDATED if changed else _Outcome.UNCHANGED

    def _may_use(self, row: _Row) -> bool:
        """False for a row of a forgotten address (nothing of it is stored), unless it
        asks to resubscribe with ``resubscribe``, which lifts the suppression."""
        hashed = suppression_hash(row.address.key)
        if hashed not in self.suppressed:
            return True
        wants_back = row.status in (Status.ACTIVE, Status.PENDING)
        if wants_back and self.resubscribe:
            self.suppressed.discard(hashed)
            self.lifted.add(hashed)
            return True
        if wants_back:
            self.not_resubscribed += 1
        return False

    def _subscribe(self, draft: _Draft, row: _Row) -> bool:
        if row.newsletter is None:
            return False
        sub = draft.subscriptions.get(row.newsletter)
        if sub is None:
            draft.subscriptions[row.newsletter] = _SubscriptionDraft(
                None, row.mode.value, row.categories, dirty=True
            )
            return True
        if (sub.mode, sub.categories) == (row.mode.value, row.categories):
            return False
        sub.mode, sub.categories, sub.dirty = row.mode.value, row.categories, True
        return True

    def flush(self, conn: Connection) -> None:
        lift_suppressions(conn, self.lifted)
        new = [d for d in self.drafts.values() if d.id is None]
        changed = [d for d in self.drafts.values() if d.dirty and d.id is not None]
        if new:
            # The batch holds the import lock (see _lock_for_import), and the keys of
            # ``new`` were looked up under it: none of them can be taken meanwhile,
            # so the rows go in with ids chosen here, in one COPY or executemany.
            ids = _new_ids(conn, len(new))
            for draft, key, new_id in zip(new, new_token_keys(len(new)), ids, strict=True):
                draft.values["token_key"] = key
                draft.id = new_id
                draft.values["id"] = new_id
            _write_rows(conn, subscribers, _SUBSCRIBER_COLUMNS,
                        [[d.values[name] for name in _SUBSCRIBER_COLUMNS] for d in new])
        if changed:
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == sa.bindparam("b_id"))
                .values({name: sa.bindparam(f"b_{name}") for name in _MUTABLE}),
                [
                    {"b_id": d.id, **{f"b_{name}": d.values[name] for name in _MUTABLE}}
                    for d in changed
                ],
            )
        source = Source.IMPORT.value
        _write_rows(
            conn,
            subscriber_events,
            ("subscriber_id", "at", "event", "source", "detail"),
            [[d.id, self.now, event, source, detail] for d, event, detail in self.events],
        )
        self._flush_subscriptions(conn)

    def _flush_subscriptions(self, conn: Connection) -> None:
        inserts: list[list[Any]] = []
        updates: list[dict[str, Any]] = []
        for draft in self.drafts.values():
            for newsletter, sub in draft.subscriptions.items():
                if not sub.dirty:
                    continue
                if sub.id is None:
                    inserts.append(
                        [draft.id, newsletter, sub.mode, sub.categories, self.now]
                    )
                else:
                    updates.append(
                        {"b_id": sub.id, "b_mode": sub.mode, "b_categories": sub.categories}
                    )
        _write_rows(
            conn, subscriptions,
            ("subscriber_id", "newsletter", "mode", "categories", "created_at"), inserts,
        )
        if updates:
            conn.execute(
                subscriptions.update()
                .where(subscriptions.c.id == sa.bindparam("b_id"))
                .values(mode=sa.bindparam("b_mode"), categories=sa.bindparam("b_categories")),
                updates,
            )


_SUBSCRIBER_COLUMNS = (
    "id", "email", "email_key", "name", "status", "source", "created_at", "status_changed_at",
    "confirmed_at", "unsubscribed_at", "bounced_at", "consecutive_failures", "token_key",
)


def _new_ids(conn: Connection, count: int) -> list[int]:
    """``count`` ids for new subscribers, which only this transaction will use.

    The batch holds the import lock, which keeps every other insert into
    ``subscribers`` (and so every other use of its id sequence) out: on
    PostgreSQL a block of the sequence is taken in one step, on SQLite
    (BEGIN IMMEDIATE: one writer) the ids after the largest, as SQLite would give.
    """
    if conn.dialect.name == "postgresql":
        last = conn.execute(sa.text(
            "SELECT setval(pg_get_serial_sequence('subscribers', 'id'), "
            "nextval(pg_get_serial_sequence('subscribers', 'id')) + :count - 1)"
        ), {"count": count}).scalar_one()
        return list(range(int(last) - count + 1, int(last) + 1))
    last = conn.execute(sa.select(sa.func.coalesce(sa.func.max(subscribers.c.id), 0))).scalar()
    start = int(last or 0) + 1
    return list(range(start, start + count))


def _write_rows(
    conn: Connection, table: sa.Table, columns: Sequence[str], rows: list[list[Any]]
) -> None:
    """Insert ``rows`` (values in the order of ``columns``) as fast as the database takes
    them: PostgreSQL's COPY, SQLite's executemany, without SQLAlchemy's per-row work.

    Values go through the columns' types as SQLAlchemy would convert them (UTCDateTime's
    checks and SQLite text), once per distinct object: a batch shares one ``now``."""
    if not rows:
        return
    converters = [
        (index, processor)
        for index, name in enumerate(columns)
        if (processor := table.c[name].type.dialect_impl(conn.dialect)
            .bind_processor(conn.dialect)) is not None
        and isinstance(table.c[name].type, UTCDateTime)
    ]
    for index, processor in converters:
        seen: dict[int, Any] = {}
        for row in rows:
            value = row[index]
            if value is not None:
                key = id(value)
                if key not in seen:
                    seen[key] = processor(value)
                row[index] = seen[key]
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        try:
            with driver.cursor() as cursor, cursor.copy(
                f"COPY {table.name} ({names}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as error:  # past SQLAlchemy: made one line here
            reason = str(error).strip().splitlines()
            raise StoreError(
                f"the database failed: {reason[0] if reason else type(error).__name__}"
            ) from error
        return
    marks = ", ".join("?" for _ in columns)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})",
                         [tuple(row) for row in rows])


def import_subscribers(
    store: Store,
    lines: Iterable[str],
    *,
    now: datetime,
    newsletters: Collection[str],
    default_newsletter: str | None = None,
    default_status: Status = Status.ACTIVE,
    resubscribe: bool = False,
    path: Path | str | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import subscribers from CSV ``lines`` (a file opened with ``newline=""``).

    ``newsletters`` are the names a row may subscribe to; rows without a
    ``newsletter`` column subscribe to ``default_newsletter``. A row without a
    status makes the subscriber ``default_status`` (active: the list's owner
    vouches for it), but never reactivates an unsubscribed or bounced address
    unless ``resubscribe``. A forgotten address is not stored again unless
    ``resubscribe`` is given and its row asks for active or pending. Invalid
    rows are skipped and reported with their line numbers. ``progress`` is
    called with the number of rows read so far.
    Raises CsvError when the file has no usable header.
    """
    reader = _RowReader(tuple(dict.fromkeys(newsletters)), default_newsletter, default_status)
    ignored: list[str] = []
    rows = _read_rows(lines, reader, path, ignored)
    counts = dict.fromkeys(_Outcome, 0)
    problems: list[ImportProblem] = []
    not_resubscribed = 0
    done = 0
    detail_prefix = f"{Path(path).name} " if path is not None else ""
    while chunk := list(islice(rows, batch_size)):
        valid = [r for r in chunk if isinstance(r, _Row)]
        problems.extend(r for r in chunk if isinstance(r, ImportProblem))
        if valid:
            batch = _Batch(now=now, resubscribe=resubscribe, detail_prefix=detail_prefix)
            with store.write() as conn:
                _set_cache(conn, IMPORT_CACHE_KIB)
                _lock_for_import(conn)
                batch.load(conn, {r.address.key for r in valid})
                for row in valid:
                    counts[batch.apply(row)] += 1
                batch.flush(conn)
            not_resubscribed += batch.not_resubscribed
        done += len(chunk)
        if progress is not None:
            progress(done)
    if store.dialect == "sqlite":
        with store.read() as conn:
            _set_cache(conn, None)  # the pooled connection goes back to the default
    return ImportReport(
        added=counts[_Outcome.ADDED],
        updated=counts[_Outcome.UPDATED],
        unchanged=counts[_Outcome.UNCHANGED],
        skipped=tuple(problems),
        not_resubscribed=not_resubscribed,
        ignored_columns=tuple(ignored),
    )


IMPORT_CACHE_KIB = 64 * 1024
"""SQLite's page cache while a batch is written: the unique index of a million addresses
(~50 MB) is written in random order, and SQLite's default 2 MB makes every insert a read."""


def _set_cache(conn: Connection, kib: int | None) -> int | None:
    """SQLite: set the page cache to ``kib`` (None: SQLite's default); returns the size before."""
    if conn.dialect.name != "sqlite":
        return None
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size = {-kib if kib else -2000}")
    return int(before) if before is not None else None


def _lock_for_import(conn: Connection) -> None:
    """Keep other writers of these tables out while a batch reads then writes them.

    SQLite's BEGIN IMMEDIATE already does; PostgreSQL needs a table lock (readers
    are not blocked).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "LOCK TABLE subscribers, subscriptions, suppressed_addresses "
            "IN SHARE ROW EXCLUSIVE MODE"
        )


# --- export ------------------------------------------------------------------------


def export_subscribers(conn: Connection, out: TextIO, *, status: Status | None = None) -> int:
    """Write every subscriber (one row per subscription) as CSV that the import reads back.

    Forgotten subscribers have nothing left to export and are left out.
    Returns the number of rows written.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    query = (
        sa.select(
            subscribers.c.email, subscribers.c.name, subscribers.c.status,
            subscriptions.c.newsletter, subscriptions.c.mode, subscriptions.c.categories,
        )
        .select_from(subscribers.outerjoin(subscriptions))
        .where(subscribers.c.email_key.not_like(f"%@{FORGOTTEN_DOMAIN}"))
        .order_by(subscribers.c.id, subscriptions.c.newsletter)
    )
    if status is not None:
        query = query.where(subscribers.c.status == status.value)
    written = 0
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(query)
    for email, name, status_value, newsletter, mode, categories in result:
        category_cell = ",".join(decode_categories(categories)) if categories else ""
        writer.writerow(
            [email, name or "", status_value, newsletter or "", mode or "", category_cell]
        )
        written += 1
    return written
