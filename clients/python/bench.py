#!/usr/bin/env python3
"""Throughput of Python workers against a Nova server: no-op jobs, N worker processes.

    python3 clients/python/bench.py --jobs 20000 --processes 2 --runs 3 [--json]   # starts its own nova serve
    python3 clients/python/bench.py --enqueue-batch 1 ...        # one POST /v1/jobs per job, 8 threads (the old figure)
    python3 clients/python/bench.py --url http://127.0.0.1:8080 --token TOKEN --jobs 20000 --processes 2 [--json]

Each run measures two figures, each on a fresh queue:

* end to end: the worker processes are started and long-polling first; the clock starts at the
  first enqueue and stops when the last completion was recorded. The producer submits the jobs
  with ``Client.enqueue_many``, ``--enqueue-batch`` (default 500) per ``POST /v1/jobs/batch``,
  from ``--enqueue-threads`` threads (default 2); with ``--enqueue-batch 1`` it submits one job
  per ``POST /v1/jobs`` from 8 threads instead (the figure before batches);
* drain only: the N jobs are enqueued first, the same way (the enqueue rate is reported), then the
  clock starts as the (already started, idle) worker processes are told to go, and stops at the
  last completion.

The end is seen through the workers' recorded-completion counters, then checked against the
server (``GET /v1/queues/stats``: the queue's ``succeeded`` count must be N, with no dead job).
Workers are stopped with SIGTERM (their graceful stop). ``--serve`` (the default without
``--url``) runs ``nova serve`` on SQLite in a temporary data directory with ``--workers 0``, a jobs
file declaring ``py.noop: {type: external}`` and an admin token.

Medians of 3 runs on the 2-core development machine (release server at 96f8360, SQLite, Python
3.11, 20,000 jobs, 2 worker processes; ``--nova-bin /tmp/bench-wt/.build/release/nova --jobs
20000 --processes 2 --runs 3 --json`` plus the options shown; more in clients/python/README.md):

    enqueue                                 end to end     drain only     enqueue rate
    --enqueue-threads 2 (the default now)   8,808 jobs/s   12,028 jobs/s  38,592 jobs/s
    --enqueue-threads 1                     8,718 jobs/s    9,978 jobs/s  21,092 jobs/s
    --enqueue-batch 1 (8 threads, before)   1,134 jobs/s    9,518 jobs/s   1,768 jobs/s
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from nova_client import Client, NovaError, Worker  # noqa: E402

REPO_ROOT = HERE.parent.parent


# -- The server -------------------------------------------------------------------------------------


def default_binary() -> Path:
    if os.environ.get("NOVA_BIN"):
        return Path(os.environ["NOVA_BIN"])
    release = REPO_ROOT / ".build" / "release" / "nova"
    return release if release.exists() else REPO_ROOT / ".build" / "debug" / "nova"


class Server:
    """``nova serve`` on SQLite in a temporary data directory, with an admin token."""

    def __init__(self, binary: Path, kind: str, keep: bool = False) -> None:
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise SystemExit(f"bench: no nova binary at {binary} (build it, or pass --nova-bin / set NOVA_BIN)")
        binary = binary.absolute()  # it is run from the data directory
        self.binary = binary
        self.keep = keep
        self.data_dir = Path(tempfile.mkdtemp(prefix="nova-bench-"))
        created = subprocess.run(
            [str(binary), "tokens", "create", "--name", "bench", "--role", "admin", "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, timeout=120, cwd=self.data_dir,
        )
        if created.returncode != 0 or not created.stdout.strip():
            raise SystemExit(f"bench: `nova tokens create` failed: {created.stderr.strip()}")
        self.token = created.stdout.strip().splitlines()[-1].strip()
        jobs_file = self.data_dir / "nova-jobs.yaml"
        jobs_file.write_text(f"kinds:\n  {kind}:\n    type: external\n")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = self.data_dir / "serve.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "0", "--jobs", str(jobs_file)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.data_dir,
        )
        client = Client(self.url, self.token, timeout=2)
        deadline = time.monotonic() + 30
        while not client.health():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"bench: nova serve did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# -- Worker processes -------------------------------------------------------------------------------


def worker_process(
    url: str, token: str, queue: str, kind: str, options: Dict[str, Any],
    ready: Any, go: Any, counter: Any,
) -> None:
    """One worker process: no-op handler; waits for ``go``; runs until SIGTERM."""
    worker = Worker(
        Client(url, token), [queue],
        concurrency=options["concurrency"], batch=options["batch"], prefetch=options["prefetch"],
        lease_seconds=60, wait_seconds=5, grace_seconds=5,
    )
    worker.register(kind, lambda job: None)
    stop_reporting = threading.Event()

    def report() -> None:
        # Publishes the recorded completions for the parent (cheaper than asking the server).
        while not stop_reporting.wait(0.002):
            counter.value = worker.stats.succeeded
        counter.value = worker.stats.succeeded

    ready.release()
    go.wait()
    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    worker.run()
    stop_reporting.set()
    reporter.join(1)


class WorkerPool:
    """``processes`` worker processes, started idle; ``go()`` lets them claim."""

    def __init__(self, processes: int, url: str, token: str, queue: str, kind: str, options: Dict[str, Any]) -> None:
        methods = multiprocessing.get_all_start_methods()
        context: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.go_event = context.Event()
        ready = context.Semaphore(0)
        self.counters = [context.Value("q", 0, lock=False) for _ in range(processes)]
        self.processes = [
            context.Process(
                target=worker_process, args=(url, token, queue, kind, options, ready, self.go_event, counter),
                name=f"bench-worker-{number}", daemon=True,
            )
            for number, counter in enumerate(self.counters)
        ]
        for process in self.processes:
            process.start()
        for _ in self.processes:
            if not ready.acquire(timeout=60):
                self.stop()
                raise SystemExit("bench: a worker process did not start")

    def go(self) -> None:
        self.go_event.set()

    def completed(self) -> int:
        return sum(int(counter.value) for counter in self.counters)

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                os.kill(process.pid or 0, signal.SIGTERM)
        for process in self.processes:
            process.join(20)
            if process.is_alive():
                process.kill()
                process.join(5)


# -- One run ----------------------------------------------------------------------------------------


def enqueue_all(client: Client, kind: str, queue: str, jobs: int, threads: int, batch: int) -> float:
    """Submits ``jobs`` no-op jobs from ``threads`` threads, ``batch`` per ``POST /v1/jobs/batch``
    (``enqueue_many``), or one per ``POST /v1/jobs`` when ``batch`` is 1; returns the seconds it took."""
    started = time.perf_counter()
    per_thread = [jobs // threads + (1 if n < jobs % threads else 0) for n in range(threads)]

    def submit(count: int) -> None:
        if batch > 1:
            # One call per batch (not one call for all), as a producer streaming jobs would: the
            # first batch is on the server (and claimable) before the next is built.
            while count > 0:
                size = min(batch, count)
                client.enqueue_many([{"kind": kind, "payload": {}}] * size, queue=queue)
                count -= size
            return
        for _ in range(count):
            client.enqueue(kind, {}, queue=queue)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(submit, count) for count in per_thread if count]:
            future.result()
    return time.perf_counter() - started


def wait_done(pool: WorkerPool, client: Client, queue: str, jobs: int, timeout: float) -> Tuple[float, Dict[str, int]]:
    """Waits until the workers recorded ``jobs`` completions; returns that time (perf_counter) and
    the queue's counts from the server once they show every job succeeded."""
    deadline = time.monotonic() + timeout
    while pool.completed() < jobs:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: only {pool.completed()} of {jobs} jobs completed in {timeout:g} s")
        time.sleep(0.001)
    finished = time.perf_counter()
    counts: Dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = client.queue_stats().get("queues", {}).get(queue, {})
        if counts.get("succeeded", 0) >= jobs:
            break
        time.sleep(0.05)
    return finished, counts


