"""Commits the :class:`~feedpub.sender.policy.ResultPolicy`'s decisions to the store and counts
them: one write transaction for a group of results."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from feedpub.sender.leases import LeaseKeeper
from feedpub.sender.options import Failure
from feedpub.sender.policy import Decision, Outcome, ResultPolicy
from feedpub.store import queue
from feedpub.store.engine import Store
from feedpub.store.schema import Status
from feedpub.store.subscribers import record_delivery_failure

_FAILURES_KEPT = 100


@dataclass
class Tally:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    bounced: int = 0
    failures: list[Failure] = field(default_factory=list)


class Recorder:
    """Writes results; a claim that another worker took meanwhile (its lease ran out) is not
    counted, except a sent message, which the server has either way."""

    def __init__(self, store: Store, policy: ResultPolicy, leases: LeaseKeeper) -> None:
        self.store = store
        self.policy = policy
        self.leases = leases
        self.tally = Tally()

    def commit(self, outcomes: list[Outcome]) -> None:
        """Write the results in one transaction (a group commit)."""
        if not outcomes:
            return
        self.leases.settle(o.claim for o in outcomes)
        decisions = [self.policy.decide(outcome) for outcome in outcomes]
        sent = [
            queue.Sent(o.claim.delivery_id, o.claim.subscriber_id, o.at, o.reply, o.message_id)
            for o in (d.outcome for d in decisions if d.action == "sent")
        ]
        with self.store.write() as conn:
            queue.mark_sent(conn, sent)
            self.tally.sent += len(sent)
            for decision in decisions:
                self._apply(conn, decision)
        self.leases.give_back([d.outcome.claim for d in decisions if d.action == "put_back"])

    def _apply(self, conn: Connection, decision: Decision) -> None:
        outcome, worker, tally = decision.outcome, self.leases.worker, self.tally
        claim = outcome.claim
        if decision.action == "skip":
            queue.mark_skipped(conn, claim.delivery_id, worker, reason=outcome.reply)
            tally.skipped += 1
        elif decision.action == "retry":
            assert decision.next_attempt_at is not None
            if queue.mark_retrying(conn, claim.delivery_id, worker,
                                   next_attempt_at=decision.next_attempt_at, reply=outcome.reply):
                tally.retrying += 1
        elif decision.action == "fail":
            if not queue.mark_failed(conn, claim.delivery_id, worker, reply=outcome.reply):
                return
            tally.failed += 1
            if len(tally.failures) < _FAILURES_KEPT:
                tally.failures.append(Failure(claim.email, outcome.reply))
            if decision.hard:
                self._count_hard_failure(conn, outcome)

    def _count_hard_failure(self, conn: Connection, outcome: Outcome) -> None:
        subscriber = record_delivery_failure(
            conn, outcome.claim.subscriber_id, now=outcome.at,
            bounce_after=self.policy.bounce_after, detail=outcome.reply,
        )
        if subscriber.status == Status.BOUNCED and \
                self.policy.bounces_now(subscriber.consecutive_failures):
            self.tally.bounced += 1
