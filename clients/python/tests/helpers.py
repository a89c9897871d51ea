"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator, List, Optional, TypeVar

from nova_client import Client, Job, Worker

T = TypeVar("T")


def wait_until(check: Callable[[], Optional[T]], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> T:
    """Calls ``check`` until it returns something truthy; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def running(worker: Worker, max_jobs: Optional[int] = None, stop_timeout: float = 30.0) -> Iterator[Worker]:
    """Runs ``worker`` in a thread for the block; stops it (gracefully) and joins it afterwards.
    An error raised by ``run()`` fails the test."""
    errors: List[BaseException] = []

    def target() -> None:
        try:
            worker.run(max_jobs=max_jobs)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=target, name="test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(stop_timeout)
        assert not thread.is_alive(), "the worker did not stop"
    if errors:
        raise errors[0]


def jobs_in(client: Client, queue: str) -> List[Job]:
    return list(client.iter_jobs(queue=queue, page_size=200))


def count_state(client: Client, queue: str, state: str) -> int:
    stats = client.queue_stats()
    return int(stats.get("queues", {}).get(queue, {}).get(state, 0))
