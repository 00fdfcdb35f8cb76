"""``feedpub audience import``: feed readers counted from a web server's access logs."""

from __future__ import annotations

from pathlib import Path

import click

from feedpub.cli._common import is_interactive, main, settings_from


@main.group()
def audience() -> None:
    """Who reads the feeds. `feedpub serve` counts the feed fetches it answers by
    itself; for feeds served by nginx or Apache, import their access logs.
    `feedpub status` shows the result."""


@audience.command("import")
@click.argument("files", nargs=-1, required=True, metavar="ACCESS.LOG…",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--feed", "feeds", multiple=True, metavar="PATH",
              help="Also count requests for PATH (as in the log, e.g. /index.xml) as feed "
                   "fetches; repeatable. Any …/atom.xml, …/rss.xml and …/feed.json counts "
                   "already.")
@click.option("--quiet", is_flag=True, help="Print nothing when all went well.")
@click.pass_context
def import_command(ctx: click.Context, files: tuple[Path, ...], feeds: tuple[str, ...],
                   quiet: bool) -> None:
    """Count the feed readers in nginx or Apache access logs (the combined format;
    .gz files too), as `feedpub serve` would have counted them.

    Aggregators (Feedly, Inoreader, NewsBlur…) count with the subscriber number
    their User-Agent states, the latest per feed; other readers count once per
    feed and day; bots and browsers not at all. Importing a log again, or logs
    that overlap, changes nothing. Needs the site secret (FEEDPUB_SECRET), which
    keys the daily hash of each reader's address and User-Agent.

    \b
    Examples:
        feedpub audience import /var/log/nginx/access.log /var/log/nginx/access.log.2.gz
        feedpub audience import --feed /index.xml access.log
    """
    from feedpub.audience import import_logs
    from feedpub.store import open_store

    settings = settings_from(ctx)
    secret = settings.require_secret()
    progress = None
    if is_interactive() and not quiet:
        def progress(lines: int) -> None:
            click.echo(f"\r{lines:,} lines", nl=False, err=True)

    with open_store(settings.database.url) as store:
        report = import_logs(store, secret, files, extra_feeds=feeds, progress=progress)
    if progress is not None and report.lines >= 100_000:
        click.echo(err=True)
    if quiet:
        return
    span = ""
    if report.first_day is not None:
        span = f" from {report.first_day} to {report.last_day} (UTC)"
    click.echo(
        f"{report.lines:,} lines: {report.fetches:,} feed fetches by readers{span}, "
        f"{report.ignored:,} by bots and browsers, {report.unreadable:,} lines not in "
        "the combined format"
    )
