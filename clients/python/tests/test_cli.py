"""``python3 -m nova_client`` as a subprocess against the real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from typing import Any, Dict, Optional

import pytest

from nova_client import ActiveJob, Client, Constraints, PermanentError, Resources, Worker

from conftest import PACKAGE_ROOT, NovaServer
from helpers import jobs_in, running


def cli(nova: Optional[NovaServer], *args: str, role: str = "admin", env: Optional[Dict[str, str]] = None,
        timeout: float = 30) -> "subprocess.CompletedProcess[str]":
    """Runs the CLI with NOVA_URL and NOVA_TOKEN set for ``nova`` (unless ``env`` says otherwise)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("NOVA_")}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    if nova is not None:
        environment["NOVA_URL"] = nova.url
        environment["NOVA_TOKEN"] = nova.tokens[role]
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nova_client", *args], capture_output=True, text=True, timeout=timeout, env=environment,
    )


def one_json_line(text: str) -> Dict[str, Any]:
    lines = text.splitlines()
    assert len(lines) == 1, text
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


def echo_worker(nova: NovaServer, queue: str) -> Worker:
    worker = Worker(nova.client("worker"), [queue], wait_seconds=1, grace_seconds=5)

    @worker.job("py.echo")
    def echo(job: ActiveJob) -> Dict[str, Any]:
        return {"echo": job.payload}

    @worker.job("py.fail")
    def fail(job: ActiveJob) -> None:
        raise PermanentError("no good")

    return worker


def test_run_prints_the_succeeded_job(nova: NovaServer, queue_name: str) -> None:
    with running(echo_worker(nova, queue_name)):
        done = cli(nova, "run", "py.echo", '{"text": "héllo"}', "--queue", queue_name, "--timeout", "20")
    assert done.returncode == 0, done.stderr
    job = one_json_line(done.stdout)
    assert job["state"] == "succeeded"
    assert job["kind"] == "py.echo" and job["queue"] == queue_name
    assert job["attempts"] == 1
    assert job["result"] == {"echo": {"text": "héllo"}}
    assert job["last_error"] is None
    assert uuid.UUID(job["id"])


def test_run_of_a_job_that_ends_dead_exits_1(nova: NovaServer, queue_name: str) -> None:
    with running(echo_worker(nova, queue_name)):
        done = cli(nova, "run", "py.fail", "--queue", queue_name, "--timeout", "20")
    assert done.returncode == 1, done.stderr
    job = one_json_line(done.stdout)
    assert job["state"] == "dead"
    assert "PermanentError: no good" in job["last_error"]


def test_run_times_out_with_exit_3(nova: NovaServer, admin: Client, queue_name: str) -> None:
    done = cli(nova, "run", "py.echo", "{}", "--queue", queue_name, "--timeout", "0.3")
    assert done.returncode == 3
    job = one_json_line(done.stdout)  # as last seen
    assert job["state"] == "available"
    assert "still available" in done.stderr
    assert [j.id for j in jobs_in(admin, queue_name)] == [job["id"]]


def test_bad_payload_is_refused_before_sending(nova: NovaServer, admin: Client, queue_name: str) -> None:
    done = cli(nova, "run", "py.echo", '{"text": "a",}', "--queue", queue_name)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "not valid JSON" in done.stderr and "position 13" in done.stderr
    done = cli(nova, "enqueue", "py.echo", "[1, 2]", "--queue", queue_name)
    assert done.returncode == 2
    assert "must be a JSON object, not an array" in done.stderr
    assert jobs_in(admin, queue_name) == []


