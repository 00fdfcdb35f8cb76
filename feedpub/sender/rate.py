"""The shared rate limit: send times handed out from the database to every worker."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from feedpub.store import queue
from feedpub.store.engine import Store

RATE_NAME = "mail"
"""The ``send_rate`` row that every worker shares."""
_RATE_HORIZON = 300.0


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
