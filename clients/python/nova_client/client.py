"""The HTTP client: one keep-alive ``http.client`` connection per thread, JSON in and out."""

from __future__ import annotations

import http.client
import json
import logging
import re
import select
import socket
import threading
import time
import urllib.parse
import weakref
from typing import Any, Iterable, Iterator, List, Mapping, Sequence, Tuple, Union

from ._version import __version__
from .errors import NovaConnectionError, NovaError, NovaTimeout, error_from_response
from .models import (
    ClaimedJob,
    CompleteResult,
    FailResult,
    HeartbeatReply,
    HeartbeatResult,
    Constraints,
    Job,
    JobSpec,
    Page,
    Resources,
    Submitted,
)

__all__ = ["Client", "MAX_BATCH"]

logger = logging.getLogger("nova_client")

#: A lease as the batch calls take it: ``(job_id, lease_token)``.
Lease = Tuple[str, str]
#: A completion: ``(job_id, lease_token)`` or ``(job_id, lease_token, result)``.
Completion = Union[Tuple[str, str], Tuple[str, str, Any]]

_JSON_SEPARATORS = (",", ":")

#: The fields of a job body (``POST /v1/jobs``, and each entry of ``POST /v1/jobs/batch``).
_JOB_FIELDS = (
    "kind", "payload", "queue", "priority", "delay_seconds", "max_attempts", "idempotency_key", "resources", "constraints",
    "concurrency_key",
)
#: Those sent as given.
_PLAIN_FIELDS = ("queue", "priority", "delay_seconds", "max_attempts", "idempotency_key", "concurrency_key")
#: The most jobs one ``POST /v1/jobs/batch`` takes.
MAX_BATCH = 1000
#: A batch body is split before it grows past this (the server takes bodies of 32 MiB at least).
_MAX_BATCH_BYTES = 16 << 20
_ENTRY_INDEX = re.compile(r"jobs\[(\d+)\]")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=_JSON_SEPARATORS, ensure_ascii=False).encode("utf-8")


def _requirements(
    value: Union[Mapping[str, Any], Resources, Constraints, None], kind: type, field: str
) -> dict[str, Any] | None:
    """``resources`` or ``constraints`` as sent: a mapping as given (the server checks it
    strictly), a :class:`Resources` or :class:`Constraints` as its JSON; None for none."""
    if value is None:
        return None
    if isinstance(value, (Resources, Constraints)) and isinstance(value, kind):
        return value.to_json()
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{field} must be a mapping (a JSON object) or a {kind.__name__}, not {type(value).__name__}"
        )
    return {key: dict(item) if isinstance(item, Mapping) else item for key, item in value.items()}


def _job_entry(job: Union[Mapping[str, Any], JobSpec], index: int, queue: str | None) -> dict[str, Any]:
    """The body of one job of ``enqueue_many``, checked as far as the client can (TypeError)."""
    fields: Mapping[str, Any]
    if isinstance(job, JobSpec):
        fields = {name: getattr(job, name) for name in _JOB_FIELDS}
    elif isinstance(job, Mapping):
        for key in job:
            if key not in _JOB_FIELDS:
                raise TypeError(f"jobs[{index}]: unknown field {key!r}; expected one of {', '.join(_JOB_FIELDS)}")
        fields = job
    else:
        raise TypeError(f"jobs[{index}] must be a mapping or a JobSpec, not {type(job).__name__}")
    kind = fields.get("kind")
    if not isinstance(kind, str):
        raise TypeError(f"jobs[{index}].kind must be a string, not {type(kind).__name__}")
    body: dict[str, Any] = {"kind": kind}
    payload = fields.get("payload")
    if payload is not None:
        if not isinstance(payload, Mapping):
            raise TypeError(
                f"jobs[{index}].payload must be a mapping (a JSON object), not {type(payload).__name__}"
            )
        body["payload"] = payload if isinstance(payload, dict) else dict(payload)
    for name in _PLAIN_FIELDS:
        value = fields.get(name)
        if value is not None:
            body[name] = value
    resources = _requirements(fields.get("resources"), Resources, f"jobs[{index}].resources")
    if resources is not None:
        body["resources"] = resources
    constraints = _requirements(fields.get("constraints"), Constraints, f"jobs[{index}].constraints")
    if constraints is not None:
        body["constraints"] = constraints
    if queue is not None and "queue" not in body:
        body["queue"] = queue
    return body


