"""The claims one worker holds: taking them, keeping their leases fresh, giving them back."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedpub.sender.options import Clock, parse_worker_id, process_gone
from feedpub.store import queue
from feedpub.store.engine import Store


class LeaseKeeper:
    """Holds this worker's claims until their results are handed to the store.

    A claim is ours from :meth:`claim` until it is settled (its result goes
    to the store) or given back. Its lease is renewed every quarter of
    ``lease``, so that other workers, which put back claims older than
    ``lease`` (their worker died), leave it alone.

    A worker known to be dead gives its claims back at once, lease or not:
    its process is gone from this host (:func:`process_gone`), or, on
    PostgreSQL, the session in which it held its presence lock has ended.
    The lease stays only for a worker that may be alive on another machine.
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
        self.presence: Connection | None = None
        """PostgreSQL: the session that holds this worker's presence lock while it runs."""
        if store.dialect == "postgresql":
            self.presence = store.engine.connect()
            queue.hold_presence(self.presence, worker)
            self.presence.commit()  # the lock is the session's: no transaction stays open

    def close(self) -> None:
        """Lets go of the presence lock (the claims are settled or given back by now)."""
        presence, self.presence = self.presence, None
        if presence is None:
            return
        try:
            presence.execute(sa.select(sa.func.pg_advisory_unlock_all()))
            presence.commit()
        finally:
            presence.close()

    def claim(self) -> list[queue.Claim]:
        """Claim up to ``limit`` due deliveries, oldest first; on the way, put back the claims
        of dead workers and renew ours."""
        now = self.clock()
        with self.store.write() as conn:
            queue.requeue_expired(conn, now, self.lease)
            self._requeue_dead(conn)
            if self.held:
                queue.renew(conn, self.worker, list(self.held), now)
            claimed = queue.claim(conn, worker=self.worker, now=now, limit=self.limit,
                                  newsletter=self.newsletter)
        self.last_renewal = time.monotonic()
        self.held.update((c.delivery_id, c) for c in claimed)
        return claimed

    def _requeue_dead(self, conn: Connection) -> None:
        postgresql = conn.dialect.name == "postgresql"
        dead = [
            worker for worker in queue.claimers(conn)
            if worker != self.worker and (
                process_gone(worker)
                or (postgresql and parse_worker_id(worker) is not None
                    and queue.session_gone(conn, worker))
            )
        ]
        queue.requeue_claims_of(conn, dead)

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
