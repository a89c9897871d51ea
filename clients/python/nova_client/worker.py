"""A threaded worker that runs Python handlers for jobs of ``type: external`` kinds.

Concurrency model (all standard-library threads; handlers are plain blocking functions):

* one **fetcher** thread claims jobs in batches (``max`` = free slots, at most ``batch``) with a
  long poll (``wait_seconds``), asking only for the kinds that have handlers and sending the
  capacity still free (the worker's capacity less the GPUs, CPUs and memory placed jobs hold); it
  uses a Client of its own so that ``stop()`` can break its long poll at once;
* ``concurrency`` **handler** threads (daemon threads fed by a queue) run one job each at a time;
* one **reporter** thread batches completions (flushed when ``batch`` results are waiting, or
  ~5 ms after the first one) into one ``POST /v1/jobs/complete``, and reports failures with
  ``fail`` one by one;
* one **heartbeat** thread extends every lease held (claimed, running, or finished but not yet
  reported) in one batch call every ``heartbeat_every`` seconds (default ``lease_seconds / 3``),
  raises ``cancel_requested`` on jobs the server reports ``cancelled`` and drops ``lost`` ones.

Graceful stop (SIGTERM/SIGINT when ``run()`` is in the main thread, or ``stop()``): claiming
stops (a pending long poll is broken off), claimed jobs that have not started are released at
once, running handlers get ``grace_seconds`` to finish, the leases of those still running are
then released (best effort; their late results are dropped), completions are flushed, and
``run()`` returns. A second signal skips what is left of the grace period.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from .capacity import CapacityLedger, GPUSelection, _apply_overrides, _describe_capacity, detect_capacity
from .client import Client
from .errors import (
    BadRequest,
    NovaConnectionError,
    NovaError,
    PayloadTooLarge,
    PermanentError,
    RateLimited,
    RetryLater,
    ServerError,
    Unavailable,
    Unprocessable,
)
from .models import ClaimedJob, Placement

__all__ = ["Worker", "ActiveJob", "Handler"]

logger = logging.getLogger("nova_client")

#: A handler takes the running job and returns a JSON-able result (or None).
Handler = Callable[["ActiveJob"], Any]
_H = TypeVar("_H", bound=Handler)

_worker_numbers = itertools.count(1)
_holder_numbers = itertools.count(1)

# Entry states.
_QUEUED = "queued"  # claimed, waiting for a handler thread
_RUNNING = "running"  # its handler runs
_DONE = "done"  # finished, its outcome waits for the reporter
_RELEASED = "released"  # given back (stop, or no handler)
_ABANDONED = "abandoned"  # still running when the grace period ended; lease released

_FLUSH_SECONDS = 0.005
#: The longest claim long poll while placed jobs hold part of the capacity: a claim carries the
#: capacity free when it was sent, so what a finishing job gives back counts from the next claim.
_HELD_WAIT_SECONDS = 2.0


class ActiveJob:
    """The job a handler runs: its fields, and signals that it should stop.

    ``attempt`` is this attempt's number (1 for the first run). ``placement`` is where the server
    placed this attempt (the GPUs it holds on this worker, by index and UUID, its CPUs and
    memory), None when the job asks for nothing; ``visible_devices`` gives its GPU indices as
    ``CUDA_VISIBLE_DEVICES`` takes them (``"0,1"``; ``""`` for none). ``cancel_requested`` turns
    True when a heartbeat reports the job cancelled; ``lease_lost`` when the lease is gone (another
    worker may run it); ``stopping`` when the worker shuts down. ``should_stop`` is any of them,
    and :meth:`sleep` waits but returns early on any of them.
    """

    __slots__ = ("job", "id", "kind", "queue", "payload", "attempt", "max_attempts", "lease", "placement",
                 "_cancel_requested", "_lease_lost", "_worker", "_signal", "_logger")

    def __init__(self, job: ClaimedJob, worker: "Worker") -> None:
        self.job = job
        self.id = job.id
        self.kind = job.kind
        self.queue = job.queue
        self.payload: Dict[str, Any] = job.payload
        self.attempt = job.attempts
        self.max_attempts = job.max_attempts
        self.lease = job.lease
        self.placement: Optional[Placement] = job.placement
        self._cancel_requested = False
        self._lease_lost = False
        self._worker = worker
        self._signal = threading.Event()
        self._logger: Optional[logging.LoggerAdapter[logging.Logger]] = None

    def __repr__(self) -> str:
        return f"ActiveJob(id={self.id!r}, kind={self.kind!r}, attempt={self.attempt})"

    @property
    def visible_devices(self) -> str:
        """The placed GPUs' indices for ``CUDA_VISIBLE_DEVICES``: ``"0,1"``, ``""`` for none."""
        return self.placement.visible_devices if self.placement is not None else ""

    @property
    def visible_uuids(self) -> str:
        """The placed GPUs' UUIDs for ``NVIDIA_VISIBLE_DEVICES`` (``""`` for none)."""
        return self.placement.visible_uuids if self.placement is not None else ""

    @property
    def cancel_requested(self) -> bool:
        """True once the server reported the job cancelled: stop and return (the result is dropped)."""
        return self._cancel_requested

    @property
    def lease_lost(self) -> bool:
        """True once the server reported the lease lost: the outcome will not be recorded."""
        return self._lease_lost

    @property
    def stopping(self) -> bool:
        """True once the worker is shutting down (the handler still has the grace period)."""
        return self._worker._stopping

    @property
    def should_stop(self) -> bool:
        return self._cancel_requested or self._lease_lost or self._worker._stopping

    @property
    def last_attempt(self) -> bool:
        return self.max_attempts > 0 and self.attempt >= self.max_attempts

    @property
    def logger(self) -> "logging.LoggerAdapter[logging.Logger]":
        """A logger ("nova_client.job") whose records carry ``job_id`` and ``job_kind``."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                logging.getLogger("nova_client.job"), {"job_id": self.id, "job_kind": self.kind}
            )
        return self._logger

    def sleep(self, seconds: float) -> bool:
        """Sleeps up to ``seconds``; returns True (early) when the job should stop."""
        if self.should_stop:
            return True
        self._signal.wait(seconds)
        return self.should_stop

    def _wake(self) -> None:
        self._signal.set()


@dataclass
class _Entry:
    job: ClaimedJob
    active: ActiveJob
    handler: Optional[Handler]
    state: str = _QUEUED
    cancelled: bool = False
    lost: bool = False
    #: Its key in the capacity ledger: one per claim (a job claimed again after its lease was lost
    #: is another holder, even while the first attempt's handler still runs).
    holder: str = ""


@dataclass
class _Outcome:
    entry: _Entry
    ok: bool
    result: Any = None
    error: str = ""
    retry: bool = True
    retry_in: Optional[float] = None


@dataclass
class WorkerStats:
    """Counters of a worker's run."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    released: int = 0
    cancelled: int = 0
    lost: int = 0


