"""feedpub.sender.pipeline: the crash bound, with sends that finish when the test says so."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from datetime import timedelta

from feedpub.sender.pipeline import Job, Pipeline
from feedpub.sender.policy import Outcome
from tests.test_send_policy import AT, claim


def jobs(count: int) -> deque[Job]:
    return deque(Job(claim(i), lambda: b"message", f"<{i}@example.org>") for i in range(count))


def test_no_more_than_concurrency_messages_are_ever_without_a_record() -> None:
    recorded: list[list[Outcome]] = []
    pipeline = Pipeline(3, timedelta(hours=1), recorded.append)
    sending: list[tuple[Job, Future[Outcome]]] = []

    def submit(job: Job) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        sending.append((job, future))
        return future

    staged = jobs(10)
    pipeline.dispatch(staged, submit)
    assert (len(sending), len(staged)) == (3, 7)

    for job, future in sending[:2]:  # two servers accept: the results wait for a commit
        future.set_result(Outcome(job.claim, "sent", AT))
    pipeline.hold(pipeline.collect())
    pipeline.dispatch(staged, submit)
    assert len(sending) == 3  # accepted but unrecorded: their places are still taken
    assert pipeline.places_taken() == 3 and recorded == []

    pipeline.commit()
    assert [o.claim.delivery_id for o in recorded[0]] == [0, 1]
    pipeline.dispatch(staged, submit)
    assert len(sending) == 5 and pipeline.places_taken() == 3


def test_results_are_committed_once_half_the_places_wait() -> None:
    recorded: list[list[Outcome]] = []
    pipeline = Pipeline(4, timedelta(hours=1), recorded.append)
    pipeline.hold([Outcome(claim(1), "sent", AT)])
    pipeline.commit_if_due()
    assert recorded == []
    pipeline.hold([Outcome(claim(2), "sent", AT)])
    pipeline.commit_if_due()
    assert [len(group) for group in recorded] == [2]
    assert pipeline.places_taken() == 0


def test_a_lone_result_is_committed_after_the_commit_delay() -> None:
    recorded: list[list[Outcome]] = []
    pipeline = Pipeline(8, timedelta(0), recorded.append)
    pipeline.hold([Outcome(claim(1), "skipped", AT)])
    pipeline.commit_if_due()
    assert [len(group) for group in recorded] == [1]
