"""What a send run is told (:class:`SendOptions`) and what it reports (:class:`SendReport`)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

Clock = Callable[[], datetime]
Progress = Callable[[int, int], None]

DEFAULT_BACKOFF = (
    timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
    timedelta(hours=6), timedelta(hours=12),
)


@dataclass(frozen=True)
class SendOptions:
    concurrency: int = 4
    """Messages in flight at once (threads over the transport's connection pool); also the
    most messages that a crash can make the next run send twice."""
    batch_size: int = 100
    """Deliveries claimed at a time (fewer when the rate limit is low)."""
    lease: timedelta = timedelta(minutes=5)
    """A claim older than this belonged to a worker that died; it goes back to the queue."""
    backoff: tuple[timedelta, ...] = DEFAULT_BACKOFF
    max_attempts: int = 8
    bounce_after: int = 3
    """Hard failures in a row that mark a subscriber bounced."""
    outage_after: int = 3
    """Server failures in a row that end the run as an outage."""
    commit_delay: timedelta = timedelta(milliseconds=20)
    """Longest a result waits to be committed with others."""
    sign_processes: int | None = None
    """Processes that DKIM-sign messages while this one sends: None, one per CPU when many
    messages are due; 1, sign in the sending threads."""

    def retry_delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt (1-based)."""
        return self.backoff[min(attempts, len(self.backoff)) - 1]


@dataclass(frozen=True)
class Failure:
    email: str
    reply: str


@dataclass(frozen=True)
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    bounced: int = 0
    """Subscribers marked bounced in this run."""
    returned: int = 0
    """Claims given back untried (a stop or an outage): still queued."""
    queued: int = 0
    """Deliveries due and still queued when the run ended (given back, or never claimed)."""
    outage: str | None = None
    """Why the mail server could not be used, when a run ended for that reason."""
    stopped: bool = False
    failures: tuple[Failure, ...] = ()
    """Deliveries that failed for good in this run (the first hundred)."""

    @property
    def ok(self) -> bool:
        """Nothing failed for good and the server was reachable."""
        return self.failed == 0 and self.outage is None


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def offset_clock(start: datetime) -> Clock:
    """A clock that starts at ``start`` (``--now``) and runs at the real pace."""
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)
