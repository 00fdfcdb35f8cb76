"""Drains the send queue through a transport: claims, retries with backoff, bounces, a rate limit.

One call of :func:`send_queued` claims due deliveries in small batches, builds
each recipient's message, sends them on ``concurrency`` threads (the SMTP
transport keeps a pool of connections), and records the results in group
commits. It returns when nothing is due, when ``stop`` is set (messages in
flight are finished, the rest go back to the queue), or when the mail server
is unreachable (the untried claims go back, untouched, and the report says so).

A crash may repeat at most ``concurrency`` messages, never lose one: a
message holds one of ``concurrency`` places from the moment it is handed to a
sending thread until its result is committed, so the messages that a server
may have accepted without a record never outnumber them. Results are
committed together once half of the places wait for a commit, or
``commit_delay`` after the first of them, which turns one write transaction
per message into one per few messages.

With DKIM, each message is signed as it is built, with keys read once per
run (RSA and Ed25519 by OpenSSL; the parts all recipients share are
canonicalised once per edition). Messages still leave in claim order.

Results:

- accepted: ``sent``, with the server's reply and the Message-ID; the
  subscriber's count of hard failures starts again;
- a 4xx reply, a lost connection, a timeout: ``retrying`` after a backoff that
  grows (1 min, 5 min, 30 min, 2 h, 6 h, 12 h), ``failed`` after
  ``max_attempts``;
- a 5xx reply, or an address no message can be built for: ``failed``; the
  ``bounce_after``-th hard failure in a row marks the subscriber ``bounced``;
- the subscriber is no longer active, or the newsletter is gone from the
  configuration: ``skipped``.

Several consecutive failures that concern the server rather than a message
(no connection, or 421 "closing channel") mean an outage: those deliveries are
put back as they were, without counting an attempt, and the run ends.

The parts, one idea each: :mod:`~feedpub.sender.leases` (the claims held, their
leases, giving them back), :mod:`~feedpub.sender.pipeline` (the crash bound
above, enforced in one class), :mod:`~feedpub.sender.policy` (what an outcome
means: retry, fail, bounce, outage; pure), :mod:`~feedpub.sender.record`
(committing those decisions), :mod:`~feedpub.sender.compose` (the messages, signed
as they are built), :mod:`~feedpub.sender.rate` (the
shared rate limit), and :mod:`~feedpub.sender.run`, the loop that joins them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from feedpub.config import Settings
from feedpub.mail.message import DkimSigner
from feedpub.mail.transports import Transport
from feedpub.sender.compose import Composer, edition_key
from feedpub.sender.options import (
    DEFAULT_BACKOFF,
    Clock,
    Failure,
    Progress,
    SendOptions,
    SendReport,
    default_worker_id,
    offset_clock,
)
from feedpub.sender.rate import RATE_NAME, RateLimiter
from feedpub.sender.run import Run
from feedpub.store import queue
from feedpub.store.engine import Store

__all__ = [
    "DEFAULT_BACKOFF",
    "RATE_NAME",
    "Clock",
    "Failure",
    "Progress",
    "RateLimiter",
    "SendOptions",
    "SendReport",
    "default_worker_id",
    "edition_key",
    "offset_clock",
    "send_queued",
]

_Composer = Composer
"""The old name, which ``benchmarks/send.py`` uses."""


def send_queued(
    settings: Settings,
    store: Store,
    transport: Transport,
    *,
    clock: Clock,
    stop: threading.Event | None = None,
    newsletter: str | None = None,
    options: SendOptions | None = None,
    progress: Progress | None = None,
    worker: str | None = None,
    wall: Callable[[], float] = time.time,
) -> SendReport:
    """Send every delivery that is due (of one newsletter, if named); see the module's doc.

    ``clock`` gives the time for due dates, leases and records (the CLI's is
    ``--now`` running at the real pace); ``wall`` is the real clock that the
    shared rate limit runs on.
    """
    options = options or SendOptions()
    stop = stop or threading.Event()
    with store.read() as conn:
        total = queue.count_due(conn, clock(), newsletter=newsletter)
    if total:
        settings.require_secret()  # every message carries signed unsubscribe links
    if progress:
        progress(0, total)
    dkim = settings.mail.dkim
    signer = DkimSigner.from_config(dkim) if dkim else None  # a bad key fails before sending
    run = Run(
        settings, store, transport, clock=clock, stop=stop, newsletter=newsletter,
        options=options, progress=progress, worker=worker or default_worker_id(),
        wall=wall, signer=signer, total=total,
    )
    try:
        run.loop()
    finally:
        run.leases.close()
    with store.read() as conn:
        queued = queue.count_due(conn, clock(), newsletter=newsletter)
    tally = run.recorder.tally
    return SendReport(
        sent=tally.sent,
        retrying=tally.retrying,
        failed=tally.failed,
        skipped=tally.skipped,
        bounced=tally.bounced,
        returned=run.leases.returned,
        queued=queued,
        outage=run.watch.outage,
        stopped=stop.is_set(),
        failures=tuple(tally.failures),
    )
