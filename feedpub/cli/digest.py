"""``feedpub digest send`` and ``feedpub worker``: make the editions that are due, send them."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime
from typing import TYPE_CHECKING

import click

from feedpub.cli._common import (
    NOW_OPTION,
    is_interactive,
    main,
    parse_now,
    settings_from,
    stop_on_signals,
)
from feedpub.config import Settings

# The library is imported inside the commands: every `feedpub` command loads this
# module, and the mail and database stack takes most of a second to import.
if TYPE_CHECKING:
    from feedpub.digest import DigestReport, EditionSummary
    from feedpub.sender import SendReport

CONCURRENCY_OPTION = click.option(
    "--concurrency", "-c", type=click.IntRange(1, 64), default=4, show_default=True,
    help="Messages in flight at once (keep it at or below the SMTP pool size in "
         "mail.transport, ?pool=N).",
)


@main.group()
def digest() -> None:
    """Make email editions from new posts and send them to subscribers."""


def _describe(edition: EditionSummary, dry_run: bool) -> str:
    would = "would " if dry_run else ""
    name = edition.newsletter
    if edition.kind == "baseline":
        return (f"{name}: first run: {would}record {edition.baselined} existing entries as "
                "already announced; nothing is mailed")
    if edition.kind == "empty":
        return f"{name}: {edition.period_key}: nothing new; no digest"
    if edition.kind == "missed":
        return (f"{name}: {edition.period_key}: noticed after scheduler.misfire_grace_hours; "
                "skipped, its entries wait for the next digest")
    titles = "; ".join(edition.entry_titles[:3])
    if len(edition.entry_titles) > 3:
        titles += f"; … ({len(edition.entry_titles)} entries)"
    what = "digest" if edition.kind == "digest" else "post"
    variants = f" in {edition.variants + 1} category variants" if edition.variants else ""
    queued = "be queued" if dry_run else "queued"
    return (f"{name}: {what} {edition.period_key}: {titles} — {would}{queued} for "
            f"{edition.recipients} subscriber{'s' if edition.recipients != 1 else ''}{variants}")


def _print_report(report: DigestReport) -> None:
    for edition in report.noteworthy:
        click.echo(_describe(edition, report.dry_run))
    for refusal in report.refused:
        for finding in refusal.findings:
            click.echo(f"error: {finding.path}:{finding.line}: {finding.message}", err=True)
        click.echo(
            f"error: {refusal.newsletter}: not sending {refusal.source}: `feedpub check` finds "
            "errors in it; fix them, or send it anyway with --force",
            err=True,
        )
    for error in report.content_errors:
        click.echo(f"error: {error}", err=True)
    if report.content_errors:
        click.echo(
            f"error: {len(report.content_errors)} post(s) cannot be read and are left out; "
            "run `feedpub check`",
            err=True,
        )


def _print_send(report: SendReport) -> None:
    for failure in report.failures:
        click.echo(f"failed: {failure.reply}", err=True)
    if report.failed > len(report.failures):
        click.echo(f"failed: … and {report.failed - len(report.failures)} more", err=True)
    if report.outage:
        click.echo(
            f"error: the mail server is unreachable ({report.outage}); {report.queued} "
            "message(s) stay queued for the next run",
            err=True,
        )


def _print_closing(transport: object) -> None:
    """What closing the mail server's connections had to cut short (a QUIT unanswered)."""
    note = getattr(transport, "closing_note", None)
    if note:
        click.echo(f"note: {note}", err=True)


@digest.command("send")
@click.option("--newsletter", "-n", metavar="NAME",
              help="Only this newsletter (default: every one in feedpub.toml).")
@click.option("--dry-run", is_flag=True,
              help="Show what would be made and sent, and to how many; change nothing.")
@NOW_OPTION
@click.option("--force", is_flag=True,
              help="Send posts even when `feedpub check` finds errors in them.")
@click.option("--queue-only", is_flag=True,
              help="Make and queue the editions that are due; leave sending to `feedpub worker`.")
