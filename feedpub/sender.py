"""Drains the send queue through a transport: claims, retries with backoff, bounces, a rate limit.

One call of :func:`send_queued` claims due deliveries in small batches, sends
them on ``concurrency`` threads (the SMTP transport keeps a pool of
connections), and records each result as soon as it is known, so that a crash
repeats at most the messages that were in flight. It returns when nothing is
due, when ``stop`` is set (messages in flight are finished, the rest go back to
the queue), or when the mail server is unreachable (the untried claims go back,
untouched, and the report says so).

Results:

- accepted: ``sent``, with the server's reply and the Message-ID; the
  subscriber's count of hard failures starts again;
- a 4xx reply, a lost connection, a timeout: ``retrying`` after a backoff that
  grows (1 min, 5 min, 30 min, 2 h, 6 h, 12 h), ``failed`` after
  ``max_attempts``;
- a 5xx reply: ``failed``; the ``bounce_after``-th hard failure in a row marks
  the subscriber ``bounced``;
- the subscriber is no longer active, or the newsletter is gone from the
  configuration: ``skipped``.

Several consecutive failures that concern the server rather than a message
(no connection, or 421 "closing channel") mean an outage: those deliveries are
put back as they were, without counting an attempt, and the run ends.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from feedpub.config import Settings
from feedpub.errors import DeliveryError
from feedpub.mail.message import DkimSigner, MessageTemplate, message_id, prepare_message
from feedpub.mail.render import Recipient
from feedpub.mail.transports import Transport
from feedpub.store import queue
from feedpub.store.editions import Edition, get_edition
from feedpub.store.engine import Store
from feedpub.store.schema import Status
from feedpub.store.subscribers import record_delivery_failure, record_delivery_success
from feedpub.tokens import Purpose, make_token

Clock = Callable[[], datetime]
Progress = Callable[[int, int], None]

DEFAULT_BACKOFF = (
    timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
    timedelta(hours=6), timedelta(hours=12),
)
RATE_NAME = "mail"
"""The ``send_rate`` row that every worker shares."""
_RATE_HORIZON = 300.0
_SERVER_CODES = (421,)
"""Replies that speak for the server, not for one message: 421 closes the channel."""


@dataclass(frozen=True)
class SendOptions:
    concurrency: int = 4
    """Messages in flight at once (threads over the transport's connection pool)."""
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


# --- the shared rate limit -------------------------------------------------------------


class RateLimiter:
    """Hands out send times so that all workers together send ``rate`` messages a second.

    Slots are reserved in the database (``send_rate``) a few at a time, so the
    limit holds across processes and machines; 0 means no limit.
    """

    def __init__(
        self,
        store: Store,
        rate: float,
        *,
        stop: threading.Event,
        chunk: int = 1,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.rate = rate
        self.stop = stop
        self.chunk = max(1, min(chunk, int(rate) or 1)) if rate else 1
        self.wall = wall
        self._slots: deque[float] = deque()
        self._lock = threading.Lock()

    def wait_turn(self) -> bool:
        """Wait for the next slot; False when ``stop`` was set meanwhile."""
        if not self.rate:
            return not self.stop.is_set()
        with self._lock:
            if not self._slots:
                interval = 1.0 / self.rate
                with self.store.write() as conn:
                    first = queue.reserve_slots(
                        conn, RATE_NAME, now=self.wall(), count=self.chunk, interval=interval,
                        horizon=_RATE_HORIZON,
                    )
                self._slots.extend(first + i * interval for i in range(self.chunk))
            slot = self._slots.popleft()
        delay = slot - self.wall()
        if delay > 0:
            return not self.stop.wait(delay)
        return not self.stop.is_set()


# --- one message --------------------------------------------------------------------------

OutcomeKind = Literal["sent", "temporary", "permanent", "skipped", "untried"]


@dataclass(frozen=True)
class _Outcome:
    claim: queue.Claim
    kind: OutcomeKind
    reply: str = ""
    message_id: str | None = None
    server_problem: bool = False


class _Composer:
    """Builds each recipient's message from the edition's stored strings.

    What the messages of an edition share is encoded once and kept (a few
    dozen editions at most); per recipient only the personal parts are made.
    """

    def __init__(self, settings: Settings, store: Store, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._editions: OrderedDict[int, _Prepared | None] = OrderedDict()
        self._lock = threading.Lock()
        self._signer: DkimSigner | None = None
        if settings.mail.dkim is not None:
            self._signer = DkimSigner.from_config(settings.mail.dkim)

    def prepared(self, edition_id: int) -> _Prepared | None:
        with self._lock:
            if edition_id in self._editions:
                self._editions.move_to_end(edition_id)
                return self._editions[edition_id]
        with self.store.read() as conn:
            edition = get_edition(conn, edition_id)
        prepared = None
        if edition is not None and any(
            n.name == edition.newsletter for n in self.settings.newsletters
        ):
            key = edition_key(edition)
            prepared = _Prepared(edition, key, prepare_message(
                settings=self.settings,
                newsletter=self.settings.newsletter(edition.newsletter),
                rendered=edition,
                edition_key=key,
                signer=self._signer,
            ))
        with self._lock:
            self._editions[edition_id] = prepared
            while len(self._editions) > 64:
                self._editions.popitem(last=False)
        return prepared

    def skip_reason(self, claim: queue.Claim) -> str | None:
        if not claim.subscriber_active:
            return "the subscriber is no longer active"
        if self.prepared(claim.edition_id) is None:
            return "the edition or its newsletter is gone (not in feedpub.toml)"
        return None

    def message(self, claim: queue.Claim) -> tuple[bytes, str]:
        prepared = self.prepared(claim.edition_id)
        assert prepared is not None
        settings = self.settings
        secret = settings.require_secret()
        now = self.clock()

        def link(purpose: Purpose) -> str:
            token = make_token(secret, purpose, claim.subscriber_id, check=claim.token_key,
                               now=now)
            return f"{settings.web.url}{purpose.value}/{token}"

        recipient = Recipient(
            email=claim.email,
            name=claim.name or "",
            unsubscribe_url=link(Purpose.UNSUBSCRIBE),
            preferences_url=link(Purpose.PREFERENCES),
        )
        data = prepared.template.build(recipient, date=now)
        return data, message_id(prepared.key, claim.email, prepared.template.message_id_domain)


@dataclass(frozen=True)
class _Prepared:
    edition: Edition
    key: str
    template: MessageTemplate


def edition_key(edition: Edition) -> str:
    """Names the edition in its messages' ``Message-ID`` and ``X-Feedpub-Edition``: the same
    on every worker, so a message sent twice has the same Message-ID both times."""
    return f"{edition.newsletter}/{edition.period_key}"


# --- the loop ---------------------------------------------------------------------------------


@dataclass
class _Tally:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    bounced: int = 0
    returned: int = 0
    failures: list[Failure] = field(default_factory=list)


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
    worker = worker or default_worker_id()
    rate = settings.mail.rate_limit
    limit = options.batch_size
    if rate:
        limit = max(options.concurrency * 2, min(limit, int(rate * 10)))
    limiter = RateLimiter(store, rate, stop=stop, chunk=options.concurrency, wall=wall)
    composer = _Composer(settings, store, clock)
    envelope_from = settings.mail.envelope_from or settings.mail.from_address
    tally = _Tally()

    with store.read() as conn:
        total = queue.count_due(conn, clock(), newsletter=newsletter)
    if total:
        settings.require_secret()  # every message carries signed unsubscribe links
    if progress:
        progress(0, total)

    def send_one(claim: queue.Claim) -> _Outcome:
        reason = composer.skip_reason(claim)
        if reason:
            return _Outcome(claim, "skipped", reply=reason)
        data, message_id = composer.message(claim)
        if not limiter.wait_turn():
            return _Outcome(claim, "untried")
        try:
            result = transport.send(envelope_from, claim.email, data)
        except DeliveryError as error:
            server = error.code is None or error.code in _SERVER_CODES
            return _Outcome(
                claim, "permanent" if error.permanent else "temporary", reply=str(error),
                server_problem=server and not error.permanent,
            )
        return _Outcome(claim, "sent", reply=f"{result.code} {result.reply}",
                        message_id=message_id)

    pending: deque[queue.Claim] = deque()
    inflight: dict[Future[_Outcome], queue.Claim] = {}
    suspects: list[_Outcome] = []
    outage: str | None = None
    exhausted = False
    done_count = 0
    last_renewal = time.monotonic()

    def record(outcomes: Iterable[_Outcome]) -> None:
        nonlocal outage
        settled: list[_Outcome] = []
        for outcome in outcomes:
            if outcome.server_problem and outage is None:
                suspects.append(outcome)
                if len(suspects) >= options.outage_after:
                    outage = outcome.reply
            elif outcome.server_problem:
                suspects.append(outcome)
            else:
                if outcome.kind in ("sent", "temporary", "permanent"):
                    settled.extend(suspects)  # the server answers: those were the messages'
                    suspects.clear()
                settled.append(outcome)
        if outage is not None:
            _return(store, worker, [o.claim for o in suspects], tally)
            suspects.clear()
        if settled:
            _record(store, worker, settled, options, clock(), tally)

    try:
        with ThreadPoolExecutor(max_workers=options.concurrency,
                                thread_name_prefix="feedpub-send") as pool:
            while True:
                if not stop.is_set() and outage is None:
                    if not exhausted and len(pending) < options.concurrency:
                        claimed = _claim(store, worker, clock(), options, limit, newsletter,
                                         [c.delivery_id for c in (*pending, *inflight.values())])
                        last_renewal = time.monotonic()
                        exhausted = not claimed
                        pending.extend(claimed)
                    while pending and len(inflight) < options.concurrency:
                        claim = pending.popleft()
                        inflight[pool.submit(send_one, claim)] = claim
                if not inflight:
                    break
                finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                outcomes = [future.result() for future in finished]  # may raise: then finally
                for future in finished:
                    inflight.pop(future)
                record(outcomes)
                done_count += len(outcomes)
                if progress:
                    progress(done_count, max(total, done_count + len(pending) + len(inflight)))
                if time.monotonic() - last_renewal > options.lease.total_seconds() / 4:
                    with store.write() as conn:
                        queue.renew(conn, worker, [c.delivery_id for c in pending], clock())
                    last_renewal = time.monotonic()
    finally:
        # Only after an error: futures the loop did not get to (the pool has finished them).
        leftovers = [future for future in inflight if future.exception() is None]
        record(future.result() for future in leftovers)
        stop_waiting = [*pending, *(c for f, c in inflight.items() if f not in leftovers)]
        if suspects and outage is None:
            _record(store, worker, list(suspects), options, clock(), tally)
            suspects.clear()
        _return(store, worker, stop_waiting, tally)

    return SendReport(
        sent=tally.sent,
        retrying=tally.retrying,
        failed=tally.failed,
        skipped=tally.skipped,
        bounced=tally.bounced,
        returned=tally.returned,
        outage=outage,
        stopped=stop.is_set(),
        failures=tuple(tally.failures),
    )


def _claim(
    store: Store,
    worker: str,
    now: datetime,
    options: SendOptions,
    limit: int,
    newsletter: str | None,
    held: list[int],
) -> list[queue.Claim]:
    with store.write() as conn:
        queue.requeue_expired(conn, now, options.lease)
        if held:
            queue.renew(conn, worker, held, now)
        return queue.claim(conn, worker=worker, now=now, limit=limit, newsletter=newsletter)


def _return(store: Store, worker: str, claims: list[queue.Claim], tally: _Tally) -> None:
    if not claims:
        return
    with store.write() as conn:
        queue.release(conn, worker, [c.delivery_id for c in claims])
    tally.returned += len(claims)


def _record(
    store: Store,
    worker: str,
    outcomes: list[_Outcome],
    options: SendOptions,
    now: datetime,
    tally: _Tally,
) -> None:
    """Write a group of results in one transaction (a group commit)."""
    untried = [o.claim for o in outcomes if o.kind == "untried"]
    with store.write() as conn:
        for outcome in outcomes:
            claim = outcome.claim
            if outcome.kind == "sent":
                queue.mark_sent(conn, claim.delivery_id, now=now, reply=outcome.reply,
                                message_id=outcome.message_id)
                record_delivery_success(conn, claim.subscriber_id)
                tally.sent += 1
            elif outcome.kind == "skipped":
                queue.mark_skipped(conn, claim.delivery_id, worker, reason=outcome.reply)
                tally.skipped += 1
            elif outcome.kind == "temporary" and claim.attempts + 1 < options.max_attempts:
                next_at = now + options.retry_delay(claim.attempts + 1)
                if queue.mark_retrying(conn, claim.delivery_id, worker,
                                       next_attempt_at=next_at, reply=outcome.reply):
                    tally.retrying += 1
            elif outcome.kind in ("temporary", "permanent"):
                if not queue.mark_failed(conn, claim.delivery_id, worker, reply=outcome.reply):
                    continue
                tally.failed += 1
                if len(tally.failures) < 100:
                    tally.failures.append(Failure(claim.email, outcome.reply))
                if outcome.kind == "permanent":
                    subscriber = record_delivery_failure(
                        conn, claim.subscriber_id, now=now, bounce_after=options.bounce_after,
                        detail=outcome.reply,
                    )
                    if subscriber.status == Status.BOUNCED and \
                            subscriber.consecutive_failures == options.bounce_after:
                        tally.bounced += 1
    if untried:
        _return(store, worker, untried, tally)
