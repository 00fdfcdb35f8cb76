"""Alembic, driven from code: the migrations ship inside the package, no alembic.ini."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine

from feedpub.errors import StoreError
from feedpub.store.engine import read_transaction, write_transaction

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any constant shared by every feedpub process: serialises concurrent upgrades on PostgreSQL.
_PG_UPGRADE_LOCK = 0x66656564707562


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise StoreError(f"feedpub's migrations have {len(heads)} heads; expected one")
    return heads[0]


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None for an empty database."""
    heads = MigrationContext.configure(connection).get_current_heads()
    return heads[0] if heads else None


def is_current(engine: Engine) -> bool:
    with read_transaction(engine) as connection:
        return current_revision(connection) == head_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Migrate to ``revision`` in one transaction; returns the revision the database is at.

    Two processes upgrading at once take turns: the second finds nothing to do.
    """
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_UPGRADE_LOCK}
            )
        _check_known(connection)
        try:
            command.upgrade(alembic_config(connection), revision)
        except CommandError as exc:
            raise StoreError(f"cannot migrate the database to {revision!r}: {exc}") from None
        now_at = current_revision(connection)
    return now_at or ""


def _check_known(connection: Connection) -> None:
    current = current_revision(connection)
    if current is None:
        return
    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise StoreError(
            f"the database is at migration {current!r}, which this feedpub does not know: "
            "it was upgraded by a newer feedpub; upgrade feedpub itself"
        )
