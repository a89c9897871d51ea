#!/usr/bin/env python3
"""Open Policy Agent's REST Data API over the real Go OPA engine, for Nova's tests.

No `opa` binary installs on the build machines, but the Go engine does, inside the PyPI package
`opa-golib-python-bindings` (scripts/install-opa-engine.sh). This serves it with the request
and response shapes of OPA's REST API that Nova uses:

  GET  /health                      200 {} once the policies compiled
  POST /v1/data/<path>[?provenance] {"input": ...} -> {"result": ...} | {} (undefined)
                                     provenance adds {"provenance": {"version", "revision"}}
                                     400 {"code": "invalid_parameter"} for a malformed body,
                                     500 {"code": "internal_error", "errors": [...]} for an
                                     evaluation error (conflicting outputs and the like)

Usage: opa_fixture.py PORT POLICY_DIR [--delay-ms N]
Every *.rego file under POLICY_DIR is loaded (Rego v1); the revision is a hash of their text.
SIGHUP reloads them. --delay-ms delays every data answer (for timeout and breaker tests).
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from opa_bindings import OpaEngine
from opa_bindings.engine import OpaError

ENGINE_VERSION = "1.20.2"


class Policies:
    """A compiled engine and the revision of the files it came from."""

    def __init__(self, directory):
        files = []
        for root, dirs, names in os.walk(directory):
            dirs.sort()
            files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".rego")]
        if not files:
            raise SystemExit(f"no .rego files in {directory}")
        self.engine = OpaEngine()
        digest = hashlib.sha256()
        for path in files:
            source = open(path, encoding="utf-8").read()
            name = os.path.relpath(path, directory)
            digest.update(name.encode() + b"\0" + source.encode() + b"\0")
            self.engine.add_policy(name, source)
        self.engine.eval_query("x = data")  # compile now: a broken policy fails at start
        self.revision = digest.hexdigest()[:16]


def serve(port, directory, delay_ms):
    lock = threading.Lock()
    state = {"policies": Policies(directory)}

    def reload(*_):
        try:
            fresh = Policies(directory)
        except (OpaError, SystemExit) as error:
            print(f"reload failed: {error}", file=sys.stderr, flush=True)
            return
        with lock:
            state["policies"] = fresh
        print(f"reloaded, revision {fresh.revision}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGHUP, reload)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # Headers and body go out in separate writes: without this, Nagle's algorithm and the
            # client's delayed ACK hold every answer about 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args):
            pass

        def answer(self, status, document):
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if urlsplit(self.path).path == "/health":
                return self.answer(200, {})
            self.answer(404, {"code": "resource_not_found", "message": "not found"})

        def do_POST(self):
            url = urlsplit(self.path)
            query = parse_qs(url.query, keep_blank_values=True)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not url.path.startswith("/v1/data"):
                return self.answer(404, {"code": "resource_not_found", "message": "not found"})
            if delay_ms:
                time.sleep(delay_ms / 1000)
            try:
                request = json.loads(raw) if raw.strip() else {}
                if not isinstance(request, dict):
                    raise ValueError("expected an object")
            except ValueError as error:
                return self.answer(400, {"code": "invalid_parameter", "message": f"body contains malformed input document: {error}"})
            segments = [s for s in url.path[len("/v1/data"):].split("/") if s]
            reference = "data" + "".join(f'["{s}"]' for s in segments)
            with lock:
                policies = state["policies"]
            try:
                results = policies.engine.eval_query(f"x = {reference}", request.get("input"))
            except OpaError as error:
                return self.answer(500, {"code": "internal_error", "message": "error(s) occurred while evaluating query",
                                         "errors": [{"code": "eval_error", "message": str(error)}]})
            document = {"result": results[0]["x"]} if results else {}
            if "provenance" in query:
                document["provenance"] = {"version": ENGINE_VERSION, "revision": policies.revision}
            self.answer(200, document)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"opa fixture listening on 127.0.0.1:{port}, revision {state['policies'].revision}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("directory")
    parser.add_argument("--delay-ms", type=int, default=0)
    arguments = parser.parse_args()
    serve(arguments.port, arguments.directory, arguments.delay_ms)
