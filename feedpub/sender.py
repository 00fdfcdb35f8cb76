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

With DKIM, signing (RSA in pure Python, ~10 ms a message) runs in a pool of
processes, one per CPU by default, a few messages ahead of the sending
threads; each process reads the key once. Messages still leave in claim order.

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
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import queue as threading_queue
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from feedpub.config import DkimConfig, Settings
from feedpub.errors import DeliveryError
from feedpub.mail.message import DkimSigner, MessageTemplate, message_id, prepare_message
from feedpub.mail.render import Recipient
from feedpub.mail.transports import Transport
from feedpub.store import queue
from feedpub.store.editions import Edition, get_edition
from feedpub.store.engine import Store
from feedpub.store.schema import Status
from feedpub.store.subscribers import record_delivery_failure
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
_POOL_MINIMUM = 200
"""With ``sign_processes`` unset, fewer messages due than this are signed in the sending
threads: starting the processes (a second of CPU each) would cost more than it saves."""


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


# --- DKIM signing, here or in a pool of processes ---------------------------------------

Finished = Callable[[], bytes]
"""Gives a message ready to send; called in a sending thread (it may wait for a signature)."""


class _Signing:
    """No DKIM: messages are sent as they are built."""

    signer: DkimSigner | None = None
    chunk = 1
    """Messages handed over at a time."""
    ahead = 0
    """Messages to build ahead of the sending threads, besides one per thread."""

    def start(self, messages: list[bytes]) -> list[Finished]:
        return [_ready(message) for message in messages]


def _ready(message: bytes) -> Finished:
    return lambda: message


class _SignInThread(_Signing):
    def __init__(self, signer: DkimSigner) -> None:
        self.signer = signer
        self._sign = signer.sign

    def start(self, messages: list[bytes]) -> list[Finished]:
        return [functools.partial(self._sign, message) for message in messages]


class _SignInPool(_Signing):
    """Each process signs a few messages per task (one round trip each), and two tasks per
    process wait their turn, so that no process idles."""

    chunk = 8

    def __init__(self, signer: DkimSigner, pool: ProcessPoolExecutor, processes: int) -> None:
        self.signer = signer
        self.pool = pool
        self.ahead = 2 * processes * self.chunk

    def start(self, messages: list[bytes]) -> list[Finished]:
        signed: Future[list[bytes]] = self.pool.submit(_sign_in_worker, messages)
        return [functools.partial(_nth_result, signed, n) for n in range(len(messages))]


def _nth_result(future: Future[list[bytes]], n: int) -> bytes:
    return future.result()[n]


# Each signing process reads the key once (in the pool's initializer) and keeps it here.
_worker_signer: DkimSigner | None = None


def _start_signer(config: DkimConfig) -> None:
    global _worker_signer
    _worker_signer = DkimSigner.from_config(config)


def _sign_in_worker(messages: list[bytes]) -> list[bytes]:
    assert _worker_signer is not None, "the pool's initializer reads the key"
    return [_worker_signer.sign(message) for message in messages]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def _signing(settings: Settings, options: SendOptions, due: int) -> Iterator[_Signing]:
    config = settings.mail.dkim
    if config is None:
        yield _Signing()
        return
    signer = DkimSigner.from_config(config)  # here first: a bad key is a ConfigError, once
    processes = options.sign_processes or _cpus()
    if processes <= 1 or (options.sign_processes is None and due < _POOL_MINIMUM):
        yield _SignInThread(signer)
        return
    # spawn: a fork would copy this process's threads' locks and database connections.
    pool = ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_signer, initargs=(config,),
    )
    try:
        yield _SignInPool(signer, pool, processes)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- one message --------------------------------------------------------------------------

OutcomeKind = Literal["sent", "temporary", "permanent", "skipped", "untried"]


@dataclass(frozen=True)
class _Outcome:
    claim: queue.Claim
    kind: OutcomeKind
    at: datetime
    reply: str = ""
    message_id: str | None = None
    server_problem: bool = False