@CONCURRENCY_OPTION
@click.pass_context
def send(
    ctx: click.Context,
    newsletter: str | None,
    dry_run: bool,
    now: str | None,
    force: bool,
    queue_only: bool,
    concurrency: int,
) -> None:
    """Make the editions that are due, then send every queued message.

    A digest is made once per slot of the newsletter's `schedule` (cron, in
    site.timezone), instant subscribers get each new post at the next run, and
    the first run of a newsletter only records the posts that exist (nothing
    is mailed). Safe to run from cron every minute: runs at the same time
    share the work and never send a message twice.

    \b
    Exit status: 0 all sent; 1 a message failed for good, the mail server was
    unreachable (the rest stays queued for the next run), a post cannot be read
    (it is left out, as `feedpub build` leaves it out), or a post was held back
    because `feedpub check` finds errors in it.

    \b
    Examples:
        feedpub digest send --dry-run
        feedpub digest send --newsletter weekly
        * * * * * cd /srv/blog && feedpub digest send      # crontab
    """
    from feedpub.digest import run_once
    from feedpub.mail.transports import open_transport
    from feedpub.progress import progress_bar
    from feedpub.sender import SendOptions, offset_clock
    from feedpub.store import open_store

    settings = settings_from(ctx)
    moment = parse_now(now)
    if dry_run:
        _dry_run(settings, moment, newsletter)
        return
    store = open_store(settings.database.url)
    try:
        with ExitStack() as stack:
            stop = stack.enter_context(stop_on_signals())
            transport = None if queue_only else stack.enter_context(
                open_transport(settings.mail.transport)
            )
            progress = stack.enter_context(progress_bar("Sending", enabled=is_interactive()))
            report = run_once(
                settings, store, clock=offset_clock(moment), transport=transport, stop=stop,
                newsletter=newsletter, force=force,
                options=SendOptions(concurrency=concurrency), progress=progress,
            )
    finally:
        store.close()
    _print_closing(transport)
    _print_report(report.digest)
    made = f"{len(report.digest.made)} edition(s) made"
    if report.send is None:
        click.echo(f"{made}; sending is left to `feedpub worker`")
    else:
        _print_send(report.send)
        click.echo(f"{made}; {_counts(report.send)}")
    if (
        report.digest.refused
        or report.digest.content_errors
        or (report.send is not None and not report.send.ok)
    ):
        ctx.exit(1)


def _counts(report: SendReport) -> str:
    return (
        f"sent {report.sent}, retrying {report.retrying}, failed {report.failed}, "
        f"skipped {report.skipped}"
        + (f"; {report.bounced} subscriber(s) now bounced" if report.bounced else "")
        + (f"; {report.returned} left queued" if report.returned else "")
    )


def _dry_run(settings: Settings, moment: datetime, newsletter: str | None) -> None:
    from feedpub.catalog import load_catalog
    from feedpub.digest import make_editions
    from feedpub.store import open_existing_store, queue

    store = open_existing_store(settings.database.url)
    if store is None:
        catalog = load_catalog(settings, moment)
        names = [newsletter] if newsletter else [n.name for n in settings.newsletters]
        for name in names:
            settings.newsletter(name)
            click.echo(
                f"{name}: first run: would record {len(catalog.published)} existing entries "
                "as already announced; nothing is mailed"
            )
        return
    try:
        report = make_editions(settings, store, moment, newsletter=newsletter, dry_run=True)
        _print_report(report)
        with store.read() as conn:
            due = queue.count_due(conn, moment, newsletter=newsletter)
    finally:
        store.close()
    click.echo(
        f"would also send {due} message(s) already queued before this run"
        if due else "nothing queued from earlier runs"
    )


@main.command()
@CONCURRENCY_OPTION
@click.option("--once", is_flag=True, help="Send what is due, then exit.")
@click.option("--poll", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds between looks at an empty queue.")
@click.option("--newsletter", "-n", metavar="NAME", help="Only this newsletter's messages.")
@click.pass_context
def worker(
    ctx: click.Context, concurrency: int, once: bool, poll: float, newsletter: str | None
) -> None:
    """Send queued messages until stopped (SIGTERM or Ctrl-C finish the messages in flight).

    Any number of workers, on any number of machines, can share one
    PostgreSQL database: each message is claimed by one of them, and
    mail.rate_limit holds for all of them together. `feedpub digest send
    --queue-only` (from cron) makes the editions for them to send.

    \b
    Examples:
        feedpub worker --concurrency 8
        feedpub worker --once          # drain what is due now, then exit
    """
    from feedpub.mail.transports import open_transport
    from feedpub.sender import SendOptions, offset_clock, send_queued
    from feedpub.store import open_store

    settings = settings_from(ctx)
    if newsletter:
        settings.newsletter(newsletter)
    store = open_store(settings.database.url)
    failed = False
    try:
        with stop_on_signals() as stop, open_transport(settings.mail.transport) as transport:
            while not stop.is_set():
                report = send_queued(
                    settings, store, transport, clock=offset_clock(parse_now(None)), stop=stop,
                    newsletter=newsletter, options=SendOptions(concurrency=concurrency),
                )
                _print_send(report)
                if report.sent or report.retrying or report.failed or report.skipped:
                    click.echo(_counts(report))
                failed = failed or not report.ok
                if once:
                    break
                stop.wait(poll * (6 if report.outage else 1))
    finally:
        store.close()
    _print_closing(transport)
    if once and failed:
        ctx.exit(1)
