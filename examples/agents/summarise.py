"""A small agent: reads its job's payload (JSON) on stdin, logs to stderr, writes its JSON
result as the last line of stdout. Exit 2 on a bad payload (dead-lettered at once)."""
import json
import os
import sys

try:
    payload = json.load(sys.stdin)
    text = payload["text"]
except (ValueError, KeyError, TypeError) as error:
    print(f"bad payload: {error}", file=sys.stderr)
    sys.exit(2)

words = int(os.environ.get("SUMMARY_WORDS", "8"))
print(f"job {os.environ['NOVA_JOB_ID']} attempt {os.environ['NOVA_JOB_ATTEMPT']}: summarising {len(text)} characters", file=sys.stderr)
print(json.dumps({"summary": " ".join(text.split()[:words]), "words": len(text.split())}))
