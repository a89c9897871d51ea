"""Tests that need no Nova server: models, error mapping, and the keep-alive reconnect rules
(against a scripted local HTTP server)."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Dict, List, Tuple

import pytest

from nova_client import (
    BadRequest,
    ClaimedJob,
    Client,
    Conflict,
    Forbidden,
    Job,
    LeaseLost,
    NotFound,
    NovaConnectionError,
    NovaError,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    Unprocessable,
    Worker,
    parse_time,
)
from nova_client.errors import error_from_response

JOB: Dict[str, Any] = {
    "id": "01a22fed-f94f-7049-8952-a775da62fa81",
    "queue": "default",
    "kind": "py.echo",
    "state": "available",
    "payload": {"a": 1},
    "priority": 0,
    "attempts": 0,
    "max_attempts": 5,
    "run_at": "2026-12-01T04:47:34.734Z",
    "created_at": "2026-12-01T04:47:34.734Z",
    "updated_at": "2026-12-01T04:47:34.734Z",
}


def test_job_from_json_ignores_unknown_keys() -> None:
    job = Job.from_json({**JOB, "brand_new_field": {"x": 1}, "another": 3})
    assert job.id == JOB["id"]
    assert job.payload == {"a": 1}
    assert job.idempotency_key is None and job.result is None and job.started_at is None
    assert job.run_at_dt is not None and job.run_at_dt.year == 2026 and job.run_at_dt.utcoffset() is not None
    assert not job.terminal
    assert Job.from_json({**JOB, "state": "dead"}).terminal


def test_claimed_job_reads_its_lease() -> None:
    claimed = ClaimedJob.from_json(
        {**JOB, "state": "running", "attempts": 1, "lease": {"token": "123", "expires_at": "2026-12-01T05:00:00.000Z"}}
    )
    assert claimed.lease == "123"
    assert claimed.lease_expires_at == "2026-12-01T05:00:00.000Z"
    assert claimed.attempts == 1
    assert type(claimed.as_job()) is Job


def test_parse_time() -> None:
    parsed = parse_time("2026-12-01T05:00:00.250Z")
    assert parsed is not None
    assert parsed.microsecond == 250000 and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert parse_time(None) is None


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "malformed_input", BadRequest),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", Forbidden),
        (404, "not_found", NotFound),
        (409, "invalid_state", Conflict),
        (409, "lease_lost", LeaseLost),
        (413, "payload_too_large", PayloadTooLarge),
        (422, "unknown_job_kind", Unprocessable),
        (429, "rate_limited", RateLimited),
        (500, "internal", ServerError),
        (503, "unavailable", Unavailable),
        (418, "teapot", NovaError),
    ],
)
def test_error_mapping(status: int, code: str, kind: type) -> None:
    body = json.dumps({"error": {"code": code, "message": "it went wrong"}}).encode()
    error = error_from_response(status, body, {"Retry-After": "2"})
    assert type(error) is kind
    assert error.status == status and error.code == code and error.message == "it went wrong"
    assert str(error) == f"{status} {code}: it went wrong"
    if isinstance(error, (RateLimited, Unavailable)):
        assert error.retry_after == 2.0


def test_error_without_a_json_body() -> None:
    error = error_from_response(502, b"<html>bad gateway</html>", {})
    assert isinstance(error, ServerError)
    assert error.code == "http_502"
    assert "bad gateway" in error.message


def test_client_url_and_payload_checks() -> None:
    with pytest.raises(ValueError):
        Client("ftp://example.org", "t")
    client = Client("127.0.0.1:9", "t")
    assert client.url == "127.0.0.1:9"
    with pytest.raises(TypeError):
        client.enqueue("k", ["not", "an", "object"])  # type: ignore[arg-type]


def test_worker_registration() -> None:
    worker = Worker(Client("http://127.0.0.1:9", "t"), "q1")
    assert worker.queues == ["q1"]

    @worker.job("py.a")
    def a(job: object) -> None:
        return None

    worker.register("py.b*", lambda job: None)
    assert worker.kinds == ["py.a", "py.b*"]
    assert worker.handler_for("py.a") is a
    assert worker.handler_for("py.bee") is not None
    assert worker.handler_for("py.c") is None
    with pytest.raises(ValueError):
        Worker(Client("http://127.0.0.1:9", "t"), batch=0)
    with pytest.raises(ValueError):
        Worker(Client("http://127.0.0.1:9", "t")).run()


# -- Keep-alive reconnects against a scripted server -----------------------------------------------


class ScriptedServer:
    """A tiny HTTP/1.1 server. Each connection follows the next script: a list of actions per
    request, "ok" (answer 200 and keep the connection), "drop" (read the request, close without
    answering). Past its script a connection is closed."""

    def __init__(self, scripts: List[List[str]]) -> None:
        self.scripts = scripts
        self.requests: List[Tuple[str, str]] = []
        self.headers: List[Dict[str, str]] = []
        self.connections = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            script = self.scripts[self.connections] if self.connections < len(self.scripts) else []
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn, script), daemon=True).start()

    def handle(self, conn: socket.socket, script: List[str]) -> None:
        buffer = b""
        with conn:
            for action in script:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: Dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                request_body, buffer = buffer[:length], buffer[length:]
                self.requests.append((method, path))
                self.headers.append(headers)
                if action == "drop":
                    return
                if path == "/v1/jobs/batch":
                    count = len(json.loads(request_body)["jobs"])
                    body = json.dumps({"jobs": [{"id": JOB["id"], "state": "available", "created": True}] * count}).encode()
                else:
                    body = json.dumps({**JOB, "path": path}).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            # Script over: close (like an idle timeout).
            time.sleep(0.05)

    def close(self) -> None:
        self.listener.close()


def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    server = ScriptedServer([["ok"], ["ok"]])
    try:
        client = Client(f"http://127.0.0.1:{server.port}", "t")
        client.get(JOB["id"])
        time.sleep(0.2)  # the server has closed the kept-alive connection meanwhile
        # Even a non-idempotent submission goes through: the drop is seen before sending.
        client.enqueue("py.echo", {})
        assert [m for m, _ in server.requests] == ["GET", "POST"]
        assert server.connections == 2
    finally:
        server.close()


def test_dropped_request_is_resent_only_when_safe() -> None:
    # Connection 1 answers one request, then drops the next without answering.
    server = ScriptedServer([["ok", "drop"], ["ok", "drop"], ["ok", "drop"], ["ok"]])
    try:
        client = Client(f"http://127.0.0.1:{server.port}", "t")
        client.get(JOB["id"])
        # A read is resent once on a new connection.
        client.get(JOB["id"])
        assert [m for m, _ in server.requests] == ["GET", "GET", "GET"]
        assert server.connections == 2
        # Connection 2 drops the next request: a submission without a key is not resent.
        with pytest.raises(NovaConnectionError):
            client.enqueue("py.echo", {})
        assert [m for m, _ in server.requests] == ["GET", "GET", "GET", "POST"]
        # Connection 3: answers, then drops; a submission with a key is resent (connection 4).
        client.get(JOB["id"])
        client.enqueue("py.echo", {}, idempotency_key="k")
        assert [m for m, _ in server.requests][-2:] == ["POST", "POST"]
        assert server.connections == 4
    finally:
        server.close()


def test_dropped_batch_is_resent_only_when_every_job_has_a_key() -> None:
    server = ScriptedServer([["ok", "drop"], ["ok", "drop"], ["ok"]])
    try:
        client = Client(f"http://127.0.0.1:{server.port}", "t")
        client.get(JOB["id"])
        # One job without a key: the dropped batch is not sent again.
        with pytest.raises(NovaConnectionError) as raised:
            client.enqueue_many([{"kind": "py.echo", "idempotency_key": "a"}, {"kind": "py.echo"}])
        assert raised.value.submitted == []  # type: ignore[attr-defined]
        assert [m for m, _ in server.requests] == ["GET", "POST"]
        # Every job keyed: sent again on a new connection.
        client.get(JOB["id"])
        submitted = client.enqueue_many([{"kind": "py.echo", "idempotency_key": k} for k in "ab"])
        assert len(submitted) == 2
        assert server.requests[-2:] == [("POST", "/v1/jobs/batch"), ("POST", "/v1/jobs/batch")]
        assert server.connections == 3
    finally:
        server.close()


def test_empty_token_sends_no_authorization_header() -> None:
    server = ScriptedServer([["ok"], ["ok"]])
    try:
        Client(f"http://127.0.0.1:{server.port}", "").get(JOB["id"])
        assert "authorization" not in server.headers[-1]
        Client(f"http://127.0.0.1:{server.port}", "tok").get(JOB["id"])
        assert server.headers[-1]["authorization"] == "Bearer tok"
    finally:
        server.close()


def test_close_breaks_a_blocked_call_in_another_thread() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = int(listener.getsockname()[1])
    accepted: List[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    client = Client(f"http://127.0.0.1:{port}", "t", timeout=30)
    errors: List[BaseException] = []

    def call() -> None:
        try:
            client.claim("w", ["default"], wait_seconds=20)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=call)
    started = time.monotonic()
    thread.start()
    time.sleep(0.3)
    client.close()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 3
    assert errors and isinstance(errors[0], NovaConnectionError)
    listener.close()
    for conn in accepted:
        conn.close()


def test_timeout_is_a_connection_error_and_not_resent() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = int(listener.getsockname()[1])
    client = Client(f"http://127.0.0.1:{port}", "t", timeout=0.3)
    with pytest.raises(NovaConnectionError) as raised:
        client.get(JOB["id"])
    assert raised.value.code == "timeout"
    listener.close()

