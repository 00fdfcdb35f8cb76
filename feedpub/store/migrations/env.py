"""Alembic's entry point: runs on the connection that feedpub.store.migrate passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "feedpub's migrations run through `feedpub db upgrade` or feedpub.store.open_store, "
        "which pass in a connection; the alembic command line is not supported"
    )

context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
