"""The web form's rate limits shared by several processes through the database."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feedpub.store import open_store
from feedpub.store.engine import Store
from feedpub.web import RateLimit, WebLimits, create_app
from feedpub.web.guards import SharedBuckets, TokenBuckets, make_buckets
from tests.conftest import SiteFactory
from tests.test_web import BASE, TestClient, Web, make_web

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with open_store(database_url) as opened:
        yield opened


def test_shared_buckets_answer_as_the_buckets_in_memory(store: Store) -> None:
    limit = RateLimit(burst=3, interval=timedelta(seconds=20))
    memory, shared = TokenBuckets(limit), SharedBuckets(store, "client", limit)
    rng = random.Random(14)
    now = NOW
    for _ in range(120):
        now += timedelta(seconds=rng.choice([0, 0, 1, 5, 20, 45]))
        key = rng.choice(["192.0.2.1", "192.0.2.2"])
        expected, got = memory.take(key, now), shared.take(key, now)
        assert (got is None) == (expected is None), (key, now)
        if got is not None and expected is not None:  # rounded up from floats: ±1 s
            assert abs((got - expected).total_seconds()) <= 1, (key, now)


def test_sqlite_keeps_limits_in_memory_and_postgresql_in_the_database(store: Store) -> None:
    per_client, _ = make_buckets(store, WebLimits())
    expected = SharedBuckets if store.dialect == "postgresql" else TokenBuckets
    assert isinstance(per_client, expected)
    assert isinstance(make_buckets(store, WebLimits(shared=True))[0], SharedBuckets)


def test_two_app_instances_sharing_a_database_share_one_limit(
        make_site: SiteFactory, database_url: str, tmp_path: Path) -> None:
    # Two `serve` processes (or uvicorn workers) behind one address: 3 posts may pass in
    # all, not 3 each.
    limits = WebLimits(per_client=RateLimit(burst=3, interval=timedelta(minutes=10)),
                       shared=True)
    with make_web(make_site, database_url, limits=limits) as first:
        other = open_store(database_url)
        try:
            app = create_app(first.settings, now=first.clock, store=other, limits=limits)
            with TestClient(app, base_url=BASE, client=("198.51.100.7", 40000)) as client:
                second = Web(first.settings, other, client, first.clock, first.outbox)
                codes = [web.subscribe(f"r{i}@example.com").status_code  # type: ignore[attr-defined]
                         for i, web in enumerate([first, second] * 3)]
                first.clock.advance(minutes=10)
                later = second.subscribe("later@example.com")
        finally:
            other.close()
    assert sorted(codes) == [200, 200, 200, 429, 429, 429]
    assert later.status_code == 200  # type: ignore[attr-defined]
