"""The Client against a real server: submission, reads, cancel/retry, paging, errors."""

from __future__ import annotations

import threading
import uuid

import pytest

from nova_client import (
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    Job,
    JobSpec,
    NotFound,
    NovaConnectionError,
    NovaError,
    NovaTimeout,
    Submitted,
    Unauthorized,
    Unprocessable,
)

from conftest import NovaServer
from helpers import count_state, jobs_in


def test_enqueue_and_get_round_trip(operator: Client, queue_name: str) -> None:
    job = operator.enqueue("py.echo", {"text": "héllo", "n": [1, 2]}, queue=queue_name, priority=7, max_attempts=3)
    assert isinstance(job, Job)
    assert job.kind == "py.echo"
    assert job.queue == queue_name
    assert job.state == "available"
    assert job.payload == {"text": "héllo", "n": [1, 2]}
    assert job.priority == 7
    assert job.max_attempts == 3
    assert job.attempts == 0
    assert job.created_at and job.created_at.endswith("Z")
    assert job.created_at_dt is not None and job.created_at_dt.tzinfo is not None
    fetched = operator.get(job.id)
    assert fetched.id == job.id
    assert fetched.payload == job.payload
    assert fetched.state == "available"


def test_enqueue_without_payload_and_with_delay(operator: Client, queue_name: str) -> None:
    job = operator.enqueue("py.echo", queue=queue_name, delay_seconds=3600)
    assert job.payload == {}
    assert job.state == "scheduled"
    assert job.run_at_dt is not None and job.created_at_dt is not None
    assert (job.run_at_dt - job.created_at_dt).total_seconds() == pytest.approx(3600, abs=5)


def test_idempotency_key_returns_the_existing_job(operator: Client, queue_name: str) -> None:
    key = f"key-{uuid.uuid4()}"
    first = operator.enqueue("py.echo", {"a": 1}, queue=queue_name, idempotency_key=key)
    second = operator.enqueue("py.echo", {"a": 1}, queue=queue_name, idempotency_key=key)
    assert second.id == first.id
    assert second.idempotency_key == key
    with pytest.raises(Conflict) as raised:
        operator.enqueue("py.echo", {"a": 2}, queue=queue_name, idempotency_key=key)
    assert raised.value.status == 409


def test_cancel_and_retry(operator: Client, queue_name: str) -> None:
    job = operator.enqueue("py.echo", {"x": 1}, queue=queue_name)
    cancelled = operator.cancel(job.id)
    assert cancelled.id == job.id
    assert cancelled.state == "cancelled"
    assert operator.get(job.id).state == "cancelled"
    assert operator.wait(job.id, timeout=1).state == "cancelled"
    retried = operator.retry(job.id)
    assert retried.state == "available"
    assert operator.get(job.id).state == "available"