@dataclass(frozen=True)
class _Job:
    """A claim whose message is built (and being signed): ready for a sending thread."""

    claim: queue.Claim
    message: Finished
    message_id: str


class _Composer:
    """Builds each recipient's message from the edition's stored strings.

    What the messages of an edition share is encoded once and kept (a few
    dozen editions at most); per recipient only the personal parts are made.
    The messages come unsigned: signing is the :class:`_Signing`'s job.
    """

    def __init__(self, settings: Settings, store: Store, clock: Clock,
                 signer: DkimSigner | None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.signer = signer
        self._editions: OrderedDict[int, _Prepared | None] = OrderedDict()

    def prepared(self, edition_id: int) -> _Prepared | None:
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
            template = prepare_message(
                settings=self.settings,
                newsletter=self.settings.newsletter(edition.newsletter),
                rendered=edition,
                edition_key=key,
                signer=self.signer,  # else it reads the key file again
            )
            prepared = _Prepared(edition, key, dataclasses.replace(template, signer=None))
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
    with store.read() as conn:
        total = queue.count_due(conn, clock(), newsletter=newsletter)
    if total:
        settings.require_secret()  # every message carries signed unsubscribe links
    if progress:
        progress(0, total)
    with _signing(settings, options, total) as signing:
        run = _Run(
            settings, store, transport, clock=clock, stop=stop, newsletter=newsletter,
            options=options, progress=progress, worker=worker or default_worker_id(),
            wall=wall, signing=signing, total=total,
        )
        run.loop()
    tally = run.tally
    return SendReport(
        sent=tally.sent,
        retrying=tally.retrying,
        failed=tally.failed,
        skipped=tally.skipped,
        bounced=tally.bounced,
        returned=tally.returned,
        outage=run.outage,
        stopped=stop.is_set(),
        failures=tuple(tally.failures),
    )


class _Run:
    """One :func:`send_queued`: claims flow pending -> staged (built, being signed) ->
    in flight (a sending thread) -> unrecorded -> committed."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        transport: Transport,
        *,
        clock: Clock,
        stop: threading.Event,
        newsletter: str | None,
        options: SendOptions,
        progress: Progress | None,
        worker: str,
        wall: Callable[[], float],
        signing: _Signing,
        total: int,
    ) -> None:
        self.store = store
        self.transport = transport
        self.clock = clock
        self.stop = stop
        self.newsletter = newsletter
        self.options = options
        self.progress = progress
        self.worker = worker
        self.signing = signing
        self.total = total
        rate = settings.mail.rate_limit
        self.claim_limit = options.batch_size
        if rate:
            self.claim_limit = max(options.concurrency * 2, min(self.claim_limit, int(rate * 10)))
        self.limiter = RateLimiter(store, rate, stop=stop, chunk=options.concurrency, wall=wall)
        self.composer = _Composer(settings, store, clock, signing.signer)
        self.envelope_from = settings.mail.envelope_from or settings.mail.from_address
        # Messages built ahead of the sending threads; with a pool, enough to keep it busy.
        self.lookahead = options.concurrency + signing.ahead
        self.commit_at = max(1, options.concurrency // 2)
        self.tally = _Tally()
        self.outage: str | None = None
        self.pending: deque[queue.Claim] = deque()
        self.staged: deque[_Job] = deque()
        self.inflight: dict[Future[_Outcome], queue.Claim] = {}
        self.finished: threading_queue.SimpleQueue[Future[_Outcome]] = \
            threading_queue.SimpleQueue()
        self.unrecorded: list[_Outcome] = []
        self.oldest_unrecorded = 0.0
        self.suspects: list[_Outcome] = []
        self.exhausted = False
        self.done = 0
        self.last_renewal = time.monotonic()

    @property
    def running(self) -> bool:
        return not self.stop.is_set() and self.outage is None

    def places_taken(self) -> int:
        """Messages that a server may have accepted without a record yet (but for the
        suspects of an outage: fewer than ``outage_after``)."""
        return len(self.inflight) + len(self.unrecorded)

    # -- the loop

    def loop(self) -> None:
        try:
            with ThreadPoolExecutor(max_workers=self.options.concurrency,
                                    thread_name_prefix="feedpub-send") as threads:
                while True:
                    if self.running:
                        self.claim_more()
                        self.stage()
                        self.dispatch(threads)
                    if not self.inflight:
                        if self.unrecorded:
                            self.commit()
                            continue
                        break
                    self.collect()
                    if len(self.unrecorded) >= self.commit_at or (
                        self.unrecorded and self.commit_due() <= 0
                    ):
                        self.commit()
                    self.renew_if_due()
        finally:
            # After an error only: results that came in, and claims nobody got to.
            leftovers = [f for f in self.inflight if f.done() and f.exception() is None]
            self.take(f.result() for f in leftovers)
            if self.suspects and self.outage is None:
                self.unrecorded += self.suspects
                self.suspects.clear()
            self.commit()
            untouched = [*self.pending, *(job.claim for job in self.staged),
                         *(c for f, c in self.inflight.items() if f not in leftovers)]
            self.give_back(untouched)

    def claim_more(self) -> None:
        if self.exhausted or len(self.pending) >= self.lookahead:
            return
        held = self.held()
        now = self.clock()
        with self.store.write() as conn:
            queue.requeue_expired(conn, now, self.options.lease)
            if held:
                queue.renew(conn, self.worker, held, now)
            claimed = queue.claim(conn, worker=self.worker, now=now, limit=self.claim_limit,
                                  newsletter=self.newsletter)
        self.last_renewal = time.monotonic()
        self.exhausted = not claimed
        self.pending.extend(claimed)

    def stage(self) -> None:
        """Build the next messages (and start signing them), in claim order."""
        chunk = self.signing.chunk
        while self.pending and len(self.staged) + chunk <= self.lookahead:
            built: list[tuple[queue.Claim, bytes, str]] = []
            while self.pending and len(built) < chunk:
                claim = self.pending.popleft()
                reason = self.composer.skip_reason(claim)
                if reason:
                    self.take([_Outcome(claim, "skipped", self.clock(), reply=reason)])
                    continue
                try:
                    data, message_id = self.composer.message(claim)
                except DeliveryError as error:  # an address no message can carry
                    self.take([_Outcome(claim, "permanent", self.clock(), reply=str(error))])
                    continue
                built.append((claim, data, message_id))
            if not built:
                continue
            finished = self.signing.start([data for _, data, _ in built])
            self.staged.extend(_Job(claim, message, message_id) for (claim, _, message_id),
                               message in zip(built, finished, strict=True))

    def dispatch(self, threads: ThreadPoolExecutor) -> None:
        while self.staged and self.places_taken() < self.options.concurrency:
            job = self.staged.popleft()
            future = threads.submit(self.send_one, job)
            self.inflight[future] = job.claim
            future.add_done_callback(self.finished.put)

    def send_one(self, job: _Job) -> _Outcome:
        """In a sending thread."""
        claim = job.claim
        message = job.message()
        if not self.limiter.wait_turn():
            return _Outcome(claim, "untried", self.clock())
        try:
            result = self.transport.send(self.envelope_from, claim.email, message)
        except DeliveryError as error:
            server = error.code is None or error.code in _SERVER_CODES
            return _Outcome(
                claim, "permanent" if error.permanent else "temporary", self.clock(),
                reply=str(error), server_problem=server and not error.permanent,
            )
        return _Outcome(claim, "sent", self.clock(), reply=f"{result.code} {result.reply}",
                        message_id=job.message_id)

    def commit_due(self) -> float:
        """Seconds until the oldest unrecorded result must be committed."""
        delay = self.options.commit_delay.total_seconds()
        return self.oldest_unrecorded + delay - time.monotonic()

    def collect(self) -> None:
        """Wait for at least one sending thread to finish; take every result that is in."""
        timeout = max(0.0, self.commit_due()) if self.unrecorded else None
        try:
            futures = [self.finished.get(timeout=timeout)]
        except threading_queue.Empty:
            return
        while not self.finished.empty():
            futures.append(self.finished.get())
        outcomes = [future.result() for future in futures]  # may raise: then `finally`
        for future in futures:
            self.inflight.pop(future)
        self.take(outcomes)
        self.done += len(outcomes)
        if self.progress:
            self.progress(self.done, max(self.total, self.done + len(self.pending)
                                         + len(self.staged) + len(self.inflight)))

    def take(self, outcomes: Iterable[_Outcome]) -> None:
        """Sort results: a server that fails several times in a row is an outage, and its
        failures are no one message's fault."""
        for outcome in outcomes:
            if outcome.server_problem:
                self.suspects.append(outcome)
                if self.outage is None and len(self.suspects) >= self.options.outage_after:
                    self.outage = outcome.reply
                continue
            if not self.unrecorded:
                self.oldest_unrecorded = time.monotonic()
            if outcome.kind in ("sent", "temporary", "permanent"):
                self.unrecorded += self.suspects  # the server answers: those were the messages'
                self.suspects.clear()
            self.unrecorded.append(outcome)
        if self.outage is not None and self.suspects:
            self.give_back([o.claim for o in self.suspects])
            self.suspects.clear()

    def commit(self) -> None:
        """Write the results in one transaction (a group commit)."""
        outcomes, self.unrecorded = self.unrecorded, []
        if not outcomes:
            return
        options, tally, worker = self.options, self.tally, self.worker
        sent = [
            queue.Sent(o.claim.delivery_id, o.claim.subscriber_id, o.at, o.reply, o.message_id)
            for o in outcomes if o.kind == "sent"
        ]
        with self.store.write() as conn:
            queue.mark_sent(conn, sent)
            tally.sent += len(sent)
            for outcome in outcomes:
                claim = outcome.claim
                if outcome.kind == "skipped":
                    queue.mark_skipped(conn, claim.delivery_id, worker, reason=outcome.reply)
                    tally.skipped += 1
                elif outcome.kind == "temporary" and claim.attempts + 1 < options.max_attempts:
                    next_at = outcome.at + options.retry_delay(claim.attempts + 1)
                    if queue.mark_retrying(conn, claim.delivery_id, worker,
                                           next_attempt_at=next_at, reply=outcome.reply):
                        tally.retrying += 1
                elif outcome.kind in ("temporary", "permanent"):
                    if not queue.mark_failed(conn, claim.delivery_id, worker,
                                             reply=outcome.reply):
                        continue
                    tally.failed += 1
                    if len(tally.failures) < 100:
                        tally.failures.append(Failure(claim.email, outcome.reply))
                    if outcome.kind == "permanent":
                        subscriber = record_delivery_failure(
                            conn, claim.subscriber_id, now=outcome.at,
                            bounce_after=options.bounce_after, detail=outcome.reply,
                        )
                        if subscriber.status == Status.BOUNCED and \
                                subscriber.consecutive_failures == options.bounce_after:
                            tally.bounced += 1
        self.give_back([o.claim for o in outcomes if o.kind == "untried"])

    def give_back(self, claims: list[queue.Claim]) -> None:
        if not claims:
            return
        with self.store.write() as conn:
            queue.release(conn, self.worker, [c.delivery_id for c in claims])
        self.tally.returned += len(claims)

    def renew_if_due(self) -> None:
        if time.monotonic() - self.last_renewal <= self.options.lease.total_seconds() / 4:
            return
        with self.store.write() as conn:
            queue.renew(conn, self.worker, self.held(), self.clock())
        self.last_renewal = time.monotonic()

    def held(self) -> list[int]:
        """The claims not settled yet (those in flight may be waiting for a rate slot)."""
        held = [c.delivery_id for c in self.pending]
        held += [job.claim.delivery_id for job in self.staged]
        held += [c.delivery_id for c in self.inflight.values()]
        return held
