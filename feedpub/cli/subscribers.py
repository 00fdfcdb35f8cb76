"""`feedpub subscribers`: add, import, export, list and remove subscribers."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click

from feedpub.cli._common import NOW_OPTION, is_interactive, main, parse_now, settings_from
from feedpub.config import Settings
from feedpub.progress import progress_bar
from feedpub.store import (
    InvalidAddress,
    Mode,
    Source,
    Status,
    Store,
    Subscriber,
    Subscription,
    add_subscriber,
    export_subscribers,
    find_subscriber,
    forget_subscriber,
    import_subscribers,
    iter_subscribers_with_subscriptions,
    open_store,
    parse_address,
    set_subscription,
    unsubscribe_subscriber,
)

STATUS_CHOICE = click.Choice([s.value for s in Status])


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    store = open_store(settings.database.url)
    try:
        yield store
    finally:
        store.close()


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)


@main.group()
def subscribers() -> None:
    """Add, import, export, list and remove the people who get your newsletters.

    \b
    Examples:
        feedpub subscribers add ada@example.com "Grace <grace@example.org>" --confirmed
        feedpub subscribers add ada@example.com --newsletter daily --mode instant
        feedpub subscribers import list.csv
        feedpub subscribers export > backup.csv
        feedpub subscribers list --status active --json
        feedpub subscribers remove ada@example.com            # unsubscribes
        feedpub subscribers remove --forget ada@example.com   # erases personal data
    """


@subscribers.command("add")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@click.option("--confirmed", is_flag=True,
              help="Active at once (they agreed elsewhere); otherwise pending until confirmed.")
@click.option("--newsletter", metavar="NAME",
              help="Which newsletter (default: the first in feedpub.toml).")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=Mode.DIGEST.value,
              show_default=True, help="One email per edition, or one per new post.")
@click.option("--categories", metavar="A,B", default="",
              help="Only posts in these categories (default: all).")
@click.option("--name", metavar="NAME", help="The subscriber's name (one address only).")
@click.option("--resubscribe", is_flag=True,
              help="Reactivate addresses that unsubscribed or bounced (only if they asked).")
@NOW_OPTION
@click.pass_context
def add_command(
    ctx: click.Context, emails: tuple[str, ...], confirmed: bool, newsletter: str | None,
    mode: str, categories: str, name: str | None, resubscribe: bool, now: str | None,
) -> None:
    """Add subscribers by address; `Name <address>` keeps the name.

    An invalid address is reported and skipped; the others are added, and the
    exit status is 1.

    \b
        feedpub subscribers add ada@example.com bob@example.org
        feedpub subscribers add "Ada Lovelace <ada@example.com>" --confirmed
        feedpub subscribers add ada@example.com --mode instant --categories python,web
    """
    settings = settings_from(ctx)
    chosen = settings.newsletter(newsletter)
    if name is not None and len(emails) > 1:
        raise click.UsageError("--name names one subscriber; give one EMAIL with it")
    at = parse_now(now)
    status = Status.ACTIVE if confirmed else Status.PENDING
    failed = False
    with _store(settings) as store:
        for email in emails:
            try:
                address = parse_address(
                    email, allow_local=settings.mail.allow_local_addresses
                )
                with store.write() as conn:
                    result = add_subscriber(
                        conn, address, now=at, name=name, status=status, source=Source.CLI,
                        resubscribe=resubscribe,
                    )
                    if not result.refused:
                        set_subscription(
                            conn, result.subscriber.id, chosen.name, now=at, mode=Mode(mode),
                            categories=categories.split(","),
                        )
            except InvalidAddress as exc:
                _fail(str(exc))
                failed = True
                continue
            subscriber = result.subscriber
            if result.refused:
                _fail(
                    f"{subscriber.email} is {subscriber.status.value} since "
                    f"{subscriber.status_changed_at:%Y-%m-%d}; not resubscribed "
                    "(add --resubscribe if they asked to come back)"
                )
                failed = True
            elif result.created:
                click.echo(f"added {subscriber.email} ({subscriber.status.value}, {chosen.name})")
            else:
                click.echo(
                    f"updated {subscriber.email} ({subscriber.status.value}, {chosen.name})"
                )
    if failed:
        ctx.exit(1)


def _count_rows(path: Path) -> int:
    with path.open("rb") as counting:
        return max(sum(1 for _ in counting) - 1, 0)


@subscribers.command("import")
@click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
    metavar="FILE.csv",
)
@click.option("--resubscribe", is_flag=True,
              help="Let rows reactivate unsubscribed or bounced addresses.")
@NOW_OPTION
@click.pass_context
def import_command(ctx: click.Context, file: Path, resubscribe: bool, now: str | None) -> None:
    """Import subscribers from a CSV file (UTF-8, header row; `-` reads stdin).

    \b
        feedpub subscribers import list.csv
        feedpub subscribers export | ssh new-host feedpub subscribers import -

    \b
    Columns (only email is required):
        email       ada@example.com, or "Ada Lovelace <ada@example.com>"
        name        Ada Lovelace
        status      pending | active | unsubscribed | bounced   (empty: active)
        newsletter  a [[newsletter]] name (no such column: the first newsletter;
                    an empty cell: no subscription)
        mode        digest | instant                            (empty: digest)
        categories  python,web                                  (empty: all)

    A subscriber to two newsletters takes two rows. Importing the same file
    twice changes nothing, and no row turns an unsubscribed or bounced address
    back to active unless --resubscribe is given. Invalid rows are reported
    with their line numbers and skipped; the rest are imported, and the exit
    status is then 1.
    """
    settings = settings_from(ctx)
    at = parse_now(now)
    names = [n.name for n in settings.newsletters]
    stdin = str(file) == "-"
    interactive = is_interactive() and not stdin
    total = _count_rows(file) if interactive else 0
    with _store(settings) as store, progress_bar("importing", enabled=interactive) as update:
        handle: TextIO
        if stdin:
            handle = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
        else:
            try:
                handle = file.open(encoding="utf-8-sig", newline="")
            except OSError as exc:
                raise click.FileError(str(file), hint=exc.strerror) from None
        with handle:
            report = import_subscribers(
                store, handle, now=at, newsletters=names, default_newsletter=names[0],
                resubscribe=resubscribe, path=None if stdin else file,
                progress=lambda done: update(done, max(done, total)),
            )
    where = "stdin" if stdin else str(file)
    for problem in report.skipped:
        _fail(f"{where}:{problem.line}: {problem.message}")
    if report.ignored_columns:
        click.echo(f"note: ignored columns: {', '.join(report.ignored_columns)}", err=True)
    click.echo(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"skipped {len(report.skipped)}"
    )
    if report.not_resubscribed:
        click.echo(
            f"{report.not_resubscribed} row(s) asked to reactivate unsubscribed or bounced "
            "addresses and were left as they are (--resubscribe to allow)"
        )
    if report.skipped:
        ctx.exit(1)


@subscribers.command("export")
@click.option("--status", type=STATUS_CHOICE, help="Only subscribers with this status.")
@click.pass_context
def export_command(ctx: click.Context, status: str | None) -> None:
    """Write every subscriber as CSV to stdout; `subscribers import` reads it back.

    \b
        feedpub subscribers export > subscribers.csv
    """
    settings = settings_from(ctx)
    with _store(settings) as store, store.read() as conn:
        export_subscribers(conn, sys.stdout, status=Status(status) if status else None)


def _as_json(subscriber: Subscriber, subs: list[Subscription]) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status.value,
        "source": subscriber.source,
        "created_at": iso(subscriber.created_at),
        "status_changed_at": iso(subscriber.status_changed_at),
        "confirmed_at": iso(subscriber.confirmed_at),
        "unsubscribed_at": iso(subscriber.unsubscribed_at),
        "bounced_at": iso(subscriber.bounced_at),
        "subscriptions": [
            {"newsletter": s.newsletter, "mode": s.mode.value, "categories": list(s.categories)}
            for s in subs
        ],
    }


@subscribers.command("list")
@click.option("--status", type=STATUS_CHOICE, help="Only subscribers with this status.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
@click.pass_context
def list_command(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """List subscribers: address, status, name and newsletters.

    \b
        feedpub subscribers list --status pending
        feedpub subscribers list --json | jq '.[].email'
    """
    settings = settings_from(ctx)
    with _store(settings) as store, store.read() as conn:
        rows = iter_subscribers_with_subscriptions(
            conn, status=Status(status) if status else None
        )
        if as_json:
            click.echo("[", nl=False)
            for index, (subscriber, subs) in enumerate(rows):
                separator = "," if index else ""
                click.echo(separator + "\n  " + json.dumps(_as_json(subscriber, subs),
                                                          ensure_ascii=False), nl=False)
            click.echo("\n]")
            return
        for subscriber, subs in rows:
            newsletters = ",".join(
                s.newsletter + (f"({s.mode.value})" if s.mode != Mode.DIGEST else "")
                for s in subs
            )
            click.echo(
                "\t".join([subscriber.email, subscriber.status.value, newsletters or "-",
                           subscriber.name or ""]).rstrip("\t"),
            )


@subscribers.command("remove")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@click.option("--forget", is_flag=True,
              help="Erase the address and name too (right to erasure); cannot be undone.")
@NOW_OPTION
@click.pass_context
def remove_command(
    ctx: click.Context, emails: tuple[str, ...], forget: bool, now: str | None
) -> None:
    """Unsubscribe addresses (the record of their consent stays), or --forget them.

    \b
        feedpub subscribers remove ada@example.com
        feedpub subscribers remove --forget ada@example.com
    """
    settings = settings_from(ctx)
    at = parse_now(now)
    failed = False
    with _store(settings) as store:
        for email in emails:
            try:
                with store.write() as conn:
                    found = find_subscriber(conn, email)
                    if found is None:
                        _fail(f"no subscriber {email.strip()!r}")
                        failed = True
                        continue
                    if forget:
                        forget_subscriber(conn, found.id, now=at, source=Source.CLI)
                        click.echo(f"forgot {found.email}")
                    elif found.status == Status.UNSUBSCRIBED:
                        click.echo(f"already unsubscribed: {found.email}")
                    else:
                        unsubscribe_subscriber(conn, found.id, now=at, source=Source.CLI)
                        click.echo(f"unsubscribed {found.email}")
            except InvalidAddress as exc:
                _fail(str(exc))
                failed = True
    if failed:
        ctx.exit(1)