def check_counts(counts: Dict[str, int], jobs: int) -> None:
    if counts.get("succeeded", 0) != jobs or counts.get("dead", 0) or counts.get("failed", 0):
        raise SystemExit(f"bench: the server does not show {jobs} succeeded jobs: {counts}")


def one_run(args: argparse.Namespace, url: str, token: str, number: int) -> Dict[str, Any]:
    client = Client(url, token, timeout=60)
    options = {"concurrency": args.concurrency, "batch": args.batch, "prefetch": args.prefetch}
    tag = uuid.uuid4().hex[:8]

    # End to end: workers idle and long-polling, then enqueue and run together.
    queue = f"bench-e2e-{number}-{tag}"
    pool = WorkerPool(args.processes, url, token, queue, args.kind, options)
    try:
        pool.go()
        time.sleep(0.2)  # let every worker reach its long poll
        started = time.perf_counter()
        enqueue_seconds = enqueue_all(client, args.kind, queue, args.jobs, args.enqueue_threads, args.enqueue_batch)
        finished, counts = wait_done(pool, client, queue, args.jobs, args.timeout)
    finally:
        pool.stop()
    check_counts(counts, args.jobs)
    e2e_seconds = finished - started

    # Drain only: enqueue first, then start the clock as the workers go.
    queue = f"bench-drain-{number}-{tag}"
    prefill_seconds = enqueue_all(client, args.kind, queue, args.jobs, args.enqueue_threads, args.enqueue_batch)
    pool = WorkerPool(args.processes, url, token, queue, args.kind, options)
    try:
        started = time.perf_counter()
        pool.go()
        finished, counts = wait_done(pool, client, queue, args.jobs, args.timeout)
    finally:
        pool.stop()
    check_counts(counts, args.jobs)
    drain_seconds = finished - started
    return {
        "end_to_end_seconds": round(e2e_seconds, 4),
        "end_to_end_jobs_per_second": round(args.jobs / e2e_seconds, 1),
        "enqueue_seconds_during_end_to_end": round(enqueue_seconds, 4),
        "enqueue_jobs_per_second": round(args.jobs / prefill_seconds, 1),
        "drain_seconds": round(drain_seconds, 4),
        "drain_jobs_per_second": round(args.jobs / drain_seconds, 1),
    }


