"""What every command shares: the ``--site`` option, settings, errors, ``--now``."""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

from feedpub.config import Settings, load_settings
from feedpub.errors import ConfigError, FeedpubError

_COMMAND_MODULES = {
    "admin": "admin", "audience": "audience",
    "bounces": "bounces",
    "build": "build", "init": "build", "check": "check", "db": "db", "digest": "digest",
    "embed": "embed",
    "worker": "digest", "preview": "preview", "schedule": "schedule", "serve": "serve",
    "status": "status", "subscribers": "subscribers",
}
"""Which module of feedpub.cli defines each command: imported only when the command runs,
so that `feedpub build` under cron does not pay for the mail, web and database stacks."""


class FeedpubGroup(click.Group):
    """Turns a library error into one line on stderr and its exit status, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMAND_MODULES:
            importlib.import_module(f"feedpub.cli.{_COMMAND_MODULES[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FeedpubError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=FeedpubGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--site",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    envvar="FEEDPUB_SITE",
    show_default=True,
    help="The site folder: feedpub.toml, content/posts/, templates/, public/.",
)
@click.version_option(package_name="feedpub")
@click.pass_context
def main(ctx: click.Context, site: Path) -> None:
    """Publish a folder of Markdown posts as Atom, RSS and JSON feeds, and send them
    to subscribers as email digests.

    \b
    Start a site and build its feeds:
        feedpub init mysite
        feedpub --site mysite build
    Then look at mysite/public/atom.xml, or run `feedpub --site mysite serve`.
    """
    ctx.obj = site


def settings_from(ctx: click.Context) -> Settings:
    """The site's settings, read once per command."""
    root = ctx.find_root()
    cached = root.meta.get("feedpub.settings")
    if isinstance(cached, Settings):
        return cached
    site = root.obj if isinstance(root.obj, Path) else Path()
    settings = load_settings(site)
    root.meta["feedpub.settings"] = settings
    return settings


def parse_now(value: str | None) -> datetime:
    """``--now`` as an aware datetime; the real clock when not given."""
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--now must be an ISO 8601 date-time such as 2026-01-31T09:00:00+00:00, "
            f"not {value!r}"
        ) from None
    if parsed.tzinfo is None:
        raise ConfigError(f"--now needs a UTC offset, e.g. {value}+00:00")
    return parsed


NOW_OPTION = click.option(
    "--now",
    "now",
    metavar="ISO",
    help="Act as if it were this time (ISO 8601 with an offset, e.g. 2026-12-01T09:00:00+01:00).",
)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set the event: messages in flight finish, the rest stay queued."""
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def is_interactive() -> bool:
    """Progress bars on a terminal; quiet under cron."""
    return sys.stderr.isatty()
