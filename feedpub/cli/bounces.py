"""`feedpub bounces`: hear back about sent mail (fetch over IMAP, read from an MTA, list)."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from feedpub.cli._common import NOW_OPTION, main, parse_now, settings_from

if TYPE_CHECKING:
    from feedpub.store.events import DeliveryEvent

EX_TEMPFAIL = 75
"""sysexits.h: "try again later". Postfix and Exim keep the message and retry."""
KINDS = ("hard", "soft", "complaint")


@main.group()
def bounces() -> None:
    """Bounces and complaints that come back after sending.

    Reports arrive three ways: `bounces fetch` reads a bounce mailbox over IMAP
    (from cron or `feedpub schedule`), `bounces read` takes one message from an
    MTA's pipe, and `feedpub serve` takes the webhooks of Amazon SES, Postmark,
    Mailgun and SendGrid. A hard bounce marks the subscriber bounced, enough
    soft ones do too ([mail] soft_bounce_limit within soft_bounce_days), a
    complaint unsubscribes and suppresses the address.
    """


@bounces.command("fetch")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Handle at most this many messages in this run.")
@NOW_OPTION
@click.pass_context
def fetch_command(ctx: click.Context, limit: int | None, now: str | None) -> None:
    """Read the bounce mailbox ([bounces] imap_host…) and handle each report once.

    The password is read from the environment variable named by
    bounces.imap_password_env (FEEDPUB_IMAP_PASSWORD). Runs that overlap
    handle each message once; bounces.after says what happens to it then.

    \b
        FEEDPUB_IMAP_PASSWORD=… feedpub bounces fetch
        */10 * * * *  cd /srv/site && feedpub bounces fetch   # crontab
    """
    from feedpub.bounce_mailbox import fetch_bounces
    from feedpub.store import open_store

    settings = settings_from(ctx)
    moment = parse_now(now) if now else None
    store = open_store(settings.database.url)
    try:
        report = fetch_bounces(
            settings, store, clock=(lambda: moment) if moment else _utc_now, env=os.environ,
            limit=limit,
        )
    finally:
        store.close()
    click.echo(
        f"{report.messages} messages: {report.events} events, {len(report.bounced)} bounced, "
        f"{len(report.unsubscribed)} unsubscribed (complaints), {report.ignored} ignored, "
        f"{report.unmatched} about unknown addresses, {report.duplicates} handled before"
    )


@bounces.command("read")
@click.option("--recipient", metavar="ADDRESS", default=None,
              help="The envelope recipient the MTA delivered to (e.g. Postfix's "
                   "${original_recipient}): its VERP token names the delivery.")
@NOW_OPTION
@click.pass_context
def read_command(ctx: click.Context, recipient: str | None, now: str | None) -> None:
    """Handle one report given on standard input, for an MTA's pipe transport.

    \b
    Exit status, for the MTA:
      0   handled, or handled before, or not a report at all (junk and
          auto-replies are dropped on purpose: retrying would not help)
      75  EX_TEMPFAIL: a temporary failure (the database is down, the
          settings cannot be read); the MTA keeps the message and retries

    \b
        # Postfix master.cf
        feedpub unix - n n - - pipe
          user=feedpub argv=/usr/local/bin/feedpub --site /srv/site bounces read
          --recipient ${original_recipient}
    """
    raw = sys.stdin.buffer.read()
    try:
        _read(ctx, raw, recipient, now)
    except Exception as error:  # noqa: BLE001 - every failure here must be a retry, not a bounce
        click.echo(f"error: {error}; exit {EX_TEMPFAIL} so that the MTA tries again", err=True)
        ctx.exit(EX_TEMPFAIL)


def _read(ctx: click.Context, raw: bytes, recipient: str | None, now: str | None) -> None:
    from feedpub.bounces import Policy, apply_report, parse_message
    from feedpub.store import open_store

    settings = settings_from(ctx)
    moment = parse_now(now)
    report = parse_message(raw, secret=settings.secret,
                           verp_local_part=settings.mail.verp_local_part,
                           envelope_recipient=recipient)
    store = open_store(settings.database.url)
    try:
        with store.write() as conn:
            applied = apply_report(conn, report, now=moment,
                                   policy=Policy.from_mail(settings.mail))
    finally:
        store.close()
    if applied.duplicate:
        click.echo(f"{report.key}: handled before")
    elif not report.findings:
        click.echo(f"{report.key}: ignored ({report.ignored})")
    else:
        click.echo(f"{report.key}: {applied.stored} events, {len(applied.bounced)} bounced, "
                   f"{len(applied.unsubscribed)} unsubscribed, {applied.unmatched} unknown")


@bounces.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show this many events, newest first.")
@click.option("--kind", "kinds", type=click.Choice(KINDS), multiple=True,
              help="Only events of this kind (repeat for several).")
@click.option("--email", metavar="ADDRESS", default=None,
              help="Only the events of this subscriber (what a data request returns).")
@click.option("--json", "as_json", is_flag=True, help="One JSON list, for scripts.")
@click.pass_context
def list_command(ctx: click.Context, limit: int, kinds: tuple[str, ...], email: str | None,
                 as_json: bool) -> None:
    """Show the most recent bounces and complaints.

    \b
        feedpub bounces list
        feedpub bounces list --kind complaint --limit 100
        feedpub bounces list --email ada@example.com --json
    """
    from feedpub.store import find_subscriber, open_existing_store
    from feedpub.store.events import recent_events
    from feedpub.store.schema import EventKind

    settings = settings_from(ctx)
    store = open_existing_store(settings.database.url)
    found: list[DeliveryEvent] = []
    if store is not None:
        try:
            with store.read() as conn:
                subscriber_id = None
                if email is not None:
                    subscriber = find_subscriber(conn, email)
                    subscriber_id = subscriber.id if subscriber else -1
                found = recent_events(conn, limit=limit, kinds=[EventKind(k) for k in kinds],
                                      subscriber_id=subscriber_id)
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps([_event_document(e) for e in found], indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo("no bounces or complaints yet")
        return
    for event in found:
        edition = f"{event.newsletter}/{event.edition}" if event.newsletter else "-"
        click.echo(f"{event.at:%Y-%m-%d %H:%M} {event.kind.value:<9} {event.email} "
                   f"{edition} {event.status_code or '-'} {event.reason[:100]}")


def _event_document(event: DeliveryEvent) -> dict[str, object]:
    from feedpub.schedules import utc_iso

    return {
        "at": utc_iso(event.at), "kind": event.kind.value, "source": event.source,
        "email": event.email, "newsletter": event.newsletter, "edition": event.edition,
        "status_code": event.status_code, "reason": event.reason,
    }


def _utc_now() -> datetime:
    return datetime.now(UTC)
