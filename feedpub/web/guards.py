"""What keeps the subscribe form from being abused: rate limits, same-origin posts, form tokens.

The rate limits are token buckets. With SQLite (one machine, usually one
``feedpub serve`` process) they are held in the app's memory
(:class:`TokenBuckets`); with PostgreSQL, or when ``WebLimits.shared`` says
so, in the database (:class:`SharedBuckets`), so that ``uvicorn --workers N``
and several ``serve`` instances behind a balancer share one limit instead of
multiplying it.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from feedpub.store.engine import Store, insert_ignoring_conflicts
from feedpub.store.schema import web_rate_limits


@dataclass(frozen=True)
class RateLimit:
    """``burst`` requests at once, then one more every ``interval``."""

    burst: int
    interval: timedelta


@dataclass(frozen=True)
class WebLimits:
    per_client: RateLimit = RateLimit(burst=10, interval=timedelta(minutes=1))
    """Subscribe posts from one client address."""
    per_address: RateLimit = RateLimit(burst=2, interval=timedelta(hours=1))
    """Confirmation emails to one email address: nobody can flood an inbox with them."""
    form_max_age: timedelta = timedelta(days=2)
    """A subscribe form older than this is shown again instead of being accepted."""
    max_tracked: int = 100_000
    """Keys each bucket set remembers; the least recently seen are forgotten first."""
    shared: bool | None = None
    """Keep the limits in the database, shared by every process that uses it. None: when
    the database is PostgreSQL (SQLite keeps them in the process's memory)."""


@dataclass
class _Bucket:
    tokens: float
    at: datetime


@dataclass
class TokenBuckets:
    """One token bucket per key (a client address, an email address)."""

    limit: RateLimit
    max_tracked: int = 100_000
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str, now: datetime) -> timedelta | None:
        """Spend one token for ``key``: None when allowed, else how long until one is back."""
        rate = 1 / self.limit.interval.total_seconds()
        with self._lock:
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                bucket = _Bucket(tokens=float(self.limit.burst), at=now)
            elapsed = max((now - bucket.at).total_seconds(), 0.0)
            bucket.tokens = min(float(self.limit.burst), bucket.tokens + elapsed * rate)
            bucket.at = max(now, bucket.at)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_tracked:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return None
            return timedelta(seconds=math.ceil((1 - bucket.tokens) / rate))


class Buckets(Protocol):
    def take(self, key: str, now: datetime) -> timedelta | None:
        """Spend one token for ``key``: None when allowed, else how long until one is back."""
        ...


class SharedBuckets:
    """Token buckets in the database (``web_rate_limits``), shared by every process.

    Each key keeps one number, as in the generic cell rate algorithm: the
    moment its bucket is full again (``full_at``). A request is let through
    while that moment is less than ``burst - 1`` intervals ahead, and moves
    it one interval further: the same answers as :class:`TokenBuckets`. Keys
    are hashed (client and email addresses stay out of the table) and scoped
    by ``scope``; rows of full buckets are deleted now and then.
    """

    PRUNE_EVERY = 256
    """Takes between two deletions of full buckets' rows."""

    def __init__(self, store: Store, scope: str, limit: RateLimit) -> None:
        self.store = store
        self.scope = scope
        self.limit = limit
        self._takes = itertools.count(1)

    def key_of(self, key: str) -> str:
        digest = hashlib.sha256(f"{self.scope}\0{key}".encode()).hexdigest()[:40]
        return f"{self.scope}:{digest}"

    def take(self, key: str, now: datetime) -> timedelta | None:
        interval = self.limit.interval.total_seconds()
        tolerance = interval * (self.limit.burst - 1)
        at = now.timestamp()
        name = self.key_of(key)
        with self.store.write() as conn:
            conn.execute(
                insert_ignoring_conflicts(conn, web_rate_limits)
                .values(key=name, full_at=0.0)
                .on_conflict_do_nothing(index_elements=["key"])
            )
            query = sa.select(web_rate_limits.c.full_at).where(web_rate_limits.c.key == name)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            full_at = max(float(conn.execute(query).scalar_one()), at)
            if full_at - at > tolerance:
                return timedelta(seconds=math.ceil(full_at - at - tolerance))
            conn.execute(web_rate_limits.update().where(web_rate_limits.c.key == name)
                         .values(full_at=full_at + interval))
            if next(self._takes) % self.PRUNE_EVERY == 0:
                conn.execute(web_rate_limits.delete().where(web_rate_limits.c.full_at < at))
        return None


