"""Starts a real ``nova serve`` for the session (binary: $NOVA_BIN, default <repo>/.build/debug/nova)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent
REPO_ROOT = PACKAGE_ROOT.parent.parent
if str(PACKAGE_ROOT) not in sys.path:
    sys.path.insert(0, str(PACKAGE_ROOT))

from nova_client import Client  # noqa: E402

JOBS_FILE = """\
kinds:
  py.echo:
    type: external
  py.slow:
    type: external
  py.fail:
    type: external
  shout:
    type: external
"""

ROLES = ("admin", "operator", "worker", "viewer")


@dataclass
class NovaServer:
    url: str
    tokens: Dict[str, str]
    data_dir: Path
    binary: Path
    log: Path
    process: "subprocess.Popen[bytes]"

    def client(self, role: str = "admin", timeout: float = 30.0) -> Client:
        return Client(self.url, self.tokens[role], timeout=timeout)


def nova_binary() -> Path:
    # Absolute: the server is started from its data directory.
    return Path(os.environ.get("NOVA_BIN") or REPO_ROOT / ".build" / "debug" / "nova").absolute()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def nova(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NovaServer]:
    binary = nova_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"the nova binary is missing: {binary} (build it with `swift build`, or set NOVA_BIN to its path)",
            pytrace=False,
        )
    data_dir = tmp_path_factory.mktemp("nova-data")
    tokens: Dict[str, str] = {}
    for role in ROLES:
        created = subprocess.run(
            [str(binary), "tokens", "create", "--name", f"py-{role}", "--role", role, "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=60, cwd=data_dir,
        )
        token = created.stdout.strip().splitlines()[-1].strip() if created.stdout.strip() else ""
        if created.returncode != 0 or not token:
            pytest.fail(
                f"`nova tokens create --role {role}` failed (exit {created.returncode}): {created.stderr.strip()}",
                pytrace=False,
            )
        tokens[role] = token
    jobs_file = data_dir / "nova-jobs.yaml"
    jobs_file.write_text(JOBS_FILE)
    port = _free_port()
    log = data_dir / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(binary), "serve", "--data-dir", str(data_dir), "--port", str(port), "--host", "127.0.0.1",
             "--jobs", str(jobs_file), "--workers", "0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=data_dir,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"nova serve exited with {process.returncode}:\n{_log_tail(log)}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"nova serve did not answer /healthz within 30 s:\n{_log_tail(log)}", pytrace=False)
        time.sleep(0.1)
    server = NovaServer(url=url, tokens=tokens, data_dir=data_dir, binary=binary, log=log, process=process)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture(scope="session")
def admin(nova: NovaServer) -> Client:
    return nova.client("admin")


@pytest.fixture(scope="session")
def operator(nova: NovaServer) -> Client:
    return nova.client("operator")


@pytest.fixture(scope="session")
def viewer(nova: NovaServer) -> Client:
    return nova.client("viewer")


@pytest.fixture()
def worker_client(nova: NovaServer) -> Client:
    """A fresh worker-role client per test (its own connections)."""
    return nova.client("worker")


@pytest.fixture()
def queue_name() -> str:
    """A queue of the test's own, so that tests sharing the server do not see each other's jobs."""
    return f"t-{uuid.uuid4().hex[:12]}"
