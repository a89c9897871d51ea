"""examples/agents/python_worker.py, run as the README says, against the real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from nova_client import Client

from conftest import PACKAGE_ROOT, REPO_ROOT, NovaServer

EXAMPLE = REPO_ROOT / "examples" / "agents" / "python_worker.py"


def test_python_worker_example_shouts(nova: NovaServer, operator: Client, queue_name: str) -> None:
    assert EXAMPLE.is_file(), EXAMPLE
    env = {key: value for key, value in os.environ.items() if not key.startswith("NOVA_")}
    env.update(
        PYTHONPATH=str(PACKAGE_ROOT.relative_to(REPO_ROOT)),  # PYTHONPATH=clients/python, from the repository root
        NOVA_URL=nova.url, NOVA_TOKEN=nova.tokens["worker"], NOVA_QUEUES=queue_name,
    )
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE.relative_to(REPO_ROOT))], cwd=REPO_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        text = "hello, wörld\nsecond line"
        good = operator.enqueue("shout", {"text": text}, queue=queue_name)
        no_text = operator.enqueue("shout", {"words": "hi"}, queue=queue_name)
        not_a_string = operator.enqueue("shout", {"text": 42}, queue=queue_name, max_attempts=5)

        done = operator.wait(good.id, timeout=30, poll=0.05)
        assert done.state == "succeeded", done
        assert done.result == {"text": "HELLO, WÖRLD\nSECOND LINE", "worker": process.pid}
        assert done.attempts == 1
        for bad in (no_text, not_a_string):
            dead = operator.wait(bad.id, timeout=30, poll=0.05)
            assert dead.state == "dead", dead
            assert dead.attempts == 1  # at once, no retry
            assert dead.last_error is not None and "PermanentError" in dead.last_error
            assert '"text"' in dead.last_error
    finally:
        process.send_signal(signal.SIGTERM)  # the graceful stop
        try:
            out, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    assert process.returncode == 0, err
    assert out == ""
    assert f"job {good.id} (attempt 1): shouting {len(text)} characters" in err  # logged to stderr
    assert "stopped" in err
