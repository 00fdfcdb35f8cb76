"""``feedpub init`` and ``feedpub build``."""

from __future__ import annotations

from pathlib import Path

import click

from feedpub.build import build as build_site
from feedpub.cli._common import NOW_OPTION, is_interactive, main, parse_now, settings_from
from feedpub.progress import progress_bar
from feedpub.scaffold import init_site


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--title", default="My feedpub site", show_default=True, help="The site's title.")
@click.option("--url", default="https://example.com/", show_default=True,
              help="Where public/ will be served.")
@click.option("--feeds-only", is_flag=True,
              help="Leave the web pages to another tool (Jekyll, Hugo): feedpub writes the "
                   "feeds, and the newsletter's edition pages, and nothing else.")
def init(directory: Path, title: str, url: str, feeds_only: bool) -> None:
    """Create a site in DIRECTORY: feedpub.toml, a first post, a secret, a static/
    folder for files to publish as they are.

    With pages on (the default), `feedpub build` also writes the publication's
    web pages: each post, the home page, an archive, a page per category and per
    newsletter. A site that already has Jekyll or Hugo pages takes --feeds-only.

    \b
    Example:
        feedpub init mysite --title "Ada's notes" --url https://ada.example/
        feedpub --site mysite build
        feedpub init blog-feeds --feeds-only     # the pages come from Jekyll
    """
    now = parse_now(None)
    for path in init_site(directory, now=now, title=title, url=url, pages=not feeds_only):
        click.echo(f"wrote {path}")
    click.echo(f"next: feedpub --site {directory} build")


@main.command()
@NOW_OPTION
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Processes that render posts (default: one per core).")
@click.option("--quiet", "-q", is_flag=True, help="Print errors only (for cron).")
@click.pass_context
def build(ctx: click.Context, now: str | None, jobs: int | None, quiet: bool) -> None:
    """Render the posts and write the feeds and pages into public/.

    \b
    Writes public/atom.xml, rss.xml, feed.json (feed.xsl with [feed] xslt)
    and public/categories/<slug>/atom.xml and rss.xml. With [pages] on, also
    each post at its permalink, index.html, archive/, categories/<slug>/, feeds/,
    editions/<newsletter>/, 404.html, sitemap.xml, robots.txt, style.css,
    and the files beside posts, static/ and content/images/ where their
    links resolve. Only what changed is rendered or copied again; the page
    of a post that is gone is removed, and nothing else in public/.
    A post that cannot be read is reported on stderr and left out; the
    rest is still built, and the exit status is 1.

    \b
    Example:
        feedpub --site mysite build
        feedpub build --now 2026-12-01T09:00:00+00:00   # as it will look then
    """
    settings = settings_from(ctx)
    with progress_bar("Rendering", enabled=is_interactive()) as progress:
        report = build_site(settings, parse_now(now), jobs=jobs, progress=progress)
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    if not quiet:
        click.echo(
            f"{report.published} published of {report.posts} "
            f"post{'' if report.posts == 1 else 's'} ({report.read} read, "
            f"{report.rendered} rendered, the rest from the cache); {len(report.written)} "
            f"files written in {settings.public_dir}"
        )
    if report.errors:
        ctx.exit(1)