def test_enqueue_get_and_wait(nova: NovaServer, admin: Client, queue_name: str) -> None:
    done = cli(nova, "enqueue", "py.echo", '{"n": 1}', "--queue", queue_name, "--priority", "7", "--key", "cli-1",
               "--max-attempts", "2")
    assert done.returncode == 0, done.stderr
    id = done.stdout.strip()
    job = admin.get(id)
    assert (job.queue, job.payload, job.priority, job.idempotency_key, job.max_attempts) == (
        queue_name, {"n": 1}, 7, "cli-1", 2)
    # The same key gives the same job.
    assert cli(nova, "enqueue", "py.echo", '{"n": 1}', "--queue", queue_name, "--key", "cli-1").stdout.strip() == id
    shown = cli(nova, "get", id, role="viewer")
    assert shown.returncode == 0, shown.stderr
    assert one_json_line(shown.stdout)["id"] == id
    # wait: a cancelled job ends it with exit 1.
    admin.cancel(id)
    waited = cli(nova, "wait", id, "--timeout", "5")
    assert waited.returncode == 1
    assert one_json_line(waited.stdout)["state"] == "cancelled"
    # Delayed: scheduled.
    delayed = cli(nova, "enqueue", "py.echo", "--queue", queue_name, "--delay", "3600")
    assert admin.get(delayed.stdout.strip()).state == "scheduled"


def test_enqueue_with_resources_and_constraints(nova: NovaServer, admin: Client, queue_name: str) -> None:
    done = cli(nova, "enqueue", "py.echo", "--queue", queue_name, "--gpus", "1", "--gpu-memory", "40G", "--cpus", "2",
               "--memory", "16G", "--constraint", "gpu_model=*H100*", "--constraint", "label.zone=b")
    assert done.returncode == 0, done.stderr
    id = done.stdout.strip()
    job = admin.get(id)
    assert job.resources == Resources(gpus=1, gpu_memory_mib=40960, cpus=2, memory_mib=16384)
    assert job.constraints == Constraints(gpu_model="*H100*", labels={"zone": "b"})
    shown = one_json_line(cli(nova, "get", id).stdout)
    assert shown["resources"] == {"gpus": 1, "gpu_memory_mib": 40960, "cpus": 2, "memory_mib": 16384}
    assert shown["constraints"] == {"gpu_model": "*H100*", "host": None, "labels": {"zone": "b"}}
    assert shown["placement"] is None
    # Out of the server's range: its 422 names the field.
    refused = cli(nova, "enqueue", "py.echo", "--queue", queue_name, "--gpus", "100000")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: 422 ") and "resources.gpus" in refused.stderr
    # Refused before sending: nothing else was submitted.
    bad = cli(nova, "enqueue", "py.echo", "--queue", queue_name, "--gpus", "1", "--constraint", "zone=b")
    assert bad.returncode == 2 and "unknown key 'zone'" in bad.stderr
    assert [j.id for j in jobs_in(admin, queue_name)] == [id]


def test_server_errors_are_reported_with_their_status(nova: NovaServer, queue_name: str) -> None:
    done = cli(nova, "run", "py.nope", "{}", "--queue", queue_name)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: 422 unknown_job_kind: unknown job kind 'py.nope'"
    done = cli(nova, "get", str(uuid.uuid4()))
    assert done.returncode == 2 and done.stderr.startswith("error: 404 not_found: ")
    done = cli(nova, "enqueue", "py.echo", role="viewer")
    assert done.returncode == 2 and done.stderr.startswith("error: 403 ")
    done = cli(nova, "get", str(uuid.uuid4()), env={"NOVA_TOKEN": "nova_bad_token"})
    assert done.returncode == 2 and done.stderr.startswith("error: 401 unauthorized: ")


def test_url_and_token_flags_and_unreachable_server(nova: NovaServer) -> None:
    # Flags win over the environment, before or after the subcommand.
    env = {"NOVA_URL": "http://127.0.0.1:9", "NOVA_TOKEN": "nova_bad_token"}
    done = cli(None, "--url", nova.url, "enqueue", "py.echo", "--token", nova.tokens["operator"], env=env)
    assert done.returncode == 0, done.stderr
    assert uuid.UUID(done.stdout.strip())
    done = cli(None, "get", str(uuid.uuid4()), "--url", f"http://127.0.0.1:{closed_port()}", "--token", "x")
    assert done.returncode == 1
    assert done.stderr.startswith("error: connection_failed: ")
    usage = cli(None, "run")
    assert usage.returncode == 2 and "usage:" in usage.stderr


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "--help"]])
def test_help_and_version(argv: list[str]) -> None:
    done = cli(None, *argv)
    assert done.returncode == 0
    assert "nova-client" in done.stdout
