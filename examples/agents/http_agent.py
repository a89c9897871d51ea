"""A tiny agent endpoint for the `ask` kind: answers each job's payload (its JSON body) with a
JSON result. When AGENT_SECRET is set, it checks Nova's Standard Webhooks signature and refuses
stale calls (the `standardwebhooks` package does the same: Webhook(secret).verify(body, headers))."""
import base64
import hashlib
import hmac
import json
import os
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ.get("AGENT_SECRET", "")
# A whsec_ secret is a base64 key; any other secret is the key as its bytes (as Nova takes it).
KEY = base64.b64decode(SECRET[len("whsec_"):] + "==") if SECRET.startswith("whsec_") else SECRET.encode()


def signed(headers, body):
    """Whether webhook-signature holds the HMAC of "<webhook-id>.<webhook-timestamp>.<body>" and
    the timestamp is within 5 minutes of now."""
    message_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not message_id or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    mac = hmac.new(KEY, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(hmac.compare_digest(expected, given) for given in headers.get("webhook-signature", "").split())


class Agent(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if SECRET and not signed(self.headers, body):
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
