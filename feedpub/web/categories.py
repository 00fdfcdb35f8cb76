"""The categories a subscriber can pick: those of the published posts, from the catalog."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from feedpub.catalog import load_catalog
from feedpub.config import Settings
from feedpub.errors import FeedpubError

log = logging.getLogger(__name__)


class SiteCategories:
    """Scans the posts at most once per ``ttl`` (a scan reads the catalog's cache and
    reads again only posts that changed since the last scan)."""

    def __init__(self, settings: Settings, *, ttl: timedelta = timedelta(minutes=5)) -> None:
        self.settings = settings
        self.ttl = ttl
        self._names: tuple[str, ...] = ()
        self._at: datetime | None = None
        self._lock = threading.Lock()

    def names(self, now: datetime) -> tuple[str, ...]:
        """Every category of a published post, sorted without regard to case."""
        with self._lock:
            if self._at is not None and abs(now - self._at) < self.ttl:
                return self._names
            try:
                catalog = load_catalog(self.settings, now)
            except FeedpubError as exc:
                # The form still works without a picker; the owner sees why in the log.
                log.error("cannot list categories for the subscribe form: %s", exc)
                self._names, self._at = (), now
                return ()
            self._names = catalog.categories
            self._at = now
            return self._names
