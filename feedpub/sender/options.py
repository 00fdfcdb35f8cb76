"""What a send run is told (:class:`SendOptions`) and what it reports (:class:`SendReport`)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

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
    """``HOST:PID:PIDNS:RANDOM``: where the worker runs, so that another worker on the same
    host can tell when its process is gone (:func:`process_gone`)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class WorkerId:
    host: str
    pid: int
    namespace: str


def parse_worker_id(worker: str) -> WorkerId | None:
    """The parts of a :func:`default_worker_id`; None for another form (an older version's,
    or a name a caller chose), whose claims only their lease brings back."""
    parts = worker.split(":")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return WorkerId(parts[0], int(parts[1]), parts[2])


def _pid_namespace() -> str:
    """The pid namespace's inode (containers on one host share a host name, not pids)."""
    try:
        link = str(Path("/proc/self/ns/pid").readlink())
        return "".join(c for c in link if c.isdigit()) or "-"
    except OSError:
        return "-"


def process_gone(worker: str) -> bool:
    """Whether ``worker`` ran on this host (and pid namespace) in a process that no longer
    runs. False whenever that cannot be known: another host, another form of id, or this
    very process (several runs may share it)."""
    parsed = parse_worker_id(worker)
    if (
        parsed is None
        or parsed.host != socket.gethostname()
        or parsed.namespace != _pid_namespace()
        or parsed.pid == os.getpid()
    ):
        return False
    try:
        os.kill(parsed.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    try:  # killed, not yet reaped by its parent: a zombie sends nothing more
        stat = Path(f"/proc/{parsed.pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def offset_clock(start: datetime) -> Clock:
    """A clock that starts at ``start`` (``--now``) and runs at the real pace."""
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)