def test_list_filters_and_pagination(operator: Client, queue_name: str) -> None:
    created = [operator.enqueue("py.echo", {"i": i}, queue=queue_name) for i in range(7)]
    operator.enqueue("py.fail", {"other": True}, queue=queue_name)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = operator.list(queue=queue_name, kind="py.echo", limit=3, cursor=cursor)
        pages += 1
        assert len(page.jobs) <= 3
        assert all(job.kind == "py.echo" and job.queue == queue_name for job in page.jobs)
        seen.extend(job.id for job in page.jobs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        assert pages < 10
    assert pages >= 3
    assert sorted(seen) == sorted(job.id for job in created)
    assert len(seen) == len(set(seen))
    # The generator follows the cursors the same way.
    assert sorted(job.id for job in operator.iter_jobs(queue=queue_name, kind="py.echo", page_size=2)) == sorted(seen)
    # By state.
    operator.cancel(created[0].id)
    cancelled = operator.list(queue=queue_name, state="cancelled")
    assert [job.id for job in cancelled.jobs] == [created[0].id]
    assert cancelled.next_cursor is None
    assert len(jobs_in(operator, queue_name)) == 8


def test_wait_returns_the_finished_job(nova: NovaServer, operator: Client, queue_name: str) -> None:
    job = operator.enqueue("py.echo", {"w": 1}, queue=queue_name)
    worker = nova.client("worker")

    def finish_later() -> None:
        claimed = worker.claim("waiter", [queue_name], max=1, wait_seconds=5)
        assert claimed
        worker.complete(claimed[0].id, claimed[0].lease, {"done": True})

    thread = threading.Thread(target=finish_later)
    thread.start()
    finished = operator.wait(job.id, timeout=20, poll=0.05)
    thread.join(10)
    assert finished.state == "succeeded"
    assert finished.result == {"done": True}
    assert finished.finished_at is not None


def test_wait_times_out(operator: Client, queue_name: str) -> None:
    job = operator.enqueue("py.echo", {}, queue=queue_name)
    with pytest.raises(NovaTimeout) as raised:
        operator.wait(job.id, timeout=0.5, poll=0.1)
    assert isinstance(raised.value, TimeoutError)
    assert raised.value.job.state == "available"  # type: ignore[attr-defined]


def test_unknown_kind_is_unprocessable(operator: Client, queue_name: str) -> None:
    with pytest.raises(Unprocessable) as raised:
        operator.enqueue("py.nope", {}, queue=queue_name)
    error = raised.value
    assert error.status == 422
    assert error.code == "unknown_job_kind"
    assert "py.nope" in error.message
    assert str(error).startswith("422 unknown_job_kind: ")


def test_bad_token_is_unauthorized(nova: NovaServer) -> None:
    client = Client(nova.url, "nova_notatoken_really")
    with pytest.raises(Unauthorized) as raised:
        client.list()
    assert raised.value.status == 401
    assert raised.value.code == "unauthorized"


def test_viewer_cannot_enqueue(viewer: Client, operator: Client, queue_name: str) -> None:
    with pytest.raises(Forbidden) as raised:
        viewer.enqueue("py.echo", {}, queue=queue_name)
    assert raised.value.status == 403
    assert raised.value.code
    # ...but may read.
    job = operator.enqueue("py.echo", {}, queue=queue_name)
    assert viewer.get(job.id).id == job.id


def test_missing_job_is_not_found(operator: Client) -> None:
    with pytest.raises(NotFound) as raised:
        operator.get(str(uuid.uuid4()))
    assert raised.value.status == 404
    assert raised.value.code == "not_found"


def test_malformed_input(operator: Client) -> None:
    with pytest.raises(Unprocessable):
        operator.get("not-a-uuid")
    with pytest.raises(BadRequest) as raised:
        operator.enqueue("py.echo", {}, priority="high")  # type: ignore[arg-type]
    assert raised.value.status == 400
    with pytest.raises(TypeError):
        operator.enqueue("py.echo", [1, 2])  # type: ignore[arg-type]


def test_connection_refused_is_a_connection_error() -> None:
    with socket_port() as port:
        pass
    client = Client(f"http://127.0.0.1:{port}", "x", timeout=2)
    with pytest.raises(NovaConnectionError) as raised:
        client.get(str(uuid.uuid4()))
    assert isinstance(raised.value, NovaError)
    assert isinstance(raised.value, ConnectionError)


def test_client_is_shared_by_threads(operator: Client, queue_name: str) -> None:
    errors: list[BaseException] = []
    ids: list[str] = []
    lock = threading.Lock()

    def submit(start: int) -> None:
        try:
            for i in range(start, start + 10):
                job = operator.enqueue("py.echo", {"i": i}, queue=queue_name)
                with lock:
                    ids.append(job.id)
        except BaseException as error:  # pragma: no cover
            errors.append(error)

    threads = [threading.Thread(target=submit, args=(n * 10,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(set(ids)) == 80
    payloads = sorted(job.payload["i"] for job in jobs_in(operator, queue_name))
    assert payloads == list(range(80))


def test_queue_stats(operator: Client, queue_name: str) -> None:
    for _ in range(3):
        operator.enqueue("py.echo", {}, queue=queue_name)
    stats = operator.queue_stats()
    assert stats["queues"][queue_name]["available"] == 3


class socket_port:
    """A port that nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# -- enqueue_many (POST /v1/jobs/batch) -------------------------------------------------------------


def test_enqueue_many_splits_2500_jobs_into_three_requests(operator: Client, queue_name: str) -> None:
    sent: list[int] = []
    call = operator._call

    def counting_call(method: str, path: str, body: object = None, **kwargs: object) -> object:
        if path == "/v1/jobs/batch":
            raw = kwargs["raw"]
            assert isinstance(raw, bytes)
            sent.append(raw.count(b'"kind"'))
        return call(method, path, body, **kwargs)  # type: ignore[arg-type]

    operator._call = counting_call  # type: ignore[method-assign]
    try:
        submitted = operator.enqueue_many(
            ({"kind": "py.echo", "payload": {"i": i}, "priority": i % 3} for i in range(2500)), queue=queue_name
        )
    finally:
        del operator._call
    assert sent == [1000, 1000, 500]
    assert len(submitted) == 2500
    assert all(isinstance(item, Submitted) and item.created and item.state == "available" for item in submitted)
    assert len({item.id for item in submitted}) == 2500
    stored = {job.id: job for job in jobs_in(operator, queue_name)}
    assert set(stored) == {item.id for item in submitted}
    # In request order: the n-th answer is the n-th job.
    for i in (0, 999, 1000, 1999, 2000, 2499):
        assert stored[submitted[i].id].payload == {"i": i}
        assert stored[submitted[i].id].priority == i % 3
    assert count_state(operator, queue_name, "available") == 2500


def test_enqueue_many_takes_every_field_and_job_specs(operator: Client, queue_name: str) -> None:
    other = f"{queue_name}-b"
    submitted = operator.enqueue_many(
        [
            JobSpec("py.echo", {"a": 1}, priority=9, max_attempts=2),
            {"kind": "py.slow", "queue": other, "delay_seconds": 3600},
            {"kind": "py.echo", "payload": None, "idempotency_key": None},
        ],
        queue=queue_name,
    )
    assert [item.state for item in submitted] == ["available", "scheduled", "available"]
    first, second, third = (operator.get(item.id) for item in submitted)
    assert (first.queue, first.kind, first.payload, first.priority, first.max_attempts) == (
        queue_name, "py.echo", {"a": 1}, 9, 2)
    assert (second.queue, second.kind, second.state) == (other, "py.slow", "scheduled")
    assert (third.queue, third.payload, third.idempotency_key) == (queue_name, {}, None)
    assert operator.enqueue_many([]) == []


def test_enqueue_many_refuses_the_whole_batch_for_one_bad_entry(operator: Client, queue_name: str) -> None:
    with pytest.raises(Unprocessable) as raised:
        operator.enqueue_many(
            [{"kind": "py.echo"}, {"kind": "py.nope"}, {"kind": "py.echo"}], queue=queue_name
        )
    assert raised.value.status == 422
    assert "jobs[1].kind" in raised.value.message
    assert "py.nope" in raised.value.message
    assert raised.value.submitted == []  # type: ignore[attr-defined]
    assert jobs_in(operator, queue_name) == []
    assert count_state(operator, queue_name, "available") == 0
    with pytest.raises(BadRequest) as bad:
        operator.enqueue_many([{"kind": "py.echo"}, {"kind": "py.echo", "priority": "high"}], queue=queue_name)
    assert "jobs[1].priority" in bad.value.message
    assert jobs_in(operator, queue_name) == []


def test_enqueue_many_names_the_entry_in_a_later_request(operator: Client, queue_name: str) -> None:
    jobs: list[dict[str, object]] = [{"kind": "py.echo"} for _ in range(7)]
    jobs[5] = {"kind": "py.nope"}
    with pytest.raises(Unprocessable) as raised:
        operator.enqueue_many(jobs, queue=queue_name, batch_size=3)
    error = raised.value
    assert "jobs[5].kind" in error.message and str(error).startswith("422 ")
    assert error.offset == 3  # type: ignore[attr-defined]
    submitted = error.submitted  # type: ignore[attr-defined]
    assert len(submitted) == 3  # the first request went through; the second was refused whole
    assert sorted(job.id for job in jobs_in(operator, queue_name)) == sorted(item.id for item in submitted)


def test_enqueue_many_checks_entries_before_sending(operator: Client, queue_name: str) -> None:
    cases: list[tuple[object, str]] = [
        ({"kind": "py.echo", "payload": [1, 2]}, "jobs[1].payload must be a mapping"),
        ({"kind": "py.echo", "paylod": {}}, "jobs[1]: unknown field 'paylod'"),
        ({"payload": {}}, "jobs[1].kind must be a string"),
        ("py.echo", "jobs[1] must be a mapping or a JobSpec"),
    ]
    for bad, message in cases:
        with pytest.raises(TypeError) as raised:
            operator.enqueue_many([{"kind": "py.echo"}, bad], queue=queue_name)  # type: ignore[list-item]
        assert message in str(raised.value)
    with pytest.raises(ValueError):
        operator.enqueue_many([{"kind": "py.echo"}], batch_size=1001)
    assert jobs_in(operator, queue_name) == []


def test_enqueue_many_repeated_with_keys_returns_the_same_jobs(operator: Client, queue_name: str) -> None:
    jobs = [{"kind": "py.echo", "payload": {"n": n}, "idempotency_key": f"k-{n}"} for n in range(5)]
    first = operator.enqueue_many(jobs, queue=queue_name)
    assert [item.created for item in first] == [True] * 5
    again = operator.enqueue_many(jobs + [{"kind": "py.echo", "idempotency_key": "k-new"}], queue=queue_name)
    assert [item.id for item in again[:5]] == [item.id for item in first]
    assert [item.created for item in again] == [False] * 5 + [True]
    # The same key twice in one batch: one job.
    twice = operator.enqueue_many([{"kind": "py.echo", "idempotency_key": "dup"}] * 2, queue=queue_name)
    assert twice[0].id == twice[1].id and [item.created for item in twice] == [True, False]
    assert len(jobs_in(operator, queue_name)) == 7
    # Same key, other payload: refused (409) as for one job.
    with pytest.raises(Conflict):
        operator.enqueue_many([{"kind": "py.echo", "payload": {"n": 99}, "idempotency_key": "k-0"}], queue=queue_name)
