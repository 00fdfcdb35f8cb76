"""Signed links: purpose-scoped, tamper-evident, expiring where they should."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from feedpub.store import (
    Status,
    Store,
    add_subscriber,
    forget_subscriber,
    open_store,
    subscriber_for_token,
    unsubscribe_subscriber,
)
from feedpub.tokens import Purpose, TokenError, make_token, read_token

SECRET = "correct horse battery staple"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_token_names_its_subscriber_and_check(purpose: Purpose) -> None:
    token = make_token(SECRET, purpose, 42, check="k3y", now=NOW)
    claim = read_token(SECRET, purpose, token, max_age=WEEK, now=NOW + timedelta(days=1))
    assert (claim.subscriber_id, claim.check, claim.issued_at) == (42, "k3y", NOW)
    assert all(c.isalnum() or c in "-_." for c in token)


@pytest.mark.parametrize(
    ("made_for", "used_for"),
    [(a, b) for a in Purpose for b in Purpose if a != b],
)
def test_a_token_for_one_purpose_is_refused_for_another(
    made_for: Purpose, used_for: Purpose
) -> None:
    token = make_token(SECRET, made_for, 1, check="k", now=NOW)
    with pytest.raises(TokenError):
        read_token(SECRET, used_for, token, max_age=None, now=NOW)


def test_a_tampered_token_is_refused() -> None:
    token = make_token(SECRET, Purpose.UNSUBSCRIBE, 1, check="k", now=NOW)
    other = make_token(SECRET, Purpose.UNSUBSCRIBE, 2, check="k", now=NOW)
    payload, stamp, signature = token.split(".")
    other_payload = other.split(".")[0]
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    for forged in (f"{other_payload}.{stamp}.{signature}", f"{payload}.{stamp}.{flipped}",
                   token[:-3], token + "x", "", "garbage", "a.b.c"):
        with pytest.raises(TokenError):
            read_token(SECRET, Purpose.UNSUBSCRIBE, forged, max_age=None, now=NOW)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = make_token("another secret", Purpose.CONFIRM, 1, check="k", now=NOW)
    with pytest.raises(TokenError):
        read_token(SECRET, Purpose.CONFIRM, token, max_age=WEEK, now=NOW)


def test_confirmation_tokens_expire() -> None:
    token = make_token(SECRET, Purpose.CONFIRM, 7, check="k", now=NOW)
    within = read_token(SECRET, Purpose.CONFIRM, token, max_age=WEEK,
                        now=NOW + WEEK - timedelta(minutes=1))
    assert within.subscriber_id == 7
    with pytest.raises(TokenError, match="expired on 2026-01-12"):
        read_token(SECRET, Purpose.CONFIRM, token, max_age=WEEK,
                   now=NOW + WEEK + timedelta(minutes=1))


def test_tokens_without_max_age_never_expire() -> None:
    token = make_token(SECRET, Purpose.UNSUBSCRIBE, 7, check="k", now=NOW)
    claim = read_token(SECRET, Purpose.UNSUBSCRIBE, token, max_age=None,
                       now=NOW + timedelta(days=3650))
    assert claim.subscriber_id == 7


def test_no_secret_no_token() -> None:
    with pytest.raises(TokenError, match="secret"):
        make_token("", Purpose.CONFIRM, 1, check="k", now=NOW)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with open_store(database_url) as opened:
        yield opened


def test_a_forgotten_subscribers_links_stop_working(store: Store) -> None:
    with store.write() as conn:
        ada = add_subscriber(conn, "ada@example.com", now=NOW, status=Status.ACTIVE).subscriber
        bob = add_subscriber(conn, "bob@example.com", now=NOW, status=Status.ACTIVE).subscriber
    ada_token = make_token(SECRET, Purpose.UNSUBSCRIBE, ada.id, check=ada.token_key, now=NOW)
    bob_token = make_token(SECRET, Purpose.PREFERENCES, bob.id, check=bob.token_key, now=NOW)
    assert ada.token_key and ada.token_key != bob.token_key

    with store.write() as conn:
        claim = read_token(SECRET, Purpose.UNSUBSCRIBE, ada_token, max_age=None, now=NOW)
        assert subscriber_for_token(conn, claim).id == ada.id
        unsubscribe_subscriber(conn, ada.id, now=NOW)
        assert subscriber_for_token(conn, claim).status == Status.UNSUBSCRIBED
        forget_subscriber(conn, ada.id, now=NOW)
    with store.read() as conn:
        with pytest.raises(TokenError):
            subscriber_for_token(conn, claim)
        bob_claim = read_token(SECRET, Purpose.PREFERENCES, bob_token, max_age=None, now=NOW)
        assert subscriber_for_token(conn, bob_claim).email == "bob@example.com"


def test_a_token_for_a_subscriber_that_does_not_exist_is_refused(store: Store) -> None:
    token = make_token(SECRET, Purpose.UNSUBSCRIBE, 999, check="whatever", now=NOW)
    claim = read_token(SECRET, Purpose.UNSUBSCRIBE, token, max_age=None, now=NOW)
    with store.read() as conn, pytest.raises(TokenError):
        subscriber_for_token(conn, claim)


def test_a_token_stamped_in_the_future_is_refused() -> None:
    ahead = make_token(SECRET, Purpose.UNSUBSCRIBE, 42, check="k", now=NOW + timedelta(days=1))
    with pytest.raises(TokenError, match="not valid"):
        read_token(SECRET, Purpose.UNSUBSCRIBE, ahead, max_age=None, now=NOW)
    # A clock a minute ahead on the machine that signed it is no reason to refuse a link.
    skewed = make_token(SECRET, Purpose.UNSUBSCRIBE, 42, check="k",
                        now=NOW + timedelta(minutes=1))
    assert read_token(SECRET, Purpose.UNSUBSCRIBE, skewed, max_age=None, now=NOW).check == "k"


@pytest.mark.parametrize("subscriber_id", [2**31, 2**63, 10**30, 0, -1])
def test_a_signed_token_naming_an_impossible_id_is_refused(subscriber_id: int) -> None:
    token = make_token(SECRET, Purpose.PREFERENCES, subscriber_id, check="k", now=NOW)
    with pytest.raises(TokenError, match="unexpected content"):
        read_token(SECRET, Purpose.PREFERENCES, token, max_age=None, now=NOW)

