"""``feedpub schedule``: the long-running alternative to ``digest send`` from cron."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from feedpub.cli._common import main, settings_from, stop_on_signals
from feedpub.errors import ConfigError

if TYPE_CHECKING:
    from feedpub.scheduler import LineLog


class _ToLineLog(logging.Handler):
    """APScheduler's own warnings and errors (a job that crashed) in the same log."""

    def __init__(self, log: LineLog) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f": {record.exc_info[1]!r}"
        self.log.event(record.levelname.lower(), message)


@contextmanager
def _apscheduler_logs_to(log: LineLog) -> Iterator[None]:
    logger = logging.getLogger("apscheduler")
    handler = _ToLineLog(log)
    logger.addHandler(handler)
    propagate = logger.propagate
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextmanager
def _log_stream(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stderr
        return
    try:
        stream = path.open("a", encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write the log: {error.strerror}", path=path) from None
    with stream:
        yield stream


@main.command()
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Append the log to this file (default: stderr).")
@click.option("--log-format", type=click.Choice(["plain", "json"]), default="plain",
              show_default=True, help="One line of text, or one JSON object, per run.")
@click.option("--log-idle", is_flag=True, help="Also log ticks that found nothing to do.")
@click.pass_context
def schedule(ctx: click.Context, log_file: Path | None, log_format: str, log_idle: bool) -> None:
    """Run until stopped: send each newsletter's digest on its schedule, instant
    posts and retries every scheduler.tick_seconds.

    Each newsletter's `schedule` is a cron expression in site.timezone,
    daylight saving time included. It does what `feedpub digest send` does,
    through the same code: a digest missed while the daemon was down is sent
    at start if its slot is less than scheduler.misfire_grace_hours old, and
    otherwise skipped with a log line (its posts wait for the next digest).
    Several daemons, and cron jobs, can share one database: each edition is
    made once and each message sent once.

    SIGTERM or Ctrl-C: the messages in flight are finished, the rest stay
    queued for the next run, and the exit status is 0.

    \b
    One line per run that did something (plain):
        2026-01-05T09:00:01Z INFO digest:weekly: weekly: digest
        digest:2026-01-05T09:00Z (3 entries) queued for 120; sent 120,
        retrying 0, failed 0, skipped 0
    With --log-format json each line is an object with the keys time, level,
    job, started_at, seconds, editions [{newsletter, kind, period_key,
    entries, recipients}], refused, unreadable_posts, sent, retrying,
    failed, skipped, bounced, left_queued, outage, failures [{email, reply}],
    sending_elsewhere, error.

    \b
    Examples:
        feedpub --site /srv/blog schedule
        feedpub schedule --log-file /var/log/feedpub.log --log-format json
    """
    from feedpub.scheduler import Daemon, LineLog
    from feedpub.store import open_store

    settings = settings_from(ctx)
    with _log_stream(log_file) as stream:
        log = LineLog(stream, "json" if log_format == "json" else "plain",
                      grace_hours=settings.scheduler.misfire_grace_hours, log_idle=log_idle)
        store = open_store(settings.database.url)
        try:
            with stop_on_signals() as stop, _apscheduler_logs_to(log):
                daemon = Daemon(settings, store, stop=stop, on_run=log.run)
                daemon.run_until_stopped(lambda next_runs: log.event("info", "started", **{
                    job: moment.isoformat() if moment else "never"
                    for job, moment in next_runs.items()
                }))
                log.event("info", "stopped")
        finally:
            store.close()
