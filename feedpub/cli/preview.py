"""``feedpub preview``: the next edition as files to open, or as a test message to
the author; nothing stored."""

from __future__ import annotations

from pathlib import Path

import click

from feedpub.cli._common import NOW_OPTION, main, parse_now, settings_from
from feedpub.preview import preview_edition, send_test


@main.command()
@click.option("--newsletter", "newsletter", metavar="NAME",
              help="Which [[newsletter]] (default: the first one).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the files (default: .feedpub-cache/preview/ in the site).")
@click.option("--send-to", "send_to", metavar="ADDRESS",
              help="Also send it to ADDRESS through [mail] transport, subject marked "
                   "[Test]; no delivery is recorded.")
@NOW_OPTION
@click.pass_context
def preview(ctx: click.Context, newsletter: str | None, out_dir: Path | None,
            send_to: str | None, now: str | None) -> None:
    """Render the next edition of a newsletter as .html, .txt and .eml files.

    The files show what a subscriber would receive (addressed to a sample
    recipient); the database is not changed. When no post is waiting for the
    next digest, the most recent posts are shown. --send-to sends the same
    message to you first, as a test: the queue, the deliveries and what the
    next digest holds stay as they were.

    \b
    Example:
        feedpub --site mysite preview
        feedpub preview --newsletter daily --out /tmp/preview
        open .feedpub-cache/preview/weekly.html      # or: xdg-open
        feedpub preview --send-to me@example.com
    """
    from feedpub.errors import DeliveryError, InvalidAddress

    settings = settings_from(ctx)
    at = parse_now(now)
    result = preview_edition(settings, newsletter=newsletter, out_dir=out_dir, now=at)
    rendered = result.rendered
    for error in result.content_errors:
        click.echo(f"error: {error}", err=True)
    if not result.pending:
        click.echo(f"nothing pending: showing the {result.entry_count} most recent posts")
    else:
        click.echo(f"pending: {result.entry_count} posts for the next edition")
    click.echo(f"subject: {rendered.subject}")
    limit = settings.mail.max_html_bytes
    click.echo(f"html size: {rendered.html_bytes / 1000:.1f} KB "
               f"(limit {limit / 1000:.1f} KB)")
    if rendered.summarized_ids:
        click.echo(f"cut to summaries to fit the limit: {len(rendered.summarized_ids)} posts "
                   "(oldest first); the web page has them in full")
    if rendered.over_limit:
        click.echo("warning: still over the limit with every post cut to its summary; "
                   "Gmail will clip this message", err=True)
    if not settings.mail.postal_address:
        click.echo("warning: mail.postal_address is empty; anti-spam laws (CAN-SPAM, CASL) "
                   "require a postal address in every newsletter", err=True)
    for path in (result.html_path, result.text_path, result.eml_path, result.web_path):
        click.echo(f"wrote {path}")
    if send_to is not None:
        try:
            send_test(settings, result, send_to, now=at)
        except (InvalidAddress, DeliveryError) as error:
            click.echo(f"error: test message not sent: {error}", err=True)
            ctx.exit(1)
        click.echo(f"sent a test to {send_to} (nothing recorded)")
    if result.content_errors:
        ctx.exit(1)
