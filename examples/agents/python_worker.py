"""A Python worker for the `shout` kind: {"text": "hi"} -> {"text": "HI", "worker": <pid>}.

`shout` is declared `type: external` in examples/nova-jobs.yaml: Nova stores and schedules its jobs
but runs none itself; it hands them to whichever worker claims them over HTTP. This is one.

    swift run nova serve --jobs examples/nova-jobs.yaml           # the server
    swift run nova tokens create --name shouter --role worker       # prints a token that may claim
    NOVA_TOKEN=nova_… python3 examples/agents/python_worker.py    # this worker
    NOVA_TOKEN=nova_… python3 -m nova_client run shout '{"text": "hello"}'   # a job (operator token)

It needs the nova_client package: `pip install ./clients/python`, or PYTHONPATH=clients/python.
Settings come from the environment: NOVA_URL (default http://127.0.0.1:8080), NOVA_TOKEN,
NOVA_QUEUES (comma-separated, default "default").
"""

import logging
import os
import sys

try:
    from nova_client import ActiveJob, Client, PermanentError, Worker
except ImportError:
    sys.exit("nova_client is not installed: pip install ./clients/python, or set PYTHONPATH=clients/python")

# The worker logs through `logging` only; this sends its records (and ours) to stderr.
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")

client = Client(os.environ.get("NOVA_URL", "http://127.0.0.1:8080"), os.environ.get("NOVA_TOKEN", ""))
queues = [name.strip() for name in os.environ.get("NOVA_QUEUES", "default").split(",") if name.strip()]
# A worker claims jobs in batches and runs them on a few threads; a lease (kept alive by heartbeats)
# says it is still on a job. If this process dies, the lease runs out and another worker gets it.
worker = Worker(client, queues, concurrency=4)


@worker.job("shout")
def shout(job: ActiveJob) -> dict[str, object] | None:
    text = job.payload.get("text")
    if not isinstance(text, str):
        # Retrying cannot fix a bad payload: PermanentError makes the job dead at once, with this
        # message as its last_error, instead of spending its remaining attempts.
        raise PermanentError('the payload needs a string "text"')
    job.logger.info("job %s (attempt %d): shouting %d characters", job.id, job.attempt, len(text))
    lines = []
    for line in text.split("\n"):
        # An operator may cancel a running job; the server says so through the heartbeats. A long
        # job should look now and then and give up: what it would return is dropped anyway.
        if job.cancel_requested:
            job.logger.info("job %s was cancelled", job.id)
            return None
        lines.append(line.upper())
    # The result is stored with the job (any JSON value); the pid shows which worker ran it.
    return {"text": "\n".join(lines), "worker": os.getpid()}


if __name__ == "__main__":
    # Blocks until SIGTERM or Ctrl-C, then stops gracefully: no new claims, unstarted jobs handed
    # back at once, running ones given a grace period to finish and report.
    worker.run()
