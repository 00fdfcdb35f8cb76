"""The crash bound: messages that a server may have accepted without a record never outnumber
``concurrency``."""

from __future__ import annotations

import queue as threading_queue
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta

from feedpub.sender.policy import Outcome
from feedpub.store.queue import Claim


@dataclass(frozen=True)
class Job:
    """A claim whose message is built (and signed, with DKIM): ready for a sending thread."""

    claim: Claim
    message: bytes
    message_id: str


class Pipeline:
    """At most ``concurrency`` messages are ever in flight without a recorded result.

    A message takes one of ``concurrency`` places when :meth:`dispatch` hands
    it to a sending thread, keeps it while its result waits in ``unrecorded``
    for a group commit, and frees it only once :meth:`commit` has handed the
    result to ``record``. :meth:`dispatch` is the only way into a sending
    thread, and it starts a message only while a place is free: so a crash
    (the process killed between a server's acceptance and the commit) can
    make the next run repeat at most ``concurrency`` messages, and never lose
    one, since a claim without a result stays queued.

    Results that need no sending (a skip, an address no message can carry)
    wait for the commit too, and hold places meanwhile. Server failures that
    may be an outage are held elsewhere (``OutageWatch``); they come here
    when the server answers again, and then only delay the next dispatch.

    Results are committed once half of the places wait for a commit, or
    ``commit_delay`` after the first of them: one write transaction per few
    messages rather than per message.
    """

    def __init__(self, concurrency: int, commit_delay: timedelta,
                 record: Callable[[list[Outcome]], None]) -> None:
        self.concurrency = concurrency
        self.commit_at = max(1, concurrency // 2)
        self.commit_delay = commit_delay.total_seconds()
        self.record = record
        self.inflight: dict[Future[Outcome], Claim] = {}
        self.finished: threading_queue.SimpleQueue[Future[Outcome]] = \
            threading_queue.SimpleQueue()
        self.unrecorded: list[Outcome] = []
        self.oldest_unrecorded = 0.0

    def places_taken(self) -> int:
        """Messages that a server may have accepted without a record yet."""
        return len(self.inflight) + len(self.unrecorded)

    def dispatch(self, staged: deque[Job], submit: Callable[[Job], Future[Outcome]]) -> None:
        """Start sending the next staged messages, while places are free."""
        while staged and self.places_taken() < self.concurrency:
            job = staged.popleft()
            future = submit(job)
            self.inflight[future] = job.claim
            future.add_done_callback(self.finished.put)

    def hold(self, outcomes: list[Outcome]) -> None:
        """Results waiting for the group commit; their places stay taken."""
        if outcomes and not self.unrecorded:
            self.oldest_unrecorded = time.monotonic()
        self.unrecorded += outcomes

    def collect(self) -> list[Outcome]:
        """Wait for at least one sending thread to finish (or for the commit to be due); the
        results that are in. They leave ``inflight``: the caller must :meth:`hold` them."""
        timeout = max(0.0, self.commit_due()) if self.unrecorded else None
        try:
            futures = [self.finished.get(timeout=timeout)]
        except threading_queue.Empty:
            return []
        while not self.finished.empty():
            futures.append(self.finished.get())
        outcomes = [future.result() for future in futures]  # may raise: see `salvage`
        for future in futures:
            self.inflight.pop(future)
        return outcomes

    def salvage(self) -> list[Outcome]:
        """After an error (the sending threads have ended): the results that came in anyway.
        The claims of messages whose thread failed stay in ``inflight``."""
        done = [f for f in self.inflight if f.done() and f.exception() is None]
        for future in done:
            self.inflight.pop(future)
        return [future.result() for future in done]

    def commit_due(self) -> float:
        """Seconds until the oldest unrecorded result must be committed."""
        return self.oldest_unrecorded + self.commit_delay - time.monotonic()

    def commit_if_due(self) -> None:
        if len(self.unrecorded) >= self.commit_at or (
            self.unrecorded and self.commit_due() <= 0
        ):
            self.commit()

    def commit(self) -> None:
        """Record every waiting result (one transaction); their places are free again."""
        outcomes, self.unrecorded = self.unrecorded, []
        if outcomes:
            self.record(outcomes)
