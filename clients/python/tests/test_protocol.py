"""The worker protocol at the Client level: claim, heartbeat, complete, fail, release."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from nova_client import (
    Client,
    ClaimedJob,
    Forbidden,
    LeaseLost,
    Conflict,
    Unprocessable,
    parse_time,
)

from conftest import NovaServer


def claim_one(worker: Client, queue: str, **kwargs: object) -> ClaimedJob:
    jobs = worker.claim("proto-test", [queue], max=1, wait_seconds=5, **kwargs)  # type: ignore[arg-type]
    assert len(jobs) == 1
    return jobs[0]


def test_claim_complete_round_trip(operator: Client, worker_client: Client, queue_name: str) -> None:
    job = operator.enqueue("py.echo", {"v": 42}, queue=queue_name)
    claimed = claim_one(worker_client, queue_name, lease_seconds=30)
    assert isinstance(claimed, ClaimedJob)
    assert claimed.id == job.id
    assert claimed.state == "running"
    assert claimed.attempts == 1
    assert claimed.payload == {"v": 42}
    assert isinstance(claimed.lease, str) and claimed.lease  # opaque
    expires = parse_time(claimed.lease_expires_at)
    assert expires is not None
    assert 20 < (expires - datetime.now(timezone.utc)).total_seconds() < 40
    running = operator.get(job.id)
    assert running.state == "running"
    assert running.lease_owner == "proto-test"
    assert worker_client.complete(claimed.id, claimed.lease, {"answer": 42}) == "succeeded"
    done = operator.get(job.id)
    assert done.state == "succeeded"
    assert done.result == {"answer": 42}
    assert done.attempts == 1


def test_completing_twice_is_fine(operator: Client, worker_client: Client, queue_name: str) -> None:
    operator.enqueue("py.echo", {}, queue=queue_name)
    claimed = claim_one(worker_client, queue_name)
    assert worker_client.complete(claimed.id, claimed.lease, {"n": 1}) == "succeeded"
    assert worker_client.complete(claimed.id, claimed.lease, {"n": 1}) == "succeeded"
    results = worker_client.complete_many([(claimed.id, claimed.lease, {"n": 1})])
    assert [(r.id, r.recorded) for r in results] == [(claimed.id, True)]
    job = operator.get(claimed.id)
    assert job.state == "succeeded"
    assert job.attempts == 1
    assert job.result == {"n": 1}


def test_stale_lease_is_lost(operator: Client, worker_client: Client, queue_name: str) -> None:
    operator.enqueue("py.echo", {}, queue=queue_name)
    first = claim_one(worker_client, queue_name)
    outcome = worker_client.fail(first.id, first.lease, "try again", retry=True, retry_in_seconds=0)
    assert outcome.state in ("available", "failed")  # failed: waiting out its (zero) backoff
    second = claim_one(worker_client, queue_name)
    assert second.id == first.id
    assert second.lease != first.lease
    assert second.attempts == 2
    with pytest.raises(LeaseLost) as raised:
        worker_client.complete(first.id, first.lease, {"stale": True})
    assert isinstance(raised.value, Conflict)
    assert raised.value.status == 409
    assert raised.value.code == "lease_lost"
    assert str(raised.value).startswith("409 lease_lost: ")
    with pytest.raises(LeaseLost):
        worker_client.fail(first.id, first.lease, "stale")
    with pytest.raises(LeaseLost):
        worker_client.heartbeat_one(first.id, first.lease)
    assert [r.recorded for r in worker_client.complete_many([(first.id, first.lease)])] == [False]
    # The current lease still works, and the stale one changed nothing.
    assert worker_client.complete(second.id, second.lease, {"fresh": True}) == "succeeded"
    assert operator.get(first.id).result == {"fresh": True}


def test_lease_of_another_job_is_lost(operator: Client, worker_client: Client, queue_name: str) -> None:
    a_job = operator.enqueue("py.echo", {"n": 1}, queue=queue_name, priority=5)
    b_job = operator.enqueue("py.echo", {"n": 2}, queue=queue_name)
    # Leases of different attempts (b's second, a's first).
    a = claim_one(worker_client, queue_name)
    assert a.id == a_job.id
    first_b = claim_one(worker_client, queue_name)
    assert first_b.id == b_job.id
    worker_client.fail(first_b.id, first_b.lease, "again", retry_in_seconds=0)
    b = claim_one(worker_client, queue_name)
    assert b.id == b_job.id and b.lease != a.lease
    with pytest.raises(LeaseLost):
        worker_client.complete(a.id, b.lease)
    with pytest.raises(LeaseLost):
        worker_client.fail(a.id, b.lease, "not mine")
    results = worker_client.complete_many([(a.id, b.lease), (b.id, b.lease, {"ok": True})])
    assert [(r.id, r.recorded) for r in results] == [(a.id, False), (b.id, True)]
    assert operator.get(a.id).state == "running"
    assert operator.get(b.id).state == "succeeded"
    assert worker_client.complete(a.id, a.lease) == "succeeded"


def test_lease_of_another_job_on_the_same_attempt_is_lost(
    operator: Client, worker_client: Client, queue_name: str
) -> None:
    operator.enqueue("py.echo", {"n": 1}, queue=queue_name)
    operator.enqueue("py.echo", {"n": 2}, queue=queue_name)
    a, b = worker_client.claim("proto-test", [queue_name], max=2, wait_seconds=5)
    try:
        with pytest.raises(LeaseLost):
            worker_client.complete(a.id, b.lease)
    finally:
        worker_client.complete_many([(a.id, a.lease), (b.id, b.lease)])


def test_claim_limits_are_checked(worker_client: Client, queue_name: str) -> None:
    for bad in (0, 10000):
        with pytest.raises(Unprocessable) as raised:
            worker_client.claim("proto-test", [queue_name], max=bad)
        assert raised.value.status == 422
        assert "max" in raised.value.message
    with pytest.raises(Unprocessable):
        worker_client.claim("proto-test", [queue_name], lease_seconds=0)
    with pytest.raises(Unprocessable):
        worker_client.claim("proto-test", [queue_name], wait_seconds=61)


def test_roles_for_the_worker_routes(viewer: Client, worker_client: Client, operator: Client, queue_name: str) -> None:
    with pytest.raises(Forbidden) as raised:
        viewer.claim("viewer", [queue_name])
    assert raised.value.status == 403
    # A worker token claims and reports only.
    with pytest.raises(Forbidden):
        worker_client.enqueue("py.echo", {}, queue=queue_name)
    job = operator.enqueue("py.echo", {}, queue=queue_name)
    claimed = claim_one(worker_client, queue_name)
    with pytest.raises(Forbidden):
        viewer.complete(claimed.id, claimed.lease)
    assert worker_client.complete(claimed.id, claimed.lease) == "succeeded"
    assert operator.get(job.id).state == "succeeded"


def test_heartbeats(operator: Client, worker_client: Client, queue_name: str) -> None:
    operator.enqueue("py.slow", {}, queue=queue_name)
    operator.enqueue("py.slow", {}, queue=queue_name)
    a, b = worker_client.claim("proto-test", [queue_name], max=2, lease_seconds=5, wait_seconds=5)
    reply = worker_client.heartbeat_one(a.id, a.lease, lease_seconds=120)
    assert reply.id == a.id and reply.cancel_requested is False
    expires = parse_time(reply.expires_at)
    assert expires is not None and (expires - datetime.now(timezone.utc)).total_seconds() > 100
    operator.cancel(b.id)
    results = {r.id: r for r in worker_client.heartbeat([(a.id, a.lease), (b.id, b.lease)], lease_seconds=60)}
    assert results[a.id].status == "extended" and results[a.id].expires_at
    assert results[b.id].status == "cancelled" and results[b.id].expires_at is None
    # b's lease is not a's.
    assert [r.status for r in worker_client.heartbeat([(a.id, b.lease)])] == ["lost"]
    assert operator.get(b.id).state == "cancelled"
    worker_client.complete(a.id, a.lease)


def test_cancelled_job_single_heartbeat(operator: Client, worker_client: Client, queue_name: str) -> None:
    operator.enqueue("py.slow", {}, queue=queue_name)
    claimed = claim_one(worker_client, queue_name)
    operator.cancel(claimed.id)
    reply = worker_client.heartbeat_one(claimed.id, claimed.lease)
    assert reply.cancel_requested is True
    assert reply.expires_at is None
    assert operator.get(claimed.id).state == "cancelled"


def test_fail_permanently_and_with_a_delay(operator: Client, worker_client: Client, queue_name: str) -> None:
    operator.enqueue("py.fail", {"n": 1}, queue=queue_name, max_attempts=5)
    operator.enqueue("py.fail", {"n": 2}, queue=queue_name, max_attempts=5)
    a, b = worker_client.claim("proto-test", [queue_name], max=2, wait_seconds=5)
    dead = worker_client.fail(a.id, a.lease, "ValueError: bad input", retry=False)
    assert dead.state == "dead"
    job = operator.get(a.id)
    assert job.state == "dead"
    assert "bad input" in (job.last_error or "")
    later = worker_client.fail(b.id, b.lease, "busy", retry=True, retry_in_seconds=30)
    assert later.state in ("available", "failed")
    run_at = parse_time(later.run_at)
    assert run_at is not None
    assert 20 < (run_at - datetime.now(timezone.utc)).total_seconds() < 40
    # Not claimable before then.
    assert worker_client.claim("proto-test", [queue_name], max=5) == []


def test_release_gives_the_job_back_without_an_attempt(operator: Client, worker_client: Client, queue_name: str) -> None:
    job = operator.enqueue("py.echo", {}, queue=queue_name)
    claimed = claim_one(worker_client, queue_name)
    assert claimed.attempts == 1
    assert worker_client.release_many([(claimed.id, claimed.lease)]) == 1
    again = operator.get(job.id)
    assert again.state == "available"
    assert again.attempts == 0
    assert worker_client.release_many([(claimed.id, claimed.lease)]) == 0
    reclaimed = claim_one(worker_client, queue_name)
    assert reclaimed.id == job.id and reclaimed.attempts == 1
    worker_client.complete(reclaimed.id, reclaimed.lease)


def test_claim_filters_kinds(operator: Client, worker_client: Client, queue_name: str) -> None:
    operator.enqueue("py.fail", {}, queue=queue_name)
    echo = operator.enqueue("py.echo", {}, queue=queue_name)
    jobs = worker_client.claim("proto-test", [queue_name], kinds=["py.e*"], max=10, wait_seconds=1)
    assert [job.id for job in jobs] == [echo.id]
    assert worker_client.claim("proto-test", [queue_name], kinds=["py.echo"], max=10) == []
    worker_client.complete(echo.id, jobs[0].lease)


def test_long_poll(operator: Client, worker_client: Client, queue_name: str) -> None:
    started = time.monotonic()
    assert worker_client.claim("proto-test", [queue_name], max=5, wait_seconds=1) == []
    waited = time.monotonic() - started
    assert 0.8 < waited < 5
    # A claim waiting is answered soon after a job arrives.
    results: list[list[ClaimedJob]] = []
    thread = threading.Thread(
        target=lambda: results.append(worker_client.claim("proto-test", [queue_name], max=5, wait_seconds=20))
    )
    thread.start()
    time.sleep(0.5)
    enqueued_at = time.monotonic()
    job = operator.enqueue("py.echo", {}, queue=queue_name)
    thread.join(25)
    answered_after = time.monotonic() - enqueued_at
    assert results and [j.id for j in results[0]] == [job.id]
    assert answered_after < 5
    worker_client.complete(job.id, results[0][0].lease)


def test_claimed_job_fields(nova: NovaServer, operator: Client, worker_client: Client, queue_name: str) -> None:
    operator.enqueue("py.echo", {"deep": {"list": [1, 2.5, None, "x"]}}, queue=queue_name, priority=3, max_attempts=4)
    claimed = claim_one(worker_client, queue_name)
    assert claimed.kind == "py.echo"
    assert claimed.queue == queue_name
    assert claimed.priority == 3
    assert claimed.max_attempts == 4
    assert claimed.payload == {"deep": {"list": [1, 2.5, None, "x"]}}
    assert claimed.as_job().id == claimed.id
    worker_client.complete(claimed.id, claimed.lease, [1, "two", None])
    assert operator.get(claimed.id).result == [1, "two", None]