def make_buckets(store: Store, limits: WebLimits) -> tuple[Buckets, Buckets]:
    """The per-client and per-address buckets: shared through the database, or in memory."""
    shared = limits.shared if limits.shared is not None else store.dialect == "postgresql"
    if shared:
        return (SharedBuckets(store, "client", limits.per_client),
                SharedBuckets(store, "address", limits.per_address))
    return (TokenBuckets(limits.per_client, limits.max_tracked),
            TokenBuckets(limits.per_address, limits.max_tracked))


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url``, lower-cased; None when it has none."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def same_origin(headers: Headers, *, trusted_origins: Collection[str]) -> bool:
    """Whether a form post comes from one of our pages, not from another site.

    Browsers send ``Origin`` with every POST (``null`` from sandboxed or
    privacy-stripped contexts, refused here). It must be one of
    ``trusted_origins`` (the origin of ``web.url``, and for the subscribe form
    those of ``site.url`` and ``web.embed_origins``) or name the host the request
    was sent to. Without ``Origin``, ``Referer`` is checked the same way; a
    client that sends neither is not a browser posting across sites and is let
    through.
    """
    claimed = headers.get("origin")
    if claimed is None:
        referer = headers.get("referer")
        if referer is None:
            return True
        claimed = origin_of(referer) or "null"
    claimed = claimed.strip().lower()
    if claimed in {origin.lower() for origin in trusted_origins}:
        return True
    host = headers.get("host", "").strip().lower()
    parts = urlsplit(claimed)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc == host


def posted_from(headers: Headers, origins: Collection[str]) -> str | None:
    """The ``Origin`` a browser sent, when it is one of ``origins``; else None."""
    claimed = (headers.get("origin") or "").strip().lower()
    return claimed if claimed in {origin.lower() for origin in origins} else None


class FormTokens:
    """A signed time stamp in each subscribe form: posts must come from a recent form."""

    def __init__(self, secret: str, max_age: timedelta) -> None:
        self._serializer = URLSafeSerializer(secret, salt="feedpub.subscribe-form")
        self.max_age = max_age

    def issue(self, now: datetime) -> str:
        return self._serializer.dumps(int(now.timestamp()))

    def valid(self, token: str, now: datetime) -> bool:
        try:
            issued = self._serializer.loads(token)
        except BadSignature:
            return False
        if not isinstance(issued, int) or isinstance(issued, bool):
            return False
        age = now.timestamp() - issued
        return -60 <= age <= self.max_age.total_seconds()


class BodyLimit:
    """ASGI middleware: a request body must announce its length, and keep it short.

    Forms here are a few hundred bytes. Browsers and mail providers send
    ``Content-Length`` with every form post (uvicorn then reads no more than
    that), so a body without one (chunked) gets 411 and a longer one 413,
    before anything is read into memory.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            headers = Headers(scope=scope)
            length = headers.get("content-length")
            refusal: tuple[int, bytes] | None = None
            if length is None:
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    refusal = (411, b"Length Required: send Content-Length\n")
            elif not length.isdigit() or int(length) > self.max_bytes:
                refusal = (413, b"Request body too large\n")
            if refusal is not None:
                await PlainTextResponse(refusal[1].decode(), status_code=refusal[0])(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)
