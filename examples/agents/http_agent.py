"""A tiny agent endpoint for the `ask` kind: answers each job's payload (its JSON body) with a
JSON result. When AGENT_SECRET is set, it checks Nova's signature and refuses stale calls."""
import hashlib
import hmac
import json
import os
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ.get("AGENT_SECRET", "")


class Agent(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if SECRET:
            timestamp = self.headers.get("X-Nova-Timestamp", "0")
            expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            fresh = abs(time.time() - int(timestamp)) < 300
            if not fresh or not hmac.compare_digest(expected, self.headers.get("X-Nova-Signature", "")):
                self.send_response(401)
                self.end_headers()
                return
        question = json.loads(body or b"{}").get("question", "")
        answer = json.dumps({"answer": f"you asked: {question}", "job": self.headers.get("X-Nova-Job-Id")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8090"))), Agent).serve_forever()