def _in_batch(error: NovaError, offset: int, submitted: List[Submitted]) -> NovaError:
    """The error of one request of ``enqueue_many``, its entry index (``jobs[3]``) made an index
    into the caller's jobs, with ``offset`` and the jobs ``submitted`` by the earlier requests."""
    if offset and error.message:
        message = _ENTRY_INDEX.sub(lambda match: f"jobs[{int(match.group(1)) + offset}]", error.message, count=1)
        if message != error.message:
            error.message = message
            error.args = (error.status, error.code, message)
    error.offset = offset  # type: ignore[attr-defined]
    error.submitted = submitted  # type: ignore[attr-defined]
    return error


def _quote(part: str) -> str:
    return urllib.parse.quote(str(part), safe="")


def _socket_dropped(sock: socket.socket) -> bool:
    """True when an idle keep-alive socket was closed by the server (readable means EOF or junk)."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True


class Client:
    """A Nova API client.

    ``url`` is the server's base URL (``http://127.0.0.1:8080``; ``https://`` works too),
    ``token`` a Nova API token, ``timeout`` the socket timeout of each call in seconds (a
    long-polling claim adds its ``wait_seconds`` to it).

    A Client may be shared by threads: each thread keeps its own persistent connection.
    """

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {parts.scheme!r} (expected http or https)")
        if not parts.hostname:
            raise ValueError(f"no host in URL {url!r}")
        self.url = url
        self.timeout = float(timeout)
        self._token = token
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._headers = {
            "Accept": "application/json",
            "User-Agent": f"nova-client-python/{__version__}",
        }
        if token:  # an empty token sends none (a server without authentication)
            self._headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()
        self._registry_lock = threading.Lock()
        self._connections: "weakref.WeakSet[http.client.HTTPConnection]" = weakref.WeakSet()
        self._aborted = False

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def clone(self) -> "Client":
        """A new Client for the same server, token and timeout, with connections of its own."""
        return Client(self.url, self._token, self.timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Jobs ----------------------------------------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay_seconds: float | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        resources: Union[Mapping[str, int], Resources, None] = None,
        constraints: Union[Mapping[str, Any], Constraints, None] = None,
        concurrency_key: str | None = None,
    ) -> Job:
        """Submits a job (``POST /v1/jobs``). With an ``idempotency_key`` already used, the
        existing job is returned (200) instead of a new one (201).

        ``resources`` is what the job needs of its host (``{"gpus": 2, "gpu_memory_mib": 40000,
        "cpus": 4, "memory_mib": 16000}``, each optional) and ``constraints`` where it may run
        (``{"gpu_model": "*H100*", "host": "spark-*", "labels": {"zone": "b"}}``, glob patterns,
        each optional); either may be a mapping or a :class:`Resources` / :class:`Constraints`.
        Only workers that declare capacity take such a job, and only when it fits what they have
        free. The server checks both strictly (``Unprocessable`` naming ``resources.gpus``...).

        ``concurrency_key`` (a tenant, a model, an API account) makes the job share its kind's and
        its queue's per-key limits (``max_running_per_key``, ``rate_per_key``) with the jobs of
        that key, across every worker."""
        body: dict[str, Any] = {"kind": kind}
        if payload is not None:
            if not isinstance(payload, Mapping):
                raise TypeError(f"payload must be a mapping (a JSON object), not {type(payload).__name__}")
            body["payload"] = dict(payload)
        if queue is not None:
            body["queue"] = queue
        if priority is not None:
            body["priority"] = priority
        if delay_seconds is not None:
            body["delay_seconds"] = delay_seconds
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if concurrency_key is not None:
            body["concurrency_key"] = concurrency_key
        requested = _requirements(resources, Resources, "resources")
        if requested is not None:
            body["resources"] = requested
        where = _requirements(constraints, Constraints, "constraints")
        if where is not None:
            body["constraints"] = where
        # Resending a submission is safe only when the key makes it idempotent.
        data = self._call("POST", "/v1/jobs", body, retry_safe=idempotency_key is not None)
        return Job.from_json(data)

    def enqueue_many(
        self,
        jobs: Iterable[Union[Mapping[str, Any], JobSpec]],
        *,
        queue: str | None = None,
        batch_size: int = MAX_BATCH,
    ) -> List[Submitted]:
        """Submits many jobs (``POST /v1/jobs/batch``, at most ``batch_size`` jobs per request,
        1...1000) and returns one :class:`Submitted` (``id``, ``state``, ``created``) per job, in
        order.

        Each job is a mapping with the keys of :meth:`enqueue` plus ``kind`` (``{"kind": "py.x",
        "payload": {...}, "queue": "q", "priority": 5, "delay_seconds": 60, "max_attempts": 3,
        "idempotency_key": "k", "resources": {"gpus": 1}, "constraints": {"host": "gpu-*"}}``,
        only ``kind`` required) or a :class:`JobSpec`. ``queue`` is the queue of the jobs that name
        none. Every job is checked before anything is sent: an entry that is not a mapping, an
        unknown key, a ``kind`` that is not a string or a ``payload``, ``resources`` or
        ``constraints`` that is not a mapping raise ``TypeError`` naming the entry
        (``jobs[3].payload``).

        Each request is all or nothing on the server: an invalid entry refuses its whole request
        (``Unprocessable``/``BadRequest``; the message names the entry, ``invalid jobs[1].kind:
        unknown job kind 'x'``, counted in the jobs given here). Jobs of earlier requests stay
        submitted: the error's ``submitted`` attribute lists them and ``offset`` is the index of the
        first job of the refused request. A request is sent again after a dropped kept-alive
        connection only when every job in it has an ``idempotency_key``.
        """
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in 1...{MAX_BATCH}")
        encoded: List[bytes] = []
        keyed: List[bool] = []
        for index, job in enumerate(jobs):
            body = _job_entry(job, index, queue)
            encoded.append(_dumps(body))
            keyed.append("idempotency_key" in body)
        submitted: List[Submitted] = []
        start = 0
        while start < len(encoded):
            end, size = start + 1, len(encoded[start])
            while end < len(encoded) and end - start < batch_size and size + len(encoded[end]) < _MAX_BATCH_BYTES:
                size += len(encoded[end]) + 1
                end += 1
            data = b'{"jobs":[' + b",".join(encoded[start:end]) + b"]}"
            try:
                answer = self._call("POST", "/v1/jobs/batch", raw=data, retry_safe=all(keyed[start:end]))
                results = [Submitted.from_json(item) for item in answer.get("jobs") or []]
                if len(results) != end - start:
                    raise NovaError(
                        201, "bad_response", f"POST /v1/jobs/batch: {len(results)} jobs answered for {end - start} sent"
                    )
            except NovaError as error:
                raise _in_batch(error, start, submitted)
            submitted.extend(results)
            start = end
        return submitted

    def get(self, id: str) -> Job:
        """One job (``GET /v1/jobs/{id}``)."""
        return Job.from_json(self._call("GET", f"/v1/jobs/{_quote(id)}", retry_safe=True))

    def wait(self, id: str, timeout: float = 60.0, poll: float = 0.2) -> Job:
        """Polls the job until it is ``succeeded``, ``dead`` or ``cancelled`` and returns it.

        The poll interval starts at ``poll`` and grows by half each time up to 1 s (or ``poll``
        when that is larger). Raises :class:`NovaTimeout` (a ``TimeoutError``) after ``timeout``
        seconds; its ``job`` attribute holds the last state seen.
        """
        deadline = time.monotonic() + timeout
        interval = max(0.01, poll)
        ceiling = max(1.0, poll)
        while True:
            job = self.get(id)
            if job.terminal:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                error = NovaTimeout(f"job {id} is still {job.state} after {timeout:g} s")
                error.job = job  # type: ignore[attr-defined]
                raise error
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, ceiling)

    def cancel(self, id: str) -> Job:
        """Cancels a job (``POST /v1/jobs/{id}/cancel``); a running one is told through its heartbeats."""
        return Job.from_json(self._call("POST", f"/v1/jobs/{_quote(id)}/cancel", retry_safe=False))

    def retry(self, id: str) -> Job:
        """Runs a dead or cancelled job again (``POST /v1/jobs/{id}/retry``)."""
        return Job.from_json(self._call("POST", f"/v1/jobs/{_quote(id)}/retry", retry_safe=False))

    def list(
        self,
        state: str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """One page of jobs (``GET /v1/jobs``); pass ``page.next_cursor`` as ``cursor`` for the next."""
        query: dict[str, str] = {}
        if state is not None:
            query["state"] = state
        if queue is not None:
            query["queue"] = queue
        if kind is not None:
            query["kind"] = kind
        query["limit"] = str(limit)
        if cursor is not None:
            query["cursor"] = cursor
        data = self._call("GET", "/v1/jobs?" + urllib.parse.urlencode(query), retry_safe=True)
        jobs = [Job.from_json(item) for item in data.get("jobs") or []]
        next_cursor = data.get("next_cursor")
        return Page(jobs=jobs, next_cursor=None if next_cursor in (None, "") else str(next_cursor))

    def iter_jobs(
        self,
        state: str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Job]:
        """Every matching job, following the cursors page by page."""
        cursor: str | None = None
        while True:
            page = self.list(state=state, queue=queue, kind=kind, limit=page_size, cursor=cursor)
            yield from page.jobs
            if page.next_cursor is None or not page.jobs:
                return
            cursor = page.next_cursor

    def queue_stats(self) -> dict[str, Any]:
        """``GET /v1/queues/stats`` as the server answers it: ``{"queues": {name: {state: count}}, "totals": {...}, ...}``."""
        data = self._call("GET", "/v1/queues/stats", retry_safe=True)
        return data if isinstance(data, dict) else {}

    def health(self) -> bool:
        """True when ``GET /healthz`` answers 200."""
        try:
            self._call("GET", "/healthz", retry_safe=True)
            return True
        except NovaError:
            return False

    # -- Worker protocol -----------------------------------------------------------------------------

    def claim(
        self,
        worker: str,
        queues: Union[str, Sequence[str]] = ("default",),
        kinds: Sequence[str] | None = None,
        max: int = 1,
        lease_seconds: float = 60,
        wait_seconds: float = 0,
        capacity: Mapping[str, Any] | None = None,
        host_capacity: Mapping[str, Any] | None = None,
    ) -> List[ClaimedJob]:
        """Leases up to ``max`` jobs (``POST /v1/workers/claim``), long-polling up to
        ``wait_seconds`` when none is available. ``kinds`` are names or ``*`` patterns; None
        takes any kind. Each job's attempt already counts; report it with its ``lease``.

        ``capacity`` is what this worker has **free** now (``{"host": "gpu-a", "gpus": [{"index":
        0, "uuid": "GPU-…", "model": "NVIDIA H100 80GB HBM3", "memory_mib": 81559,
        "unified_memory": False}], "cpus": 16, "memory_mib": 64000, "labels": {"zone": "b"}}``, as
        :func:`nova_client.detect_capacity` gives it). Without it only jobs that ask for no
        resources and have no constraints are handed out; with it, also those that fit, each with
        a ``placement`` naming the GPUs it gets: they are that job's alone until its attempt ends,
        so leave them out of the capacity of later claims until then.

        ``host_capacity`` is all the host offers, free or not (the same form): the registry shows
        it (``GET /v1/workers``), ``waiting_for`` tells from it whether a job could ever run
        here, and a large job that has waited past the server's reservation wait reserves this
        host (no other job that asks for something is placed here until it fits)."""
        body: dict[str, Any] = {
            "worker": worker,
            "queues": [queues] if isinstance(queues, str) else list(queues),
            "max": max,
            "lease_seconds": lease_seconds,
            "wait_seconds": wait_seconds,
        }
        if kinds is not None:
            body["kinds"] = list(kinds)
        if capacity is not None:
            body["capacity"] = capacity if isinstance(capacity, dict) else dict(capacity)
        if host_capacity is not None:
            body["host_capacity"] = host_capacity if isinstance(host_capacity, dict) else dict(host_capacity)
        # Not resent after it was sent: a lost answer's jobs come back when their leases expire.
        data = self._call(
            "POST", "/v1/workers/claim", body, retry_safe=False, timeout=self.timeout + float(wait_seconds)
        )
        return [ClaimedJob.from_json(item) for item in data.get("jobs") or []]

    def workers(self) -> List[dict[str, Any]]:
        """The worker registry (``GET /v1/workers``): every worker live or lapsed within the hour,
        as the server lists it (``id``, ``state``, ``host``, ``capacity``, ``free``, ``in_use``,
        ``running``, …)."""
        data = self._call("GET", "/v1/workers", None, retry_safe=True)
        return list(data.get("workers") or [])

    def heartbeat(self, leases: Iterable[Lease], lease_seconds: float | None = None) -> List[HeartbeatResult]:
        """Extends many leases at once (``POST /v1/jobs/heartbeat``). Each result's ``status`` is
        ``extended``, ``cancelled`` (stop working on it) or ``lost``."""
        body: dict[str, Any] = {"leases": [{"id": job_id, "lease": lease} for job_id, lease in leases]}
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        data = self._call("POST", "/v1/jobs/heartbeat", body, retry_safe=True)
        return [HeartbeatResult.from_json(item) for item in data.get("results") or []]

    def heartbeat_one(self, id: str, lease: str, lease_seconds: float | None = None) -> HeartbeatReply:
        """Extends one lease (``POST /v1/jobs/{id}/heartbeat``); raises :class:`LeaseLost` when it is gone."""
        body: dict[str, Any] = {"lease": lease}
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        data = self._call("POST", f"/v1/jobs/{_quote(id)}/heartbeat", body, retry_safe=True)
        return HeartbeatReply.from_json(data)

    def complete(self, id: str, lease: str, result: Any = None) -> str:
        """Records success (``POST /v1/jobs/{id}/complete``) and returns the job's state
        (``succeeded``). ``result`` is any JSON value (None sends none). Raises :class:`LeaseLost`
        for a stale or foreign lease; completing twice with the same lease is fine."""
        body: dict[str, Any] = {"lease": lease}
        if result is not None:
            body["result"] = result
        data = self._call("POST", f"/v1/jobs/{_quote(id)}/complete", body, retry_safe=True)
        return str(data.get("state", ""))

    def complete_many(self, completions: Iterable[Completion]) -> List[CompleteResult]:
        """Records many successes in one call (``POST /v1/jobs/complete``, 1..1000 entries).
        Entries are ``(id, lease)`` or ``(id, lease, result)``; a result with ``recorded`` False
        lost its lease."""
        jobs: list[dict[str, Any]] = []
        for entry in completions:
            item: dict[str, Any] = {"id": entry[0], "lease": entry[1]}
            if len(entry) > 2 and entry[2] is not None:
                item["result"] = entry[2]
            jobs.append(item)
        if not jobs:
            return []
        data = self._call("POST", "/v1/jobs/complete", {"jobs": jobs}, retry_safe=True)
        return [CompleteResult.from_json(item) for item in data.get("results") or []]

    def fail(
        self,
        id: str,
        lease: str,
        error: str,
        retry: bool = True,
        retry_in_seconds: float | None = None,
    ) -> FailResult:
        """Records a failed attempt (``POST /v1/jobs/{id}/fail``). With ``retry`` the job runs
        again (after ``retry_in_seconds``, or the server's backoff) while attempts remain; without
        it the job goes dead. The result's ``state`` is ``failed`` (to run again at ``run_at``) or
        ``dead``. Raises :class:`LeaseLost` when the lease is gone."""
        body: dict[str, Any] = {"lease": lease, "error": error, "retry": retry}
        if retry_in_seconds is not None:
            body["retry_in_seconds"] = retry_in_seconds
        data = self._call("POST", f"/v1/jobs/{_quote(id)}/fail", body, retry_safe=True)
        return FailResult.from_json(data)

    def release_many(self, leases: Iterable[Lease]) -> int:
        """Gives jobs back without counting their attempt (``POST /v1/jobs/release``); returns how
        many were released."""
        jobs = [{"id": job_id, "lease": lease} for job_id, lease in leases]
        if not jobs:
            return 0
        data = self._call("POST", "/v1/jobs/release", {"jobs": jobs}, retry_safe=True)
        return int(data.get("released", 0))

    # -- Connections ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes this thread's connection and shuts down those of other threads (a call blocked in
        another thread, such as a long-polling claim, fails with :class:`NovaConnectionError`).
        The Client stays usable: the next call opens a new connection."""
        own = getattr(self._local, "conn", None)
        with self._registry_lock:
            connections = list(self._connections)
        for conn in connections:
            if conn is own:
                continue
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if own is not None:
            self._drop(own)

    def _abort(self) -> None:
        """Breaks every call in progress and refuses new ones (for a Client of one's own, such as
        the Worker's claiming Client, which is made anew for each run)."""
        self._aborted = True
        self.close()

    def _new_connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        with self._registry_lock:
            self._connections.add(conn)
        return conn

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it is a reused (kept-alive) one."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            sock = conn.sock
            if sock is not None and not _socket_dropped(sock):
                return conn, True
            self._drop(conn)
        conn = self._new_connection()
        self._local.conn = conn
        return conn, False

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        try:
            conn.close()
        except Exception:  # pragma: no cover - closing never matters
            pass
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._registry_lock:
            self._connections.discard(conn)

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        retry_safe: bool,
        timeout: float | None = None,
        raw: bytes | None = None,
    ) -> Any:
        """One request; the decoded JSON body of a 2xx answer, else the matching NovaError.

        A kept-alive connection that fails is replaced and the request sent once more when that
        cannot repeat its effect: the request was not completely sent, or it is ``retry_safe``
        (idempotent on the server). A new connection that fails is not retried.
        """
        data = raw if raw is not None else None if body is None else _dumps(body)
        headers = self._headers
        if data is not None:
            headers = dict(headers)
            headers["Content-Type"] = "application/json"
        target = self._prefix + path
        limit = self.timeout if timeout is None else timeout
        for attempt in (1, 2):
            if self._aborted:
                raise NovaConnectionError(f"{method} {path}: the client was aborted", code="aborted")
            conn, reused = self._connection()
            if conn.timeout != limit:
                conn.timeout = limit
                if conn.sock is not None:
                    conn.sock.settimeout(limit)
            if conn.sock is None:
                try:
                    conn.connect()
                except OSError as error:
                    self._drop(conn)
                    raise NovaConnectionError(
                        f"cannot connect to {self._host}:{self._port}: {error}"
                    ) from error
            sent = False
            try:
                conn.request(method, target, body=data, headers=headers)
                sent = True
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as error:
                self._drop(conn)
                timed_out = isinstance(error, TimeoutError)
                if attempt == 1 and reused and not timed_out and (retry_safe or not sent):
                    logger.debug("kept-alive connection dropped (%s); sending %s %s again", error, method, path)
                    continue
                what = "timed out" if timed_out else "failed"
                raise NovaConnectionError(
                    f"{method} {path} {what} ({type(error).__name__}: {error})",
                    code="timeout" if timed_out else "connection_failed",
                ) from error
            if response.will_close:
                self._drop(conn)
            status = response.status
            if 200 <= status < 300:
                if not raw:
                    return {}
                try:
                    return json.loads(raw)
                except ValueError as error:
                    raise NovaError(status, "bad_response", f"{method} {path}: the body is not JSON ({error})") from error
            raise error_from_response(status, raw, response.headers)
        raise AssertionError("unreachable")  # pragma: no cover
