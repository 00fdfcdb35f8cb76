"""The categories a subscriber can pick: those of the published posts, from the catalog."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path

from feedpub.catalog import catalog_cache_path, load_catalog
from feedpub.config import Settings
from feedpub.errors import FeedpubError

log = logging.getLogger(__name__)

_FileState = tuple[int, int] | None
"""A file's (mtime_ns, size), or None when it is missing."""


def _file_state(path: Path) -> _FileState:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


class SiteCategories:
    """The categories of the catalog as it is now.

    Scanning the posts on every request would cost a stat per post, so the list is
    kept while nothing says the catalog changed: a ``build`` (or ``check``) writes
    the catalog's cache (a SQLite file in WAL mode, so the ``-wal`` file changes on
    every write), and adding or removing a post changes the posts folder. The list
    is also refreshed after ``ttl``, for scheduled posts whose time has come.
    """

    def __init__(self, settings: Settings, *, ttl: timedelta = timedelta(minutes=5)) -> None:
        self.settings = settings
        self.ttl = ttl
        self._names: tuple[str, ...] = ()
        self._at: datetime | None = None
        self._state: tuple[_FileState, ...] | None = None
        self._lock = threading.Lock()

    def _catalog_state(self) -> tuple[_FileState, ...]:
        cache = catalog_cache_path(self.settings)
        return (
            _file_state(cache),
            _file_state(cache.with_name(cache.name + "-wal")),
            _file_state(self.settings.posts_dir),
        )

    def names(self, now: datetime) -> tuple[str, ...]:
        """Every category of a published post, sorted without regard to case."""
        with self._lock:
            state = self._catalog_state()
            if (self._at is not None and abs(now - self._at) < self.ttl
                    and state == self._state):
                return self._names
            try:
                catalog = load_catalog(self.settings, now)
            except FeedpubError as exc:
                # The form still works without a picker; the owner sees why in the log.
                log.error("cannot list categories for the subscribe form: %s", exc)
                self._names = ()
            else:
                self._names = catalog.categories
            # Scanning may itself write the cache: what it leaves is the state to compare.
            self._at, self._state = now, self._catalog_state()
            return self._names
