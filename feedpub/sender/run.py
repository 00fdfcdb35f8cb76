"""One :func:`~feedpub.sender.send_queued`: claims flow pending -> staged (built, being signed)
-> in flight (a sending thread) -> unrecorded -> committed.

The parts: the :class:`~feedpub.sender.leases.LeaseKeeper` holds the claims,
:class:`Staging` builds their messages, the :class:`~feedpub.sender.pipeline.Pipeline`
sends them within the crash bound, :class:`~feedpub.sender.policy.OutageWatch`
and :class:`~feedpub.sender.policy.ResultPolicy` judge the outcomes, the
:class:`~feedpub.sender.record.Recorder` commits them. :class:`Run` only turns
the crank.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from feedpub.config import Settings
from feedpub.errors import DeliveryError
from feedpub.mail.message import DkimSigner
from feedpub.mail.transports import Transport
from feedpub.sender.compose import Composer
from feedpub.sender.leases import LeaseKeeper
from feedpub.sender.options import Clock, Progress, SendOptions
from feedpub.sender.pipeline import Job, Pipeline
from feedpub.sender.policy import OutageWatch, Outcome, Probe, ResultPolicy, refused
from feedpub.sender.rate import RateLimiter
from feedpub.sender.record import Recorder
from feedpub.store import queue
from feedpub.store.engine import Store
from feedpub.tokens import make_return_token


class Staging:
    """Builds the next messages (signed, with DKIM), in claim order, a few ahead of the
    sending threads; a claim that needs no message becomes an outcome at once."""

    def __init__(self, composer: Composer, clock: Clock, lookahead: int) -> None:
        self.composer = composer
        self.clock = clock
        self.lookahead = lookahead
        self.pending: deque[queue.Claim] = deque()
        self.staged: deque[Job] = deque()

    def __len__(self) -> int:
        return len(self.pending) + len(self.staged)

    def stage(self) -> list[Outcome]:
        """Stage up to ``lookahead`` messages; the outcomes of claims that cannot be sent."""
        outcomes: list[Outcome] = []
        while self.pending and len(self.staged) < self.lookahead:
            claim = self.pending.popleft()
            reason = self.composer.skip_reason(claim)
            if reason:
                outcomes.append(Outcome(claim, "skipped", self.clock(), reply=reason))
                continue
            try:
                data, message_id = self.composer.message(claim)
            except DeliveryError as error:  # an address no message can carry
                outcomes.append(Outcome(claim, "permanent", self.clock(), reply=str(error)))
                continue
            self.staged.append(Job(claim, data, message_id))
        return outcomes


def return_path_of(settings: Settings) -> Callable[[queue.Claim], str]:
    """The envelope sender of each claim: ``bounces+TOKEN@verp_domain`` with VERP, so that
    a bounce names its delivery; else the one ``mail.return_path``."""
    mail = settings.mail
    if not mail.verp_domain:
        return lambda claim: mail.return_path
    secret = settings.require_secret()

    def verp(claim: queue.Claim) -> str:
        address = mail.verp_address(make_return_token(secret, claim.delivery_id))
        assert address is not None
        return address

    return verp


class Courier:
    """Sends one message, in a sending thread, when the rate limit gives it a turn."""

    def __init__(self, transport: Transport, limiter: RateLimiter,
                 envelope_from: Callable[[queue.Claim], str], clock: Clock) -> None:
        self.transport = transport
        self.limiter = limiter
        self.envelope_from = envelope_from
        self.clock = clock

    def send(self, job: Job) -> Outcome:
        claim = job.claim
        message = job.message
        if not self.limiter.wait_turn():
            return Outcome(claim, "untried", self.clock())
        began = time.monotonic()
        try:
            result = self.transport.send(self.envelope_from(claim), claim.email, message)
        except DeliveryError as error:
            return refused(claim, error, self.clock(), began=began, ended=time.monotonic())
        return Outcome(claim, "sent", self.clock(), reply=f"{result.code} {result.reply}",
                       message_id=job.message_id, began=began, ended=time.monotonic())


class Run:
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
        signer: DkimSigner | None,
        total: int,
    ) -> None:
        self.stop = stop
        self.options = options
        self.progress = progress
        self.total = total
        rate = settings.mail.rate_limit
        claim_limit = options.batch_size
        if rate:
            claim_limit = max(options.concurrency * 2, min(claim_limit, int(rate * 10)))
        self.leases = LeaseKeeper(store, worker=worker, clock=clock, lease=options.lease,
                                  newsletter=newsletter, limit=claim_limit)
        self.staging = Staging(Composer(settings, store, clock, signer), clock,
                               lookahead=options.concurrency)
        limiter = RateLimiter(store, rate, stop=stop, chunk=options.concurrency, wall=wall)
        self.courier = Courier(transport, limiter, return_path_of(settings), clock)
        # A transport without a probe (a test's fake): a run that ends on server failures
        # is an outage.
        self.probe: Probe = getattr(transport, "probe", None) or (lambda: "no answer")
        self.recorder = Recorder(store, ResultPolicy(options), self.leases)
        self.pipeline = Pipeline(options.concurrency, options.commit_delay, self.recorder.commit)
        self.watch = OutageWatch(options.outage_after)
        self.exhausted = False
        self.done = 0

    @property
    def running(self) -> bool:
        return not self.stop.is_set() and self.watch.outage is None

    def loop(self) -> None:
        pipeline = self.pipeline
        try:
            with ThreadPoolExecutor(max_workers=self.options.concurrency,
                                    thread_name_prefix="feedpub-send") as threads:
                while True:
                    if self.running:
                        self.claim_more()
                        self.take(self.staging.stage())
                        pipeline.dispatch(self.staging.staged,
                                          lambda job: threads.submit(self.courier.send, job))
                    if not pipeline.inflight:
                        if pipeline.unrecorded:
                            pipeline.commit()
                            continue
                        break
                    self.collect()
                    pipeline.commit_if_due()
                    self.leases.renew_if_due()
        finally:
            # After an error, the results that came in; after a stop, no outage, the last
            # server failures: recorded. The claims nobody got to: given back.
            self.take(pipeline.salvage())
            record, put_back = self.watch.settle(self.probe)
            pipeline.hold(record)
            pipeline.commit()
            self.leases.give_back(put_back)
            self.leases.give_back_all()

    def claim_more(self) -> None:
        if self.exhausted or len(self.staging.pending) >= self.staging.lookahead:
            return
        claimed = self.leases.claim()
        self.exhausted = not claimed
        self.staging.pending.extend(claimed)

    def collect(self) -> None:
        outcomes = self.pipeline.collect()
        if not outcomes:
            return
        self.take(outcomes)
        self.done += len(outcomes)
        if self.progress:
            self.progress(self.done, max(self.total, self.done + len(self.staging)
                                         + len(self.pipeline.inflight)))

    def take(self, outcomes: list[Outcome]) -> None:
        record, put_back = self.watch.sort(outcomes)
        self.pipeline.hold(record)
        self.leases.give_back(put_back)