# -- Main -------------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (default: start one, as --serve)")
    parser.add_argument("--token", default=os.environ.get("NOVA_TOKEN"), help="token with worker and submit rights (admin)")
    parser.add_argument("--serve", action="store_true", help="start a nova serve of its own (the default without --url)")
    parser.add_argument("--nova-bin", type=Path, default=None, help="nova binary for --serve (default: $NOVA_BIN, else .build/release, else .build/debug)")
    parser.add_argument("--kind", default="py.noop", help="the external job kind to run (default py.noop)")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="handler threads per worker process")
    parser.add_argument("--batch", type=int, default=256, help="jobs per claim and per completion call")
    parser.add_argument("--prefetch", type=int, default=508, help="jobs claimed ahead of free handler threads")
    parser.add_argument("--enqueue-batch", type=int, default=500,
                        help="jobs per POST /v1/jobs/batch (enqueue_many); 1: one POST /v1/jobs per job (default 500)")
    parser.add_argument("--enqueue-threads", type=int, default=None,
                        help="submitting threads (default: 2 with batches, 8 with --enqueue-batch 1)")
    parser.add_argument("--timeout", type=float, default=600, help="give up on a run after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the --serve data directory")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.processes < 1 or args.runs < 1:
        parser.error("--jobs, --processes and --runs must be positive")
    if not 1 <= args.enqueue_batch <= 1000:
        parser.error("--enqueue-batch must be in 1...1000")
    if args.enqueue_threads is None:
        args.enqueue_threads = 2 if args.enqueue_batch > 1 else 8
    if args.enqueue_threads < 1:
        parser.error("--enqueue-threads must be positive")

    server: Optional[Server] = None
    if args.url and not args.serve:
        if not args.token:
            parser.error("--url needs --token (or NOVA_TOKEN)")
        url, token = args.url, args.token
        binary = None
    else:
        binary = args.nova_bin or default_binary()
        server = Server(binary, args.kind, keep=args.keep)
        url, token = server.url, server.token
    try:
        runs: List[Dict[str, Any]] = []
        for number in range(1, args.runs + 1):
            run = one_run(args, url, token, number)
            runs.append(run)
            print(
                f"run {number}: end to end {run['end_to_end_jobs_per_second']:,.0f} jobs/s "
                f"({run['end_to_end_seconds']:.2f} s); drain only {run['drain_jobs_per_second']:,.0f} jobs/s "
                f"({run['drain_seconds']:.2f} s); enqueue {run['enqueue_jobs_per_second']:,.0f} jobs/s",
                file=sys.stderr if args.json else sys.stdout, flush=True,
            )
    except NovaError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()

    median = statistics.median(run["end_to_end_jobs_per_second"] for run in runs)
    median_drain = statistics.median(run["drain_jobs_per_second"] for run in runs)
    median_enqueue = statistics.median(run["enqueue_jobs_per_second"] for run in runs)
    summary = {
        "jobs": args.jobs,
        "processes": args.processes,
        "runs": runs,
        "median_jobs_per_second": round(median, 1),
        "median_drain_jobs_per_second": round(median_drain, 1),
        "median_enqueue_jobs_per_second": round(median_enqueue, 1),
        "worker": {"concurrency": args.concurrency, "batch": args.batch, "prefetch": args.prefetch},
        "enqueue_threads": args.enqueue_threads,
        "enqueue_batch": args.enqueue_batch,
        "server": "own (--serve, SQLite)" if server else url,
        "nova_bin": str(server.binary) if server else None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    out = sys.stderr if args.json else sys.stdout
    enqueue_how = "one job per call" if args.enqueue_batch == 1 else f"{args.enqueue_batch} jobs per call"
    print(
        f"{args.jobs} no-op jobs, {args.processes} worker processes, {args.runs} run(s), "
        f"{os.cpu_count()} CPUs{f', {server.binary}' if server else ''}:\n"
        f"  end to end (enqueue + run): median {median:,.0f} jobs/s\n"
        f"  drain only (pre-enqueued):  median {median_drain:,.0f} jobs/s\n"
        f"  enqueue ({args.enqueue_threads} thread(s), {enqueue_how}): median {median_enqueue:,.0f} jobs/s",
        file=out,
    )
    if args.json:
        print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
