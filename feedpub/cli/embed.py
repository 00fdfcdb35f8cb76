"""``feedpub embed``: the subscribe form, for a page of another site."""

from __future__ import annotations

import click

from feedpub.cli._common import main, settings_from


@main.command()
@click.pass_context
def embed(ctx: click.Context) -> None:
    """Print the subscribe form as plain HTML, to paste into a page of another site
    (a Jekyll or Hugo layout, a WordPress widget).

    The form posts to `feedpub serve` at web.url and works without JavaScript.
    `serve` accepts it only from the origins listed in web.embed_origins, so
    add the other site there (e.g. embed_origins = ["https://blog.example"]);
    the form token and same-origin check stay on for every other origin.

    \b
    Example:
        feedpub embed > _includes/subscribe.html
    """
    from feedpub.pages import embed_snippet

    settings = settings_from(ctx)
    click.echo(embed_snippet(settings), nl=False)
    if not settings.web.embed_origins:
        click.echo("note: web.embed_origins is empty, so serve refuses this form from other "
                   "sites; add their origins in feedpub.toml", err=True)
