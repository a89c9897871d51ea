"""The Worker against a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

import pytest

from nova_client import ActiveJob, Client, Forbidden, PermanentError, RetryLater, Worker

from conftest import HERE, PACKAGE_ROOT, NovaServer
from helpers import count_state, jobs_in, running, wait_until


def make_worker(nova: NovaServer, queue: str, **options: Any) -> Worker:
    options.setdefault("wait_seconds", 1)
    options.setdefault("grace_seconds", 5)
    return Worker(nova.client("worker"), [queue], **options)


def test_worker_runs_200_echo_jobs_exactly_once(nova: NovaServer, operator: Client, queue_name: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        submitted = list(pool.map(lambda i: operator.enqueue("py.echo", {"i": i, "text": f"job {i}"}, queue=queue_name),
                                  range(200)))
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    worker = make_worker(nova, queue_name, concurrency=8, batch=32)

    @worker.job("py.echo")
    def echo(job: ActiveJob) -> Dict[str, Any]:
        assert job.attempt == 1
        with lock:
            calls[job.id] += 1
        return job.payload

    with running(worker):
        wait_until(lambda: count_state(operator, queue_name, "succeeded") == 200, timeout=30, what="200 jobs succeeded")
    jobs = {job.id: job for job in jobs_in(operator, queue_name)}
    assert len(jobs) == 200
    for job in submitted:
        done = jobs[job.id]
        assert done.state == "succeeded"
        assert done.attempts == 1
        assert done.result == job.payload
        assert done.lease_owner in (None, worker.name)
    assert set(calls) == {job.id for job in submitted}
    assert set(calls.values()) == {1}
    assert worker.stats.succeeded == 200
    assert worker.stats.failed == 0


def test_max_jobs_stops_the_worker(nova: NovaServer, operator: Client, queue_name: str) -> None:
    for i in range(5):
        operator.enqueue("py.echo", {"i": i}, queue=queue_name)
    worker = make_worker(nova, queue_name, concurrency=2, batch=2)
    worker.register("py.echo", lambda job: job.payload)
    thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 3})
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert worker.stats.succeeded == 3
    assert count_state(operator, queue_name, "succeeded") == 3
    assert count_state(operator, queue_name, "available") == 2


def test_handler_errors_retry_then_dead(nova: NovaServer, operator: Client, queue_name: str) -> None:
    job = operator.enqueue("py.fail", {"n": 1}, queue=queue_name, max_attempts=2)
    attempts: List[int] = []
    worker = make_worker(nova, queue_name)

    @worker.job("py.fail")
    def fail(active: ActiveJob) -> None:
        attempts.append(active.attempt)
        raise ValueError(f"boom on attempt {active.attempt}")

    with running(worker):
        done = operator.wait(job.id, timeout=20, poll=0.05)
    assert done.state == "dead"
    assert done.attempts == 2
    assert attempts == [1, 2]
    assert "boom on attempt 2" in (done.last_error or "")
    assert "ValueError" in (done.last_error or "")
    assert worker.stats.failed == 2


def test_permanent_error_is_dead_at_once(nova: NovaServer, operator: Client, queue_name: str) -> None:
    job = operator.enqueue("py.fail", {}, queue=queue_name, max_attempts=5)
    worker = make_worker(nova, queue_name)

    @worker.job("py.fail")
    def fail(active: ActiveJob) -> None:
        raise PermanentError("the payload can never work")

    with running(worker):
        done = operator.wait(job.id, timeout=20, poll=0.05)
    assert done.state == "dead"
    assert done.attempts == 1
    assert "the payload can never work" in (done.last_error or "")


def test_retry_later_sets_the_delay(nova: NovaServer, operator: Client, queue_name: str) -> None:
    job = operator.enqueue("py.fail", {}, queue=queue_name, max_attempts=3)
    started: List[float] = []
    worker = make_worker(nova, queue_name, wait_seconds=0.5)

    @worker.job("py.fail")
    def flaky(active: ActiveJob) -> Dict[str, int]:
        started.append(time.monotonic())
        if active.attempt == 1:
            raise RetryLater(2.0)
        return {"attempt": active.attempt}

    with running(worker):
        done = operator.wait(job.id, timeout=20, poll=0.05)
    assert done.state == "succeeded"
    assert done.attempts == 2
    assert done.result == {"attempt": 2}
    assert "retry in 2" in (done.last_error or "")
    assert len(started) == 2
    # The server's own first backoff is at most 1 s: the gap is the handler's.
    assert started[1] - started[0] >= 1.8


def test_cancellation_reaches_the_handler(nova: NovaServer, operator: Client, queue_name: str) -> None:
    job = operator.enqueue("py.slow", {}, queue=queue_name)
    began = threading.Event()
    saw_cancel = threading.Event()
    worker = make_worker(nova, queue_name, lease_seconds=1)
    assert worker.heartbeat_every == pytest.approx(1 / 3)

    @worker.job("py.slow")
    def slow(active: ActiveJob) -> Dict[str, bool]:
        began.set()
        deadline = time.monotonic() + 20
        while not active.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.02)
        if active.cancel_requested:
            saw_cancel.set()
        return {"finished": True}

    with running(worker):
        assert began.wait(15)
        time.sleep(1.5)  # several heartbeats keep the 1 s lease alive meanwhile
        assert operator.get(job.id).state == "running"
        operator.cancel(job.id)
        assert saw_cancel.wait(5), "the handler never saw cancel_requested"
        wait_until(lambda: worker.stats.cancelled == 1, timeout=5, what="the worker to count the cancellation")
    done = operator.get(job.id)
    assert done.state == "cancelled"
    assert done.result is None
    assert worker.stats.succeeded == 0


def test_graceful_stop_lets_a_running_job_finish(nova: NovaServer, operator: Client, queue_name: str) -> None:
    job = operator.enqueue("py.slow", {"s": 1}, queue=queue_name)
    began = threading.Event()
    worker = make_worker(nova, queue_name, grace_seconds=10)

    @worker.job("py.slow")
    def slow(active: ActiveJob) -> Dict[str, Any]:
        began.set()
        time.sleep(1.0)
        return {"slept": 1, "stopping": active.stopping}

    with running(worker):
        assert began.wait(15)
        stop_started = time.monotonic()
        worker.stop()
    assert time.monotonic() - stop_started >= 0.5
    done = operator.get(job.id)
    assert done.state == "succeeded"
    assert done.result == {"slept": 1, "stopping": True}
    assert done.attempts == 1


def test_graceful_stop_releases_what_does_not_finish(nova: NovaServer, operator: Client, queue_name: str) -> None:
    first = operator.enqueue("py.slow", {"n": 1}, queue=queue_name, priority=10)
    second = operator.enqueue("py.slow", {"n": 2}, queue=queue_name, priority=0)
    began = threading.Event()
    let_go = threading.Event()
    # One handler thread and one job claimed ahead of it: at stop, one job runs and one waits.
    worker = make_worker(nova, queue_name, concurrency=1, prefetch=1, batch=2, grace_seconds=0.5)

    @worker.job("py.slow")
    def stubborn(active: ActiveJob) -> None:
        began.set()
        let_go.wait(30)  # ignores the stop

    try:
        with running(worker):
            assert began.wait(15)
            wait_until(lambda: count_state(operator, queue_name, "running") == 2, timeout=10, what="both jobs claimed")
            stop_started = time.monotonic()
            worker.stop()
        assert time.monotonic() - stop_started < 5
    finally:
        let_go.set()
    for job in (first, second):
        again = operator.get(job.id)
        assert again.state == "available", again
        assert again.attempts == 0, again
    assert worker.stats.released == 2
    # Another worker runs both, each once.
    quick = make_worker(nova, queue_name)
    quick.register("py.slow", lambda active: {"n": active.payload["n"], "attempt": active.attempt})
    with running(quick):
        wait_until(lambda: count_state(operator, queue_name, "succeeded") == 2, timeout=20, what="the jobs to run again")
    for job in (first, second):
        done = operator.get(job.id)
        assert done.state == "succeeded"
        assert done.attempts == 1
        assert done.result == {"n": job.payload["n"], "attempt": 1}
    # Late outcome of the abandoned handler is dropped (let_go was set above).
    time.sleep(0.2)
    assert operator.get(first.id).result == {"n": 1, "attempt": 1}


def test_jobs_trickling_in_each_take_a_free_slot_at_once(nova: NovaServer, operator: Client, queue_name: str) -> None:
    """Issue #21 point 1: with free handler threads, each job arriving on its own starts at once,
    not when another job ends (the claim must be outstanding for every free slot)."""
    starts: Dict[str, float] = {}
    busy = {"now": 0, "most": 0}
    lock = threading.Lock()
    # A long poll longer than the test: what is measured is the wake-up, not the poll's restart.
    worker = make_worker(nova, queue_name, concurrency=4, wait_seconds=20)

    @worker.job("py.slow")
    def slow(active: ActiveJob) -> None:
        with lock:
            starts[active.id] = time.monotonic()
            busy["now"] += 1
            busy["most"] = max(busy["most"], busy["now"])
        try:
            active.sleep(2.0)
        finally:
            with lock:
                busy["now"] -= 1

    enqueued: Dict[str, float] = {}
    with running(worker):
        wait_until(lambda: worker.running, timeout=10, what="the worker to start")
        for i in range(4):
            at = time.monotonic()
            enqueued[operator.enqueue("py.slow", {"i": i}, queue=queue_name).id] = at
            time.sleep(0.3)
        wait_until(lambda: count_state(operator, queue_name, "succeeded") == 4, timeout=20, what="the jobs to succeed")
    assert busy["most"] == 4, f"jobs ran one after another: at most {busy['most']} at once"
    assert set(starts) == set(enqueued)
    for job_id, at in enqueued.items():
        # The target is 50 ms (p99, on the benchmark machine); a loaded CI machine gets more, still
        # far below the 2 s a start held until another job's end would cost.
        assert starts[job_id] - at < 1.0, f"job {job_id} started {starts[job_id] - at:.3f} s after it was enqueued"


def test_worker_without_the_worker_role_gives_up(nova: NovaServer, queue_name: str) -> None:
    worker = Worker(nova.client("viewer"), [queue_name], wait_seconds=1)
    worker.register("py.echo", lambda job: None)
    with pytest.raises(Forbidden):
        worker.run()


def test_worker_claims_only_its_kinds(nova: NovaServer, operator: Client, queue_name: str) -> None:
    other = operator.enqueue("py.fail", {}, queue=queue_name)
    mine = operator.enqueue("py.echo", {"k": 1}, queue=queue_name)
    worker = make_worker(nova, queue_name)
    worker.register("py.e*", lambda job: {"kind": job.kind})
    assert worker.kinds == ["py.e*"]
    with running(worker):
        assert operator.wait(mine.id, timeout=15, poll=0.05).result == {"kind": "py.echo"}
        time.sleep(0.3)
    assert operator.get(other.id).state == "available"
    assert operator.get(other.id).attempts == 0


def start_subprocess_worker(nova: NovaServer, queue: str, marker: Path, sleep_seconds: float, log: Path,
                            grace_seconds: float = 10.0) -> "subprocess.Popen[bytes]":
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, str(HERE / "subprocess_worker.py"), nova.url, nova.tokens["worker"], queue, str(marker),
             str(sleep_seconds), str(grace_seconds)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )


def test_sigterm_stops_a_worker_gracefully(nova: NovaServer, operator: Client, queue_name: str, tmp_path: Path) -> None:
    job = operator.enqueue("py.slow", {}, queue=queue_name)
    marker = tmp_path / "started"
    log = tmp_path / "worker.log"
    process = start_subprocess_worker(nova, queue_name, marker, 1.5, log)
    try:
        wait_until(lambda: marker.exists() and marker.read_text().strip(), timeout=20, what="the subprocess to start the job")
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    done = operator.get(job.id)
    assert done.state == "succeeded", log.read_text()
    assert done.result == {"finished_by": "subprocess-worker"}
    assert done.attempts == 1
    assert "succeeded=1" in log.read_text()


def test_killed_worker_job_runs_again(nova: NovaServer, operator: Client, queue_name: str, tmp_path: Path) -> None:
    job = operator.enqueue("py.slow", {"k": "v"}, queue=queue_name)
    marker = tmp_path / "started"
    log = tmp_path / "worker.log"
    process = start_subprocess_worker(nova, queue_name, marker, 30, log)
    try:
        wait_until(lambda: marker.exists() and marker.read_text().strip(), timeout=20, what="the subprocess to start the job")
        assert marker.read_text().split() == [job.id, "1"]
        running_job = operator.get(job.id)
        assert running_job.state == "running"
        assert running_job.lease_owner == "subprocess-worker"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    calls: List[int] = []
    worker = make_worker(nova, queue_name)

    @worker.job("py.slow")
    def quick(active: ActiveJob) -> Dict[str, Any]:
        calls.append(active.attempt)
        return {"rerun": True, "payload": active.payload}

    killed_at = time.monotonic()
    with running(worker):
        done = operator.wait(job.id, timeout=20, poll=0.1)
    assert done.state == "succeeded"
    assert done.attempts == 2
    assert done.result == {"rerun": True, "payload": {"k": "v"}}
    assert calls == [2]
    assert time.monotonic() - killed_at < 20
