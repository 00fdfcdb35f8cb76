"""The claims one worker holds: taking them, keeping their leases fresh, giving them back."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta

from feedpub.sender.options import Clock
from feedpub.store import queue
from feedpub.store.engine import Store


class LeaseKeeper:
    """Holds this worker's claims until their results are handed to the store.

    A claim is ours from :meth:`claim` until it is settled (its result goes
    to the store) or given back. Its lease is renewed every quarter of
    ``lease``, so that other workers, which put back claims older than
    ``lease`` (their worker died), leave it alone.
    """

    def __init__(self, store: Store, *, worker: str, clock: Clock, lease: timedelta,
                 newsletter: str | None, limit: int) -> None:
        self.store = store
        self.worker = worker
        self.clock = clock
        self.lease = lease
        self.newsletter = newsletter
        self.limit = limit
        self.held: dict[int, queue.Claim] = {}
        self.returned = 0
        """Claims given back untried."""
        self.last_renewal = time.monotonic()

    def claim(self) -> list[queue.Claim]:
        """Claim up to ``limit`` due deliveries, oldest first; on the way, put back the claims
        of dead workers and renew ours."""
        now = self.clock()
        with self.store.write() as conn:
            queue.requeue_expired(conn, now, self.lease)
            if self.held:
                queue.renew(conn, self.worker, list(self.held), now)
            claimed = queue.claim(conn, worker=self.worker, now=now, limit=self.limit,
                                  newsletter=self.newsletter)
        self.last_renewal = time.monotonic()
        self.held.update((c.delivery_id, c) for c in claimed)
        return claimed

    def renew_if_due(self) -> None:
        if time.monotonic() - self.last_renewal <= self.lease.total_seconds() / 4:
            return
        with self.store.write() as conn:
            queue.renew(conn, self.worker, list(self.held), self.clock())
        self.last_renewal = time.monotonic()

    def settle(self, claims: Iterable[queue.Claim]) -> None:
        """These claims' results go to the store: they are no longer ours to renew or give
        back (if that write fails, their lease runs out and another run sends them)."""
        for claim in claims:
            self.held.pop(claim.delivery_id, None)

    def give_back(self, claims: list[queue.Claim]) -> None:
        """Put claims back in the queue as they were (untried: no attempt counted)."""
        if not claims:
            return
        with self.store.write() as conn:
            queue.release(conn, self.worker, [c.delivery_id for c in claims])
        self.settle(claims)
        self.returned += len(claims)

    def give_back_all(self) -> None:
        self.give_back(list(self.held.values()))
