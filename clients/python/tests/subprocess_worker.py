"""A worker run as a subprocess by the tests: its py.slow handler writes a marker file, sleeps,
then returns. Killed with SIGKILL mid-job, or stopped with SIGTERM (a graceful stop).

Usage: python subprocess_worker.py URL TOKEN QUEUE MARKER_PATH SLEEP_SECONDS [GRACE_SECONDS]
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nova_client import ActiveJob, Client, Worker  # noqa: E402


def main() -> None:
    url, token, queue, marker, sleep_seconds = sys.argv[1:6]
    grace = float(sys.argv[6]) if len(sys.argv) > 6 else 10.0
    logging.basicConfig(level=logging.INFO, format="subprocess-worker %(levelname)s %(message)s")
    worker = Worker(
        Client(url, token), [queue], name="subprocess-worker", concurrency=1, lease_seconds=2, wait_seconds=1,
        grace_seconds=grace,
    )

    @worker.job("py.slow")
    def slow(job: ActiveJob) -> dict[str, object]:
        Path(marker).write_text(f"{job.id} {job.attempt}\n")
        time.sleep(float(sleep_seconds))
        return {"finished_by": "subprocess-worker"}

    worker.run()
    print(f"stopped: {worker.stats}", flush=True)


if __name__ == "__main__":
    main()
