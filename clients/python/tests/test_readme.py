"""The README's quickstart "Your own work, three ways", run as pasted: a program, an HTTP agent
and a Python worker each run a job of the example kinds. The only changes: `swift run -q nova`
is the binary under test (a `swift run` here would rebuild Nova without coverage) and the
`swift build` before it is skipped, as the binary is built."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

from conftest import REPO_ROOT, nova_binary


def quickstart_block() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.index("### Your own work, three ways")
    start = readme.index("```sh\n", section) + len("```sh\n")
    end = readme.index("```", start)
    return readme[start:end]


def test_the_three_ways_run_as_pasted() -> None:
    binary = nova_binary()
    assert binary.exists(), f"{binary} is missing: build Nova first (swift build)"
    script = quickstart_block()
    assert "swift run -q nova serve" in script and "nova-client run shout" in script
    script = script.replace("swift build -q --product nova", "true").replace("swift run -q nova", str(binary))
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "out"
        with open(log, "wb") as output:
            # Its own session: whatever the block left running is stopped with it.
            shell = subprocess.Popen(
                ["bash", "-e", "-o", "pipefail", "-c", script], cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT,
                env={**os.environ, "LLVM_PROFILE_FILE": str(Path(folder) / "nova-%p.profraw")}, start_new_session=True)
            try:
                code = shell.wait(timeout=240)
            finally:
                try:
                    os.killpg(shell.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        text = log.read_text(encoding="utf-8", errors="replace")
    assert code == 0, text
    finished = [line for line in text.splitlines() if line.startswith("{") and '"kind"' in line]
    kinds = {re.search(r'"kind": ?"([^"]+)"', line).group(1): line for line in finished}  # type: ignore[union-attr]
    assert set(kinds) == {"summarise", "ask", "shout"}, text
    for kind, line in kinds.items():
        assert re.search(r'"state": ?"succeeded"', line), f"{kind}: {line}"
    assert "NOVA RUNS" not in kinds["summarise"] and "Nova runs the agents" in kinds["summarise"]
    assert "which GPU is free?" in kinds["ask"]
    assert "HELLO FROM A WORKER" in kinds["shout"]
