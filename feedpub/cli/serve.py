"""``feedpub serve``: the feeds and the subscriber pages over HTTP, under uvicorn."""

from __future__ import annotations

import click

from feedpub.cli._common import main, settings_from


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 listens on every interface.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port to listen on.")
@click.option("--forwarded-allow-ips", default="127.0.0.1", show_default=True,
              metavar="IPS",
              help="Proxies whose X-Forwarded-For/-Proto headers are trusted "
                   "(comma-separated, or '*').")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help="How much uvicorn logs: 'warning' keeps only problems, 'debug' "
                   "shows every request's details.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, forwarded_allow_ips: str,
          log_level: str) -> None:
    """Serve public/ (feeds with ETag, Last-Modified, 304 and gzip) and the
    subscriber pages: /subscribe, /confirm/…, /unsubscribe/…, /preferences/…,
    and /healthz for monitors.

    Links in email point at [web] url in feedpub.toml: set it to where this
    server is reachable (http://127.0.0.1:8000/ to try it on your machine).

    \b
    Try it locally:
        feedpub --site mysite build
        feedpub --site mysite serve
        open http://127.0.0.1:8000/subscribe
    \b
    Behind a reverse proxy (nginx, Caddy) on the same machine:
        feedpub --site mysite serve --host 127.0.0.1 --port 8000
      The proxy must pass Host and X-Forwarded-For / X-Forwarded-Proto;
      they are trusted from --forwarded-allow-ips only, and the client
      address they give is what the subscribe form's rate limit counts.
      The rate limits live in this one process's memory.
    """
    import uvicorn

    from feedpub.web import create_app

    settings = settings_from(ctx)
    app = create_app(settings)
    click.echo(
        f"Serving {settings.site_dir} at http://{host}:{port}/ "
        f"(links in email use {settings.web.url}); Ctrl-C stops.",
        err=True,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        log_level=log_level,
        server_header=False,
    )