class Worker:
    """Runs handlers for claimed jobs. See the module documentation for the threads it uses.

    ``queues``: the queues to claim from. ``name``: the worker name the server records as lease
    owner (default ``host/pid-N``). ``concurrency``: handler threads. ``batch``: most jobs per
    claim and per completion call. ``prefetch``: jobs claimed ahead of free handler threads.
    ``lease_seconds``: lease length asked for. ``wait_seconds``: long-poll wait of an idle claim.
    ``grace_seconds``: how long running handlers may finish on stop. ``heartbeat_every``: seconds
    between heartbeats (default ``lease_seconds / 3``).

    ``capacity``: what this worker offers jobs that ask for resources (the ``capacity`` object of a
    claim, see :mod:`nova_client.capacity`); by default it is detected when ``run()`` starts
    (:func:`~nova_client.detect_capacity`: ``nvidia-smi``'s GPUs, this process's CPUs and memory).
    ``gpus`` (indices, ``[]`` for none), ``cpus``, ``memory_mib``, ``labels`` and ``host`` narrow
    that capacity (or the one given), as :func:`~nova_client.detect_capacity` does. Each claim
    sends what is free: the capacity less what the placed jobs claimed and not yet ended here hold
    (a job's GPUs, CPUs and memory are given back when its handler returns, or when it is released
    or dropped before it started), and the whole capacity as ``host_capacity``, so that the
    registry shows it and a starving large job can reserve this host.
    """

    _max_jobs: Optional[int]
    _grace_override: Optional[float]
    _fatal: Optional[BaseException]
    _ledger: Optional[CapacityLedger]

    def __init__(
        self,
        client: Client,
        queues: Union[str, Sequence[str]] = ("default",),
        *,
        name: Optional[str] = None,
        concurrency: int = 8,
        batch: int = 32,
        prefetch: int = 0,
        lease_seconds: float = 60,
        wait_seconds: float = 20,
        grace_seconds: float = 10,
        heartbeat_every: Optional[float] = None,
        capacity: Optional[Mapping[str, Any]] = None,
        gpus: Optional[GPUSelection] = None,
        cpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        labels: Optional[Mapping[str, str]] = None,
        host: Optional[str] = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 1 <= batch <= 1000:
            raise ValueError("batch must be in 1...1000")
        if prefetch < 0:
            raise ValueError("prefetch must not be negative")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.client = client
        self.queues: List[str] = [queues] if isinstance(queues, str) else list(queues)
        self.name = name or f"{socket.gethostname()}/{os.getpid()}-{next(_worker_numbers)}"
        self.concurrency = concurrency
        self.batch = batch
        self.prefetch = prefetch
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.grace_seconds = grace_seconds
        self.heartbeat_every = heartbeat_every if heartbeat_every is not None else lease_seconds / 3.0
        self._overrides: Dict[str, Any] = {"gpus": gpus, "cpus": cpus, "memory_mib": memory_mib, "labels": labels,
                                           "host": host}
        # A capacity given is checked now; a detected one when run() starts.
        self._fixed_capacity = None if capacity is None else _apply_overrides(capacity, **self._overrides)
        self._capacity: Optional[Dict[str, Any]] = self._fixed_capacity
        self._handlers: Dict[str, Handler] = {}
        self._patterns: List[Tuple[str, Handler]] = []
        self._run_lock = threading.Lock()
        self._reset()

    # -- Registration --------------------------------------------------------------------------------

    def job(self, kind: str) -> Callable[[_H], _H]:
        """Decorator: ``@worker.job("py.echo")`` registers the function as the handler of a kind
        (or of every kind matching a ``*`` pattern)."""

        def register(fn: _H) -> _H:
            self.register(kind, fn)
            return fn

        return register

    def register(self, kind: str, handler: Handler) -> None:
        """Registers ``handler`` for ``kind`` (a name or a ``*`` pattern)."""
        if "*" in kind:
            self._patterns.append((kind, handler))
        else:
            self._handlers[kind] = handler

    @property
    def kinds(self) -> List[str]:
        """The kinds (and patterns) this worker claims."""
        return sorted(self._handlers) + [pattern for pattern, _ in self._patterns]

    def handler_for(self, kind: str) -> Optional[Handler]:
        handler = self._handlers.get(kind)
        if handler is not None:
            return handler
        for pattern, candidate in self._patterns:
            if fnmatch.fnmatchcase(kind, pattern):
                return candidate
        return None

    # -- Running -------------------------------------------------------------------------------------

    def run(self, max_jobs: Optional[int] = None) -> None:
        """Runs until stopped (``stop()``, SIGTERM or SIGINT) or, with ``max_jobs``, until that many
        jobs were handled. Signal handlers are installed only when called in the main thread.
        Raises the error that made the worker give up (a token without the worker role...), and
        ``ValueError`` before anything starts when the capacity cannot be detected as asked
        (``nvidia-smi`` output it cannot read, a ``gpus`` override naming a GPU not there)."""
        if not self._handlers and not self._patterns:
            raise ValueError("no handlers registered: use @worker.job(kind)")
        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError("this worker is already running")
        try:
            self._reset()
            self._max_jobs = max_jobs
            try:
                if self._fixed_capacity is None:
                    self._capacity = detect_capacity(**self._overrides)
                assert self._capacity is not None
                self._ledger = CapacityLedger(self._capacity)
            except BaseException:
                self._finished.set()
                raise
            logger.info("worker %s capacity: %s", self.name, _describe_capacity(self._capacity))
            previous = self._install_signals()
            try:
                self._start_threads()
                logger.info(
                    "worker %s started: queues %s, kinds %s, concurrency %d, batch %d",
                    self.name, ",".join(self.queues), ",".join(self.kinds), self.concurrency, self.batch,
                )
                while not self._stop_requested:
                    self._wake.wait(0.1)
            finally:
                try:
                    self._shutdown()
                finally:
                    self._restore_signals(previous)
                    self._finished.set()
            logger.info(
                "worker %s stopped: %d succeeded, %d failed, %d released, %d cancelled, %d lost",
                self.name, self.stats.succeeded, self.stats.failed, self.stats.released,
                self.stats.cancelled, self.stats.lost,
            )
            if self._fatal is not None:
                raise self._fatal
        finally:
            self._run_lock.release()

    def stop(self, grace_seconds: Optional[float] = None, wait: bool = False, timeout: Optional[float] = None) -> bool:
        """Asks a running worker to stop gracefully (from any thread). ``grace_seconds`` overrides
        the worker's for this stop; with ``wait`` it blocks until ``run()`` has finished its
        shutdown (up to ``timeout``) and returns whether it did."""
        if grace_seconds is not None:
            self._grace_override = grace_seconds
        self._stop_requested = True
        self._wake.set()
        if wait:
            return self._finished.wait(timeout)
        return self._finished.is_set()

    @property
    def running(self) -> bool:
        return self._run_lock.locked() and not self._finished.is_set()

    @property
    def capacity(self) -> Optional[Dict[str, Any]]:
        """The capacity this worker offers (a copy): the one given, else the one detected when
        ``run()`` started (None before)."""
        return copy.deepcopy(self._capacity)

    def free_capacity(self) -> Optional[Dict[str, Any]]:
        """What the next claim would send as ``capacity``: the capacity less what placed jobs hold
        (None before ``run()``)."""
        with self._lock:
            return self._ledger.free() if self._ledger is not None else None

    # -- Internals -----------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._held: Dict[str, _Entry] = {}
        self._slots_used = 0  # queued + running
        self._running = 0
        self._unreported = 0
        self._claimed_total = 0
        self._handled = 0
        self._max_jobs = None
        self._stop_requested = False
        self._stopping = False
        self._hurry = False
        self._grace_override = None
        self._fatal = None
        self._wake = threading.Event()
        self._finished = threading.Event()
        self._heartbeat_stop = threading.Event()
        self._work: "queue.SimpleQueue[Optional[_Entry]]" = queue.SimpleQueue()
        self._reports: "queue.SimpleQueue[Optional[_Outcome]]" = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._fetcher: Optional[threading.Thread] = None
        self._reporter: Optional[threading.Thread] = None
        self._heartbeater: Optional[threading.Thread] = None
        self._fetch_client = self.client.clone()
        self._ledger = None
        self.stats = WorkerStats()

    def _install_signals(self) -> Dict[int, Any]:
        previous: Dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, self._on_signal)
            except (ValueError, OSError):  # pragma: no cover - not the main interpreter
                pass
        return previous

    @staticmethod
    def _restore_signals(previous: Dict[int, Any]) -> None:
        for signum, handler in previous.items():
            try:
                signal.signal(signum, handler)
            except (ValueError, OSError, TypeError):  # pragma: no cover
                pass

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        # Only plain assignments here: a lock taken in a signal handler can deadlock the thread it
        # interrupted. The run loop notices within 0.1 s.
        if self._stop_requested:
            self._hurry = True
        self._stop_requested = True

    def _start_threads(self) -> None:
        for number in range(self.concurrency):
            thread = threading.Thread(target=self._handler_loop, name=f"nova-handler-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._reporter = threading.Thread(target=self._reporter_loop, name="nova-reporter", daemon=True)
        self._heartbeater = threading.Thread(target=self._heartbeat_loop, name="nova-heartbeat", daemon=True)
        self._fetcher = threading.Thread(target=self._fetch_loop, name="nova-fetcher", daemon=True)
        self._reporter.start()
        self._heartbeater.start()
        self._fetcher.start()

    # Fetcher ---------------------------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        capacity = self.concurrency + self.prefetch
        backlog_limit = capacity + 4 * self.batch
        kinds = self.kinds
        failures = 0
        while True:
            with self._cond:
                while not self._stopping and (
                    self._slots_used >= capacity
                    or self._unreported >= backlog_limit
                    or (self._max_jobs is not None and self._claimed_total >= self._max_jobs)
                ):
                    self._cond.wait(0.5)
                if self._stopping:
                    return
                want = min(self.batch, capacity - self._slots_used)
                if self._max_jobs is not None:
                    want = min(want, self._max_jobs - self._claimed_total)
                assert self._ledger is not None
                free = self._ledger.free()
                wait = min(self.wait_seconds, _HELD_WAIT_SECONDS) if len(self._ledger) else self.wait_seconds
            try:
                jobs = self._fetch_client.claim(
                    self.name, self.queues, kinds, max=want, lease_seconds=self.lease_seconds,
                    wait_seconds=wait, capacity=free, host_capacity=self._capacity,
                )
                failures = 0
            except (NovaConnectionError, ServerError, RateLimited) as error:
                if self._stopping:
                    return
                failures += 1
                delay = min(5.0, 0.1 * 2 ** min(failures, 6))
                retry_after = getattr(error, "retry_after", None)
                if isinstance(error, (RateLimited, Unavailable)) and retry_after:
                    delay = max(delay, float(retry_after))
                logger.warning("claim failed (%s); trying again in %.1f s", error, delay)
                self._sleep_unless_stopping(delay)
                continue
            except NovaError as error:
                logger.error("claim refused (%s); the worker stops", error)
                self._fatal = error
                self.stop()
                return
            except Exception as error:  # pragma: no cover - a bug, not a server answer
                logger.exception("claim failed unexpectedly")
                self._fatal = error
                self.stop()
                return
            if not jobs:
                if self.wait_seconds < 1:
                    self._sleep_unless_stopping(0.25)  # no long poll: do not hammer the server
                continue
            unhandled: List[ClaimedJob] = []
            late: List[ClaimedJob] = []
            entries: List[_Entry] = []
            with self._lock:
                self._claimed_total += len(jobs)
                self.stats.claimed += len(jobs)
                for job in jobs:
                    if self._stopping:
                        late.append(job)
                        continue
                    handler = self.handler_for(job.kind)
                    if handler is None:
                        unhandled.append(job)
                        continue
                    entry = _Entry(job=job, active=ActiveJob(job, self), handler=handler,
                                   holder=f"{job.id}#{next(_holder_numbers)}")
                    self._held[job.id] = entry
                    self._ledger.take(entry.holder, job.placement)
                    entries.append(entry)
                self._slots_used += len(entries)
            for entry in entries:
                self._work.put(entry)
            if unhandled:
                logger.warning("no handler for kinds %s; releasing %d job(s)",
                               sorted({job.kind for job in unhandled}), len(unhandled))
                self._release(unhandled)
            if late:
                self._release(late)
                return

    def _sleep_unless_stopping(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(0.05, remaining))

    def _release(self, jobs: Sequence[ClaimedJob]) -> None:
        """Gives jobs back (best effort; a lease not released expires by itself)."""
        for start in range(0, len(jobs), 1000):
            chunk = jobs[start:start + 1000]
            try:
                self.client.release_many([(job.id, job.lease) for job in chunk])
            except NovaError as error:
                logger.warning("releasing %d job(s) failed: %s", len(chunk), error)
                continue
            with self._lock:
                self.stats.released += len(chunk)

    # Handlers --------------------------------------------------------------------------------------

    def _handler_loop(self) -> None:
        while True:
            entry = self._work.get()
            if entry is None:
                return
            with self._lock:
                if entry.state != _QUEUED:
                    continue
                entry.state = _RUNNING
                self._running += 1
            outcome = self._run_handler(entry)
            with self._cond:
                self._running -= 1
                self._slots_used -= 1
                self._give_back_locked(entry)
                report = entry.state == _RUNNING
                if report:
                    entry.state = _DONE
                    self._unreported += 1
                self._cond.notify_all()
            if report:
                self._reports.put(outcome)
            else:
                logger.info("job %s (%s) finished after its lease was released; outcome dropped",
                            entry.job.id, entry.job.kind)

    def _run_handler(self, entry: _Entry) -> _Outcome:
        job = entry.active
        assert entry.handler is not None
        try:
            result = entry.handler(job)
        except RetryLater as error:
            return _Outcome(entry, ok=False, error=_describe(error), retry=True, retry_in=error.seconds)
        except PermanentError as error:
            return _Outcome(entry, ok=False, error=_describe(error), retry=False)
        except Exception as error:
            if entry.cancelled or job.cancel_requested:
                logger.debug("job %s raised after it was cancelled: %s", job.id, error)
            else:
                logger.warning("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempt, _describe(error),
                               exc_info=logger.isEnabledFor(logging.DEBUG))
            return _Outcome(entry, ok=False, error=_describe(error), retry=True)
        except BaseException as error:  # SystemExit, KeyboardInterrupt in a handler: still reported
            return _Outcome(entry, ok=False, error=_describe(error), retry=True)
        if result is not None:
            try:
                json.dumps(result)  # here, not in the middle of a batch
            except (TypeError, ValueError) as error:
                logger.error("job %s (%s): the handler's result is not JSON: %s", job.id, job.kind, error)
                return _Outcome(entry, ok=False, error=f"result is not JSON serializable: {error}", retry=False)
        return _Outcome(entry, ok=True, result=result)

    # Reporter --------------------------------------------------------------------------------------

    def _reporter_loop(self) -> None:
        done = False
        while not done:
            first = self._reports.get()
            if first is None:
                return
            pending: List[_Outcome] = [first]
            deadline = time.monotonic() + _FLUSH_SECONDS
            completions = 1 if first.ok else 0
            while completions < self.batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._reports.get(timeout=remaining) if remaining > 0 else self._reports.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                pending.append(item)
                if item.ok:
                    completions += 1
            try:
                self._report(pending)
            except Exception:  # pragma: no cover - a bug; keep the reporter alive
                logger.exception("reporting %d outcome(s) failed", len(pending))
                for outcome in pending:
                    if self._held.get(outcome.entry.job.id) is outcome.entry:
                        self._finish(outcome.entry, "lost")

    def _report(self, outcomes: List[_Outcome]) -> None:
        completions: List[_Outcome] = []
        for outcome in outcomes:
            entry = outcome.entry
            if entry.cancelled or entry.lost:
                self._finish(entry, "cancelled" if entry.cancelled else "lost")
            elif outcome.ok:
                completions.append(outcome)
            else:
                self._report_failure(outcome)
        if completions:
            self._report_completions(completions)

    def _report_completions(self, outcomes: List[_Outcome]) -> None:
        items = [(o.entry.job.id, o.entry.job.lease, o.result) for o in outcomes]
        try:
            results = self._with_retries(lambda: self.client.complete_many(items), f"completing {len(items)} job(s)")
        except NovaError as error:
            if len(outcomes) > 1 and not isinstance(error, (NovaConnectionError, ServerError, RateLimited)):
                # One bad entry (a result too large...) must not sink the others: one by one.
                for outcome in outcomes:
                    self._report_completions([outcome])
                return
            if isinstance(error, (BadRequest, PayloadTooLarge, Unprocessable)):
                # This result will never be accepted: fail the job rather than let it run again.
                outcome = outcomes[0]
                self._report_failure(
                    _Outcome(outcome.entry, ok=False, error=f"result refused by the server: {error}", retry=False)
                )
                return
            logger.error("completing %d job(s) failed: %s", len(items), error)
            for outcome in outcomes:
                self._finish(outcome.entry, "lost")
            return
        recorded = {r.id: r.recorded for r in results}
        for outcome in outcomes:
            entry = outcome.entry
            if recorded.get(entry.job.id, False):
                self._finish(entry, "succeeded")
            else:
                logger.warning("job %s (%s): completion not recorded, the lease was lost", entry.job.id, entry.job.kind)
                self._finish(entry, "lost")

    def _report_failure(self, outcome: _Outcome) -> None:
        entry = outcome.entry
        try:
            self._with_retries(
                lambda: self.client.fail(entry.job.id, entry.job.lease, outcome.error, retry=outcome.retry,
                                         retry_in_seconds=outcome.retry_in),
                f"failing job {entry.job.id}",
            )
        except NovaError as error:
            logger.warning("job %s (%s): failure not recorded: %s", entry.job.id, entry.job.kind, error)
            self._finish(entry, "lost")
            return
        self._finish(entry, "failed")

    def _with_retries(self, call: Callable[[], Any], what: str) -> Any:
        """Retries a (server-idempotent) report on connection errors, 5xx and 429 for about a
        lease length (less once stopping)."""
        deadline = time.monotonic() + (min(self.lease_seconds, 5.0) if self._stopping else self.lease_seconds)
        delay = 0.05
        while True:
            try:
                return call()
            except (NovaConnectionError, ServerError, RateLimited) as error:
                if time.monotonic() + delay > deadline:
                    raise
                logger.warning("%s failed (%s); trying again", what, error)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _finish(self, entry: _Entry, outcome: str) -> None:
        with self._cond:
            if self._held.get(entry.job.id) is entry:
                del self._held[entry.job.id]
            self._unreported -= 1
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
            stop = self._count_handled_locked()
        if stop:
            self.stop()

    def _give_back_locked(self, entry: _Entry) -> None:
        """Frees what the job's placement holds (lock held): its handler returned, or it was let go
        before it started."""
        if self._ledger is not None and self._ledger.give_back(entry.holder):
            logger.debug("job %s (%s) gave back %s", entry.job.id, entry.job.kind, entry.job.placement)

    def _count_handled_locked(self) -> bool:
        """Counts one handled job (lock held); True when ``max_jobs`` is reached."""
        self._handled += 1
        self._cond.notify_all()
        return self._max_jobs is not None and self._handled >= self._max_jobs

    # Heartbeats ------------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = max(0.05, float(self.heartbeat_every))
        wait = interval
        while not self._heartbeat_stop.wait(wait):
            wait = interval
            with self._lock:
                leases = [(e.job.id, e.job.lease) for e in self._held.values()
                          if e.state in (_QUEUED, _RUNNING, _DONE) and not e.cancelled and not e.lost]
            for start in range(0, len(leases), 1000):
                chunk = leases[start:start + 1000]
                try:
                    results = self.client.heartbeat(chunk, lease_seconds=self.lease_seconds)
                    self._apply_heartbeats(results)
                except NovaError as error:
                    logger.warning("heartbeat of %d lease(s) failed: %s", len(chunk), error)
                    wait = min(interval, 1.0)
                except Exception:  # pragma: no cover - a bug; keep heartbeating
                    logger.exception("heartbeat failed")
                    wait = min(interval, 1.0)

    def _apply_heartbeats(self, results: Sequence[Any]) -> None:
        stop = False
        with self._lock:
            for result in results:
                entry = self._held.get(result.id)
                if entry is None:
                    continue
                if result.status == "cancelled":
                    if not entry.cancelled:
                        logger.info("job %s (%s) was cancelled", entry.job.id, entry.job.kind)
                    entry.cancelled = True
                    entry.active._cancel_requested = True
                    entry.active._wake()
                elif result.status == "lost":
                    if not entry.lost and entry.state != _DONE:  # a DONE one may just have been completed
                        logger.warning("job %s (%s): lease lost", entry.job.id, entry.job.kind)
                    entry.lost = True
                    entry.active._lease_lost = True
                    entry.active._wake()
                if (entry.cancelled or entry.lost) and entry.state == _QUEUED:
                    # Not started yet: it will never run here.
                    entry.state = _RELEASED
                    self._give_back_locked(entry)
                    self._slots_used -= 1
                    del self._held[entry.job.id]
                    self.stats.cancelled += 1 if entry.cancelled else 0
                    self.stats.lost += 1 if entry.lost else 0
                    stop = self._count_handled_locked() or stop
        if stop:
            self.stop()

    # Shutdown --------------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        grace = self._grace_override if self._grace_override is not None else self.grace_seconds
        deadline = time.monotonic() + max(0.0, grace)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            for entry in self._held.values():
                entry.active._wake()
        logger.info("worker %s stopping (grace %.1f s)", self.name, grace)
        # 1. No more claims: break a pending long poll.
        self._fetch_client._abort()
        if self._fetcher is not None:
            self._fetcher.join()
        # 2. Jobs claimed but not started go back at once.
        with self._lock:
            waiting = [e for e in self._held.values() if e.state == _QUEUED]
            for entry in waiting:
                entry.state = _RELEASED
                self._give_back_locked(entry)
                del self._held[entry.job.id]
            self._slots_used -= len(waiting)
        for _ in self._threads:
            self._work.put(None)
        if waiting:
            self._release([e.job for e in waiting])
        # 3. Running handlers get the grace period (heartbeats go on meanwhile).
        with self._cond:
            while self._running > 0 and not self._hurry:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.1))
            # 4. Those still running lose their leases; their late results are dropped.
            still = [e for e in self._held.values() if e.state == _RUNNING]
            for entry in still:
                entry.state = _ABANDONED
                del self._held[entry.job.id]
        if still:
            logger.warning("%d job(s) still running after the grace period; releasing their leases", len(still))
            self._release([e.job for e in still])
        # 5. Flush the outcomes waiting to be reported, then stop heartbeating.
        self._reports.put(None)
        if self._reporter is not None:
            self._reporter.join(timeout=max(5.0, min(self.lease_seconds, 30.0)))
        self._heartbeat_stop.set()
        if self._heartbeater is not None:
            self._heartbeater.join(timeout=self.client.timeout + 1.0)


_MAX_ERROR_CHARS = 8000


def _describe(error: BaseException) -> str:
    """``Type: message``, cut to a size the server takes (it refuses more than 64 KiB)."""
    text = str(error)
    name = type(error).__name__
    described = f"{name}: {text}" if text else name
    if len(described) > _MAX_ERROR_CHARS:
        described = described[: _MAX_ERROR_CHARS - 15] + " …(truncated)"
    return described
