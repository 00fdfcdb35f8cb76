"""``feedpub status``: each newsletter at a glance, or as JSON for monitoring."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING

import click

from feedpub.cli._common import NOW_OPTION, main, parse_now, settings_from

if TYPE_CHECKING:
    from feedpub.status import LastEdition, SiteStatus


@main.command()
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document, for monitoring (its shape is described above).")
@NOW_OPTION
@click.pass_context
def status(ctx: click.Context, as_json: bool, now: str | None) -> None:
    """Show each newsletter's next run, its last edition and how its delivery went,
    its subscribers, the deliveries waiting for a retry, and the site's audience
    (email subscribers and feed readers, once readers have been counted).

    Reads the database without changing it (a site without one shows zeros).

    \b
    The JSON document (--json), stable for monitoring; times are UTC ISO 8601:
      version                 1
      generated_at, timezone, database (URL without password, or null)
      subscribers             {pending, active, unsubscribed, bounced}
      deliveries              {queued, sending, sent, retrying, failed, skipped}
      retries                 {count, next_attempt_at}
      newsletters[]:
        name, title, schedule
        next_run              {local (site.timezone, with offset), utc} or null
        last_edition          the newest edition of any kind, or null:
                              {id, period_key, kind, created_at, subject,
                               entries, deliveries {queued, sending, sent,
                               retrying, failed, skipped}}
        last_digest           the newest scheduled slot, same shape, or null
        subscribers           {pending, active, unsubscribed, bounced}
        subscriptions         active subscribers by mode: {digest, instant}
        retries               {count, next_attempt_at}
        heard_back            bounces and complaints of the last 30 days:
                              {sent, hard_bounces, soft_bounces, complaints,
                               bounce_rate, complaint_rate, flags[]}; each
                              edition above carries the same for itself.
                              flags: complaints-over-0.1%, complaints-over-0.3%
                              (Gmail's limits), bounces-over-2%
      audience:
        email_subscribers     active subscribers
        feed_readers          {services {NAME: subscribers}, other_readers,
                               day, complete, total,
                               feeds[] {path, services, other_readers, total}}
        total                 email_subscribers + feed_readers.total
    kind is digest, post (instant), baseline (first run), empty (nothing new)
    or missed (noticed after scheduler.misfire_grace_hours).
    services: the latest count each aggregator stated per feed in the last 30
    days, added up over the feeds. other_readers: distinct other readers on
    day (UTC), the last complete day counted, else today (complete false).

    \b
    Examples:
        feedpub status
        feedpub status --json | jq '.newsletters[].last_digest.kind'
    """
    from feedpub.status import site_status, status_document
    from feedpub.store import open_existing_store

    settings = settings_from(ctx)
    moment = parse_now(now)
    store = open_existing_store(settings.database.url)
    try:
        result = site_status(settings, store, moment)
    finally:
        if store is not None:
            store.close()
    if as_json:
        click.echo(json.dumps(status_document(result), indent=2, ensure_ascii=False))
        return
    _print_table(result, settings.site.title)


def _print_table(result: SiteStatus, title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=sys.stdout, highlight=False)
    people = result.subscribers
    console.print(Text.assemble(
        (title, "bold"), f"  {_local(result.generated_at, result, year=True)} ({result.timezone})"
    ))
    console.print(
        f"subscribers: {people.active} active, {people.pending} pending, "
        f"{people.unsubscribed} unsubscribed, {people.bounced} bounced", markup=False,
    )
    queue = result.queue
    retrying = f"{queue.retrying} retrying"
    if result.retries.next_attempt_at is not None:
        retrying += f" from {_local(result.retries.next_attempt_at, result)}"
    console.print(
        f"deliveries: {queue.sent} sent, {queue.failed} failed, {queue.queued} queued, "
        f"{queue.sending} sending, {retrying}", markup=False,
    )
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    table.add_column("newsletter", overflow="fold", min_width=6)
    table.add_column("next run", no_wrap=True)
    table.add_column("last edition", no_wrap=True)
    for column in ("posts", "sent", "retry", "failed", "queued", "subs"):
        table.add_column(column, justify="right", no_wrap=True)
    for newsletter in result.newsletters:
        editions = [newsletter.last_edition]
        if newsletter.last_digest not in (None, newsletter.last_edition):
            editions.append(newsletter.last_digest)
        readers = sum(newsletter.subscriptions.values())
        for index, edition in enumerate(editions):
            first = index == 0
            counts = edition.deliveries if edition else None
            table.add_row(
                newsletter.name if first else "",
                _local(newsletter.next_run, result) if first else "",
                _edition(edition, result),
                str(edition.entries) if edition else "",
                *(str(getattr(counts, name)) if counts else ""
                  for name in ("sent", "retrying", "failed", "queued")),
                str(readers) if first else "",
            )
    console.print(table)
    for newsletter in result.newsletters:
        rates = newsletter.heard_back.rates
        if rates.hard or rates.soft or rates.complaints:
            flags = "".join(f"  [{flag}]" for flag in newsletter.heard_back.flags)
            console.print(
                f"{newsletter.name}, last 30 days: {rates.sent} sent, {rates.hard} hard "
                f"bounces ({rates.bounce_rate:.2%}), {rates.soft} soft, {rates.complaints} "
                f"complaints ({rates.complaint_rate:.2%}){flags}", markup=False,
            )
    if result.audience.feeds.total:
        console.print(_audience_line(result), markup=False)


def _audience_line(result: SiteStatus) -> str:
    audience = result.audience
    feeds = audience.feeds
    parts = [f"{name} {count}" for name, count in feeds.services.items()]
    if feeds.day is not None:
        partial = "" if feeds.complete else ", so far"
        parts.append(f"{feeds.others} other readers on {feeds.day:%Y-%m-%d}{partial}")
    return (f"audience: {audience.total} = {audience.email} by email + {feeds.total} by feed "
            f"({', '.join(parts)})")


def _local(moment: datetime | None, result: SiteStatus, *, year: bool = False) -> str:
    from zoneinfo import ZoneInfo

    if moment is None:
        return "-"
    local = moment.astimezone(ZoneInfo(result.timezone))
    if year or local.year != result.generated_at.year:
        return local.strftime("%Y-%m-%d %H:%M")
    return local.strftime("%m-%d %H:%M")


def _edition(edition: LastEdition | None, result: SiteStatus) -> str:
    if edition is None:
        return "none yet"
    return f"{edition.kind} {_local(edition.created_at, result)}"
