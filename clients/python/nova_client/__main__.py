"""``python3 -m nova_client`` (or ``nova-client``): submit, wait for and read jobs from a shell.

    nova-client run KIND [PAYLOAD_JSON] [--queue Q] [--timeout S]    submit, wait, print the job
    nova-client enqueue KIND [PAYLOAD_JSON] [--queue Q] [--priority N] [--delay S] [--key K]
    nova-client get ID
    nova-client wait ID [--timeout S]

``run`` and ``enqueue`` also take what the job needs of its host, ``--gpus N``, ``--gpu-memory
SIZE`` (each GPU's), ``--cpus N``, ``--memory SIZE`` (sizes: ``40G``, ``512M``, ``1T`` or a number
of MiB), and where it may run, ``--constraint gpu_model=PATTERN``, ``host=PATTERN`` or
``label.NAME=VALUE`` (repeatable; patterns are globs such as ``*H100*``).

The server is ``--url`` (else ``$NOVA_URL``, else ``http://127.0.0.1:8080``) and the token
``--token`` (else ``$NOVA_TOKEN``). A job is printed as one line of JSON (the fields of
:class:`nova_client.Job`). Exit status: 0 done (``run``/``wait``: the job succeeded); 1 the job
ended ``dead`` or ``cancelled``, or the server failed (5xx) or could not be reached; 2 bad input
(arguments, a payload that is not a JSON object, a 4xx answer); 3 ``run``/``wait`` timed out (the
job as last seen is printed all the same).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional

from ._version import __version__
from .capacity import parse_mebibytes
from .client import Client
from .errors import NovaError, NovaTimeout
from .models import Job

__all__ = ["main", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:8080"

EXIT_OK = 0
EXIT_FAILED = 1  # the job ended dead or cancelled; a 5xx answer; no connection
EXIT_INPUT = 2  # bad arguments or payload; a 4xx answer
EXIT_TIMEOUT = 3  # run / wait gave up before the job ended


class _InputError(Exception):
    """Bad input found before anything was sent."""


def _parser() -> argparse.ArgumentParser:
    # The connection options are accepted before and after the subcommand: the subcommands' copies
    # default to SUPPRESS so that they do not overwrite a value given before it.
    def connection(parser: argparse.ArgumentParser, suppress: bool) -> None:
        default: Any = argparse.SUPPRESS if suppress else None
        parser.add_argument("--url", default=default, help=f"the server (default: $NOVA_URL, else {DEFAULT_URL})")
        parser.add_argument("--token", default=default, help="an API token (default: $NOVA_TOKEN)")

    parser = argparse.ArgumentParser(
        prog="nova-client", description="Submit, wait for and read Nova jobs.",
        epilog="exit status: 0 ok (run/wait: succeeded), 1 dead or cancelled (or a 5xx answer, no connection), "
               "2 bad input (or a 4xx answer), 3 timed out",
    )
    parser.add_argument("--version", action="version", version=f"nova-client {__version__}")
    connection(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def submission(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("kind", metavar="KIND", help="the job kind")
        sub.add_argument("payload", metavar="PAYLOAD_JSON", nargs="?", help="the payload, a JSON object (default {})")
        sub.add_argument("--queue", help="the queue (default: the server's, default)")
        sub.add_argument("--priority", type=int, help="higher runs first")
        sub.add_argument("--delay", type=float, metavar="SECONDS", help="run no earlier than this many seconds from now")
        sub.add_argument("--max-attempts", type=int, metavar="N", help="attempts before the job is dead")
        sub.add_argument("--key", metavar="KEY", help="idempotency key: an earlier job with it is returned instead")
        needs = sub.add_argument_group("resources and constraints (taken only by workers that declare capacity)")
        needs.add_argument("--gpus", metavar="N", help="GPUs, all on one host")
        needs.add_argument("--gpu-memory", metavar="SIZE", help="memory each GPU must have: 40G, 512M, or MiB")
        needs.add_argument("--cpus", metavar="N", help="CPUs")
        needs.add_argument("--memory", metavar="SIZE", help="memory: 16G, 512M, or MiB")
        needs.add_argument("--constraint", metavar="KEY=VALUE", action="append",
                           help="where it may run: gpu_model=PATTERN, host=PATTERN or label.NAME=VALUE "
                                "(globs: * and ?); repeatable")

    def waiting(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                         help="give up (exit 3) after this long; 0 waits forever (default 60)")

    run = commands.add_parser("run", help="submit a job, wait until it ends, print it (exit 0 if it succeeded)")
    submission(run)
    waiting(run)
    connection(run, suppress=True)
    enqueue = commands.add_parser("enqueue", help="submit a job and print its id")
    submission(enqueue)
    connection(enqueue, suppress=True)
    get = commands.add_parser("get", help="print a job")
    get.add_argument("id", metavar="ID")
    connection(get, suppress=True)
    wait = commands.add_parser("wait", help="wait until a job ends, print it (exit 0 if it succeeded)")
    wait.add_argument("id", metavar="ID")
    waiting(wait)
    connection(wait, suppress=True)
    return parser


_JSON_TYPES = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}


def _payload(text: Optional[str]) -> Optional[dict[str, Any]]:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise _InputError(
            f"PAYLOAD_JSON is not valid JSON: {error.msg} at position {error.pos} "
            f"(line {error.lineno}, column {error.colno})"
        ) from None
    if not isinstance(value, dict):
        raise _InputError(f"PAYLOAD_JSON must be a JSON object, not {_JSON_TYPES.get(type(value), 'a number')}")
    return value


_WHOLE = re.compile(r"[0-9]+")
_CONSTRAINT_KEYS = "gpu_model=PATTERN, host=PATTERN or label.NAME=VALUE"


def _count(text: str, flag: str) -> int:
    if not _WHOLE.fullmatch(text.strip()):
        raise _InputError(f"{flag} must be a whole number (0 or more), not {text!r}")
    return int(text)


def _size(text: str, flag: str) -> int:
    try:
        return parse_mebibytes(text, flag)
    except ValueError as error:
        raise _InputError(str(error)) from None


def _resources(args: argparse.Namespace) -> Optional[Dict[str, int]]:
    """The ``resources`` of ``--gpus``, ``--gpu-memory``, ``--cpus`` and ``--memory`` (None without them)."""
    resources: Dict[str, int] = {}
    if args.gpus is not None:
        resources["gpus"] = _count(args.gpus, "--gpus")
    if args.gpu_memory is not None:
        resources["gpu_memory_mib"] = _size(args.gpu_memory, "--gpu-memory")
        if not resources.get("gpus"):
            raise _InputError("--gpu-memory is the memory of each GPU: it needs --gpus 1 or more")
    if args.cpus is not None:
        resources["cpus"] = _count(args.cpus, "--cpus")
    if args.memory is not None:
        resources["memory_mib"] = _size(args.memory, "--memory")
    return resources or None


def _constraints(items: Optional[List[str]]) -> Optional[Dict[str, Any]]:
    """The ``constraints`` of the ``--constraint KEY=VALUE`` flags (None without them)."""
    constraints: Dict[str, Any] = {}
    labels: Dict[str, str] = {}
    for item in items or []:
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key or not value:
            raise _InputError(f"--constraint {item!r} is not KEY=VALUE ({_CONSTRAINT_KEYS})")
        if key in ("gpu_model", "host"):
            if key in constraints:
                raise _InputError(f"--constraint {key} is given twice")
            constraints[key] = value
        elif key.startswith("label.") and len(key) > len("label."):
            name = key[len("label."):]
            if name in labels:
                raise _InputError(f"--constraint label.{name} is given twice")
            labels[name] = value
        else:
            raise _InputError(f"--constraint {item!r}: unknown key {key!r}; expected {_CONSTRAINT_KEYS}")
    if labels:
        constraints["labels"] = labels
    return constraints or None


def _print_job(job: Job) -> None:
    print(json.dumps(dataclasses.asdict(job), separators=(",", ":")), flush=True)


def _wait(client: Client, id: str, timeout: float) -> int:
    """Waits for the job, prints it; the exit status for its state."""
    try:
        job = client.wait(id, timeout=timeout if timeout > 0 else float("inf"))
    except NovaTimeout as error:
        last: Optional[Job] = getattr(error, "job", None)
        if last is not None:
            _print_job(last)
        print(f"error: {error.message}", file=sys.stderr)
        return EXIT_TIMEOUT
    _print_job(job)
    return EXIT_OK if job.state == "succeeded" else EXIT_FAILED


def _submit(client: Client, args: argparse.Namespace) -> Job:
    payload = _payload(args.payload)
    resources = _resources(args)
    constraints = _constraints(args.constraint)
    return client.enqueue(
        args.kind, payload, queue=args.queue, priority=args.priority, delay_seconds=args.delay,
        max_attempts=args.max_attempts, idempotency_key=args.key, resources=resources, constraints=constraints,
    )


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    url = args.url or os.environ.get("NOVA_URL") or DEFAULT_URL
    token = args.token if args.token is not None else os.environ.get("NOVA_TOKEN", "")
    submitted: Optional[str] = None
    try:
        if getattr(args, "timeout", 0) < 0:
            raise _InputError("--timeout must not be negative (0 waits for ever)")
        try:
            client = Client(url, token)
        except ValueError as error:  # an unusable URL
            raise _InputError(str(error)) from None
        if args.command == "run":
            job = _submit(client, args)
            submitted = job.id
            return _wait(client, job.id, args.timeout)
        if args.command == "enqueue":
            print(_submit(client, args).id, flush=True)
            return EXIT_OK
        if args.command == "get":
            _print_job(client.get(args.id))
            return EXIT_OK
        return _wait(client, args.id, args.timeout)
    except _InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except NovaError as error:
        note = f" (job {submitted} was submitted)" if submitted else ""
        print(f"error: {error}{note}", file=sys.stderr)
        return EXIT_INPUT if 400 <= error.status < 500 else EXIT_FAILED
    except KeyboardInterrupt:
        note = f" (job {submitted} goes on)" if submitted else ""
        print(f"error: interrupted{note}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
