"""`feedpub db`: the database's migrations."""

from __future__ import annotations

import click

from feedpub.cli._common import main, settings_from
from feedpub.store import head_revision, open_store
from feedpub.store.migrate import current_revision


@main.group()
def db() -> None:
    """Look after the database (feedpub.db, or [database] url in feedpub.toml).

    Migrations also run by themselves the first time any command opens the
    database; `db upgrade` runs them on purpose, e.g. right after installing
    a new feedpub and before starting workers.
    """


@db.command("upgrade")
@click.pass_context
def upgrade_command(ctx: click.Context) -> None:
    """Apply the migrations this feedpub ships that the database lacks. Keeps all data.

    \b
        feedpub db upgrade
        FEEDPUB_DATABASE_URL=postgresql+psycopg://feedpub@db/feedpub feedpub db upgrade
    """
    settings = settings_from(ctx)
    store = open_store(settings.database.url, migrate=False)
    try:
        with store.read() as conn:
            before = current_revision(conn)
        after = store.upgrade()
    finally:
        store.close()
    if before == after:
        click.echo(f"{store.url}: already at the latest revision ({after})")
    else:
        click.echo(f"{store.url}: upgraded from {before or 'an empty database'} to {after}")
    if after != head_revision():
        raise click.ClickException(f"expected revision {head_revision()}, got {after}")
