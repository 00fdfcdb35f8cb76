"""The engine and the Store: SQLite settings, PostgreSQL schemas, and writers that
share one database without "database is locked"."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from feedpub.errors import StoreError
from feedpub.store import (
    Status,
    add_subscriber,
    count_by_status,
    insert_ignoring_conflicts,
    iter_subscribers,
    open_store,
)
from feedpub.store.schema import send_rate, subscriptions

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_sqlite_connections_use_wal_a_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'feedpub.db'}") as store, store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_foreign_keys_are_enforced(database_url: str) -> None:


    with (
        open_store(database_url) as store,
        pytest.raises(StoreError, match=r"(?i)foreign key"),
        store.write() as conn,
    ):
        conn.execute(subscriptions.insert().values(
            subscriber_id=12345, newsletter="weekly", mode="digest", created_at=NOW))


def test_a_write_that_fails_leaves_nothing_behind(database_url: str) -> None:
    with open_store(database_url) as store:
        with pytest.raises(RuntimeError), store.write() as conn:
            add_subscriber(conn, "ada@example.com", now=NOW)
            raise RuntimeError("boom")
        with store.read() as conn:
            assert sum(count_by_status(conn).values()) == 0


def test_opening_again_keeps_the_data(database_url: str) -> None:
    with open_store(database_url) as store, store.write() as conn:
        add_subscriber(conn, "ada@example.com", now=NOW, status=Status.ACTIVE)
    with open_store(database_url) as store, store.read() as conn:
        assert [s.email for s in iter_subscribers(conn)] == ["ada@example.com"]


def test_insert_ignoring_conflicts_on_both_databases(database_url: str) -> None:
    with open_store(database_url) as store, store.write() as conn:
        for value in (1.5, 2.5):
            conn.execute(
                insert_ignoring_conflicts(conn, send_rate)
                .values(name="mail", next_slot_at=value)
                .on_conflict_do_nothing(index_elements=["name"])
            )
        assert conn.execute(sa.select(send_rate.c.next_slot_at)).scalars().all() == [1.5]


def test_postgres_tables_live_in_the_schema_of_the_url(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    with open_store(database_url) as store, store.read() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        tables = set(conn.execute(
            sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": schema},
        ).scalars())
    assert schema != "public"
    assert {"alembic_version", "subscribers", "subscriber_events", "subscriptions", "editions",
            "announced_entries", "deliveries", "send_rate"} <= tables


def test_threads_writing_at_once_all_succeed(database_url: str) -> None:
    errors: list[BaseException] = []
    with open_store(database_url) as store:
        barrier = threading.Barrier(4)

        def writer(n: int) -> None:
            try:
                barrier.wait()
                for i in range(15):
                    with store.write() as conn:
                        add_subscriber(conn, f"w{n}-{i}@example.com", now=NOW)
                        # a read before the write's end, as the web app does
                        count_by_status(conn)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with store.read() as conn:
            assert count_by_status(conn)[Status.PENDING] == 60


CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from feedpub.store import add_subscriber, open_store
    store = open_store(sys.argv[1])
    print("ready", flush=True)
    with store.write() as conn:
        add_subscriber(conn, "child@example.com", now=datetime(2026, 1, 5, tzinfo=UTC))
    print("done", flush=True)
    """
)


def test_another_process_waits_for_a_long_write_instead_of_failing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'feedpub.db'}"
    with open_store(url) as store:
        with store.write() as conn:
            add_subscriber(conn, "parent@example.com", now=NOW)
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, url],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            # The child is now trying to write and must wait for this transaction.
            assert child.poll() is None
            threading.Event().wait(0.5)
            add_subscriber(conn, "parent2@example.com", now=NOW)
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert "locked" not in err
        assert out.strip() == "done"
        with store.read() as conn:
            emails = sorted(s.email for s in iter_subscribers(conn))
    assert emails == ["child@example.com", "parent2@example.com", "parent@example.com"]


def test_a_claim_reads_the_due_index_not_the_whole_queue(database_url: str) -> None:
    """With many deliveries sent and some queued, the claim's query reads
    ix_deliveries_due in claim order (no sort of every due row): its statuses are
    literals, which imply the partial index's WHERE on both databases."""
    from feedpub.store import queue

    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    with open_store(database_url) as store:
        with store.write() as conn:
            conn.execute(sa.text(
                "INSERT INTO editions (id, newsletter, kind, period_key, created_at, subject, "
                "html, text, status) VALUES (1, 'weekly', 'digest', 'k', '2026-01-01', 's', "
                "'h', 't', 'ready')"))
            numbers = ("generate_series(1, 3000) AS g(n)" if store.dialect == "postgresql"
                       else "(WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
                       "WHERE n < 3000) SELECT n FROM g) AS g")
            conn.execute(sa.text(
                "INSERT INTO subscribers (id, email, email_key, status, source, created_at, "
                "status_changed_at) SELECT n, 'r' || n || '@example.org', "
                "'r' || n || '@example.org', 'active', 'cli', '2026-01-01', '2026-01-01' "
                f"FROM {numbers}"))
            conn.execute(sa.text(
                "INSERT INTO deliveries (edition_id, subscriber_id, status, attempts, "
                "next_attempt_at) SELECT 1, id, CASE WHEN id % 10 = 0 THEN 'queued' "
                "ELSE 'sent' END, 0, '2026-01-01' FROM subscribers"))
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        statement = queue.claimable(now, 100)
        with store.engine.connect() as conn:
            compiled = statement.compile(conn, compile_kwargs={"render_postcompile": True})
            sql = str(compiled)
            assert "'queued', 'retrying'" in sql
            raw = conn.connection.driver_connection
            assert raw is not None
            if store.dialect == "sqlite":
                # SQLite weighs the partial index against the status index by ANALYZE's
                # figures; it must at least be able to use it for this query.
                params = tuple(compiled.params[name] for name in compiled.positiontup or ())
                indexed = sql.replace("FROM deliveries", "FROM deliveries INDEXED BY "
                                      "ix_deliveries_due")
                plan = " ".join(
                    str(row[-1]) for row in raw.execute("EXPLAIN QUERY PLAN " + indexed, params)
                )
                assert "ix_deliveries_due" in plan and "TEMP B-TREE" not in plan, plan
            else:
                conn.exec_driver_sql("SET enable_seqscan = off")  # a small table: no shortcut
                rows = conn.execute(sa.text("EXPLAIN " + str(statement.compile(
                    conn, compile_kwargs={"literal_binds": True}))))
                plan = " ".join(row[0] for row in rows)
                assert "ix_deliveries_due" in plan and "Sort" not in plan, plan
        with store.write() as conn:
            claimed = queue.claim(conn, worker="w", now=now, limit=100)
        assert [c.subscriber_id for c in claimed] == list(range(10, 1001, 10))
