"""feedpub.sender.policy: what each outcome of a send means, without SMTP or a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from feedpub.errors import DeliveryError
from feedpub.sender.options import SendOptions
from feedpub.sender.policy import (
    Decision,
    OutageWatch,
    Outcome,
    OutcomeKind,
    ResultPolicy,
    refused,
)
from feedpub.store.queue import Claim

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
POLICY = ResultPolicy(SendOptions())  # backoff 1 min, 5 min, 30 min, …; 8 attempts; bounce at 3


def claim(delivery_id: int = 1, *, attempts: int = 0) -> Claim:
    return Claim(delivery_id=delivery_id, edition_id=1, subscriber_id=delivery_id,
                 attempts=attempts, email=f"r{delivery_id}@example.org", name=None,
                 subscriber_active=True, token_key="k")


def outcome(kind: OutcomeKind, *, delivery_id: int = 1, attempts: int = 0) -> Outcome:
    return Outcome(claim(delivery_id, attempts=attempts), kind, AT, reply="250 ok")


def refusal(code: int | None, *, permanent: bool = False, delivery_id: int = 1,
            attempts: int = 0) -> Outcome:
    """What the sending thread makes of a refusal (``code`` None: no connection)."""
    error = DeliveryError(f"{code} refused" if code else "cannot connect", code=code,
                          permanent=permanent)
    return refused(claim(delivery_id, attempts=attempts), error, AT)


def test_an_accepted_message_is_sent() -> None:
    accepted = outcome("sent")
    assert POLICY.decide(accepted) == Decision("sent", accepted)


@pytest.mark.parametrize(("attempts", "wait"), [
    (0, timedelta(minutes=1)), (1, timedelta(minutes=5)), (2, timedelta(minutes=30)),
    (5, timedelta(hours=12)), (6, timedelta(hours=12)),
])
def test_a_4xx_is_retried_after_a_growing_backoff(attempts: int, wait: timedelta) -> None:
    greylisted = refusal(451, attempts=attempts)
    assert (greylisted.kind, greylisted.server_problem) == ("temporary", False)
    assert POLICY.decide(greylisted) == Decision("retry", greylisted, next_attempt_at=AT + wait)


def test_a_4xx_on_the_last_attempt_fails_without_counting_towards_a_bounce() -> None:
    full = refusal(452, attempts=7)  # the 8th attempt
    assert POLICY.decide(full) == Decision("fail", full, hard=False)
    short = ResultPolicy(SendOptions(max_attempts=2))
    assert short.decide(refusal(452, attempts=0)).action == "retry"
    assert short.decide(refusal(452, attempts=1)).action == "fail"


def test_a_5xx_fails_at_once_as_a_hard_failure() -> None:
    gone = refusal(550, permanent=True)
    assert (gone.kind, gone.server_problem) == ("permanent", False)
    assert POLICY.decide(gone) == Decision("fail", gone, hard=True)


def test_the_third_hard_failure_in_a_row_bounces_and_only_that_one() -> None:
    assert [POLICY.bounces_now(n) for n in (1, 2, 3, 4)] == [False, False, True, False]
    assert ResultPolicy(SendOptions(bounce_after=1)).bounces_now(1)


def test_a_skip_is_recorded_and_an_untried_claim_is_put_back() -> None:
    left = outcome("skipped")
    untried = outcome("untried")
    assert POLICY.decide(left) == Decision("skip", left)
    assert POLICY.decide(untried) == Decision("put_back", untried)


@pytest.mark.parametrize(("code", "server"), [(None, True), (421, True), (451, False)])
def test_no_connection_and_421_speak_for_the_server(code: int | None, server: bool) -> None:
    assert refusal(code).server_problem is server


def test_an_outage_puts_every_server_failure_back_without_counting_an_attempt() -> None:
    watch = OutageWatch(outage_after=3)
    down = [refusal(None, delivery_id=i) for i in range(1, 6)]
    assert watch.sort(down[:2]) == ([], [])  # suspects, not yet an outage
    assert watch.outage is None
    record, put_back = watch.sort(down[2:])
    assert record == []
    assert [c.delivery_id for c in put_back] == [1, 2, 3, 4, 5]
    assert watch.outage == "cannot connect"
    assert watch.settle() == ([], [])


def test_server_failures_followed_by_an_answer_are_the_messages_own() -> None:
    watch = OutageWatch(outage_after=3)
    lost, accepted = refusal(None, delivery_id=1), outcome("sent", delivery_id=2)
    assert watch.sort([lost]) == ([], [])
    assert watch.sort([accepted]) == ([lost, accepted], [])
    assert watch.outage is None
    # Recorded, the server failure is a temporary one: retried later like a 4xx.
    assert POLICY.decide(lost).action == "retry"


def test_a_skip_is_no_answer_from_the_server() -> None:
    watch = OutageWatch(outage_after=2)
    lost, left = refusal(None, delivery_id=1), outcome("skipped", delivery_id=2)
    assert watch.sort([lost, left]) == ([left], [])
    assert watch.settle(lambda: None) == ([lost], [])  # the server answers a probe: recorded


def test_a_run_that_ends_on_one_server_failure_is_an_outage_when_the_probe_fails() -> None:
    # One pending message is as much an outage as a thousand: the rule is not a count.
    watch = OutageWatch(outage_after=3)
    lost = refusal(None, delivery_id=1)
    assert watch.sort([lost]) == ([], [])
    assert watch.settle(lambda: "cannot connect to smtp://127.0.0.1:1") == ([], [lost.claim])
    assert watch.outage == "cannot connect to smtp://127.0.0.1:1"


def test_a_success_that_was_already_under_way_does_not_clear_a_421() -> None:
    # Four connections: the server starts answering 421 while a transaction on another
    # connection is finishing; that success began before the 421s, so they stay suspects.
    watch = OutageWatch(outage_after=3)
    closing = [
        Outcome(claim(i), "temporary", AT, reply="421 closing", server_problem=True,
                began=1.0, ended=2.0 + i)
        for i in (1, 2)
    ]
    finishing = Outcome(claim(3), "sent", AT, reply="250 ok", began=0.5, ended=4.5)
    assert watch.sort([closing[0], finishing, closing[1]]) == ([finishing], [])
    later = Outcome(claim(4), "temporary", AT, reply="421 closing", server_problem=True,
                    began=4.0, ended=5.0)
    assert watch.sort([later]) == ([], [c.claim for c in closing] + [later.claim])
    assert watch.outage == "421 closing"
    # A transaction that begins after a failure and succeeds does clear it.
    fresh = OutageWatch(outage_after=3)
    after = Outcome(claim(5), "sent", AT, reply="250 ok", began=10.0, ended=11.0)
    assert fresh.sort([closing[0], after]) == ([closing[0], after], [])
