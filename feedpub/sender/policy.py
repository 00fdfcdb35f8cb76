"""What a send's outcome means: sent, retry later, fail, skip, or put back untouched.

Pure: no database, no SMTP. :class:`ResultPolicy` turns each outcome into a
:class:`Decision`, which :mod:`feedpub.sender.record` commits;
:class:`OutageWatch` tells a server that is down from messages that fail.

- accepted: ``sent``;
- a 4xx reply, a lost connection, a timeout: ``retry`` after a backoff that
  grows, ``fail`` after ``max_attempts``;
- a 5xx reply, or an address no message can be built for: ``fail``, and it
  counts as a hard failure: the ``bounce_after``-th in a row bounces the
  subscriber;
- the subscriber is no longer active, or the newsletter is gone: ``skip``;
- never tried (a stop while waiting for a rate slot): ``put_back``.

Several consecutive failures that concern the server rather than a message
(no connection, or 421 "closing channel") mean an outage: those deliveries are
put back as they were, without counting an attempt. So does a run that ends on
such failures while the server still cannot be reached (a probe at the end):
one pending message or a thousand, an unreachable server is an outage.
Only an answer to a transaction that *started after* a failure clears it: a
success on another connection that was already under way proves nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from feedpub.errors import DeliveryError
from feedpub.sender.options import SendOptions
from feedpub.store.queue import Claim

OutcomeKind = Literal["sent", "temporary", "permanent", "skipped", "untried"]
ANSWERED: tuple[OutcomeKind, ...] = ("sent", "temporary", "permanent")
"""Outcomes in which the server answered for one message."""
SERVER_CODES = (421,)
"""Replies that speak for the server, not for one message: 421 closes the channel."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one claim in this run."""

    claim: Claim
    kind: OutcomeKind
    at: datetime
    reply: str = ""
    message_id: str | None = None
    server_problem: bool = False
    """No connection, or a reply that closes the channel: maybe the server, not the message."""
    began: float = 0.0
    """When the send started (``time.monotonic()``; 0 when not sent)."""
    ended: float = 0.0
    """When the send ended (``time.monotonic()``)."""


def refused(claim: Claim, error: DeliveryError, at: datetime, *, began: float = 0.0,
            ended: float = 0.0) -> Outcome:
    """The outcome of a send that the transport refused with ``error``."""
    server = error.code is None or error.code in SERVER_CODES
    return Outcome(
        claim, "permanent" if error.permanent else "temporary", at,
        reply=str(error), server_problem=server and not error.permanent,
        began=began, ended=ended,
    )


Action = Literal["sent", "retry", "fail", "skip", "put_back"]


@dataclass(frozen=True)
class Decision:
    action: Action
    outcome: Outcome
    next_attempt_at: datetime | None = None
    """For ``retry``: when the delivery is due again."""
    hard: bool = False
    """For ``fail``: a hard failure, which counts towards bouncing the subscriber."""


@dataclass(frozen=True)
class ResultPolicy:
    """Retry, fail, bounce: the rules of :class:`SendOptions`, applied to outcomes."""

    options: SendOptions

    def decide(self, outcome: Outcome) -> Decision:
        kind = outcome.kind
        if kind == "sent":
            return Decision("sent", outcome)
        if kind == "skipped":
            return Decision("skip", outcome)
        if kind == "untried":
            return Decision("put_back", outcome)
        attempt = outcome.claim.attempts + 1
        if kind == "temporary" and attempt < self.options.max_attempts:
            return Decision("retry", outcome,
                            next_attempt_at=outcome.at + self.options.retry_delay(attempt))
        return Decision("fail", outcome, hard=kind == "permanent")

    @property
    def bounce_after(self) -> int:
        return self.options.bounce_after

    def bounces_now(self, hard_failures_in_a_row: int) -> bool:
        """Whether the subscriber's hard failure that made this count bounced them: only the
        ``bounce_after``-th does (later ones find them bounced already)."""
        return hard_failures_in_a_row == self.options.bounce_after


Probe = Callable[[], str | None]
"""Asks the server for a greeting: None when it answers, else why it cannot be reached."""


class OutageWatch:
    """Sorts outcomes into those to record and those to put back because the server is down.

    A server problem is held as a suspect. An answer from the server for a
    message whose send *began after* a suspect ended shows the server was up
    then: that suspect was the message's own failure and is recorded (an
    answer on a transaction already under way proves nothing, so it clears
    nothing). The ``outage_after``-th suspect in a row declares an outage, and
    every suspect goes back to the queue as it was. Suspects still held when
    the run ends are judged by a probe: a server that still does not answer
    is an outage, however few messages were pending.
    """

    def __init__(self, outage_after: int) -> None:
        self.outage_after = outage_after
        self.outage: str | None = None
        """The reply that declared the outage."""
        self.suspects: list[Outcome] = []

    def sort(self, outcomes: Iterable[Outcome]) -> tuple[list[Outcome], list[Claim]]:
        """The outcomes to record, and the claims to put back untouched."""
        record: list[Outcome] = []
        for outcome in outcomes:
            if outcome.server_problem:
                self.suspects.append(outcome)
                if self.outage is None and len(self.suspects) >= self.outage_after:
                    self.outage = outcome.reply
                continue
            if outcome.kind in ANSWERED:  # the server answered after these suspects failed
                cleared = [s for s in self.suspects if s.ended <= outcome.began]
                if cleared:
                    record += cleared
                    self.suspects = [s for s in self.suspects if s.ended > outcome.began]
            record.append(outcome)
        put_back: list[Claim] = []
        if self.outage is not None:
            put_back = [suspect.claim for suspect in self.suspects]
            self.suspects.clear()
        return record, put_back

    def settle(self, probe: Probe | None = None) -> tuple[list[Outcome], list[Claim]]:
        """At the end of a run: the suspects left, as failures to record or (the ``probe``
        finds the server still unreachable: an outage) claims to put back."""
        if self.outage is not None or not self.suspects:
            put_back = [suspect.claim for suspect in self.suspects]
            self.suspects.clear()
            return [], put_back
        unreachable = probe() if probe is not None else None
        suspects, self.suspects = self.suspects, []
        if unreachable is None:
            return suspects, []
        self.outage = unreachable
        return [], [suspect.claim for suspect in suspects]
