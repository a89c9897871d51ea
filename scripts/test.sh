#!/usr/bin/env bash
# Runs every test of Nova: builds with coverage, runs the Swift test suites (unit, conformance,
# stress, crash and process tests), then enforces line coverage of the core modules.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests' own folders (databases, sockets, the servers' data) go in one folder of this run's,
# removed when the run ends however it ends: repeated runs do not pile folders up in /tmp.
# Open to every user as /tmp is (sticky): the isolation tests run programs under other accounts.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/nova-tests.XXXXXX")"
chmod 1777 "$scratch"
trap 'rm -rf "$scratch"' EXIT
export TMPDIR="$scratch"

# Real servers and tools the tests use: redis-server and Alertmanager (the tests start their
# own, on free loopback ports), promtool (checks the /metrics exposition and the rules), sqlite3 (tampers with the audit
# log as an attacker would), jq and openssl (verify evidence the way a reviewer does), Python's
# venv (for the OPA engine the policy tests run real Rego on, and the Standard Webhooks verifier).
need() {
  local tool="$1" package="$2"
  command -v "$tool" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's $package package for $tool..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null; }
  else
    echo "error: $tool is missing; install it first (Debian: sudo apt-get install $package)" >&2
    exit 1
  fi
}
need redis-server redis-server
need promtool prometheus
need prometheus-alertmanager prometheus-alertmanager
# Headless Chromium opens the LUX compliance page and, driven by Selenium through chromedriver,
# the console; Python's jsonschema checks the Grafana dashboard.
need chromium chromium
need chromedriver chromium-driver
python3 -c 'import jsonschema' 2>/dev/null || need python3-jsonschema-module python3-jsonschema
need sqlite3 sqlite3
need jq jq
need openssl openssl
# The deploy units are checked as systemd reads them.
need systemd-analyze systemd
python3 -c 'import ensurepip, venv' 2>/dev/null || need python3-venv-module python3-venv
# The real OPA engine (Go, from PyPI) behind Tests/Fixtures/opa/opa_fixture.py, for the policy tests.
bash scripts/install-opa-engine.sh .build/opa-venv
# The Standard Webhooks reference verifier (PyPI's standardwebhooks): the signature tests check
# that it accepts the calls and webhooks Nova signs.
if ! .build/webhooks-venv/bin/python -c 'import standardwebhooks' 2>/dev/null; then
  rm -rf .build/webhooks-venv
  python3 -m venv .build/webhooks-venv
  .build/webhooks-venv/bin/pip install -q standardwebhooks==1.3.0
fi
export NOVA_WEBHOOKS_PYTHON="$PWD/.build/webhooks-venv/bin/python"
# Selenium (PyPI) and pytest for the console's browser tests, in a venv of their own.
if ! .build/browser-venv/bin/python -c 'import selenium, pytest' 2>/dev/null; then
  rm -rf .build/browser-venv
  python3 -m venv .build/browser-venv
  .build/browser-venv/bin/pip install -q selenium==4.51.0 pytest==8.3.5
fi
[ -f /usr/include/zlib.h ] || need zlib-headers zlib1g-dev

# The formatter's configuration (.swift-format) holds for every source file.
swift format lint --strict --recursive --parallel Sources Tests Examples Package.swift

# Nova's own code builds without a warning, and no test may skip for a missing server: this
# script installed them all, so a skip could only hide a broken install.
export NOVA_WARNINGS_AS_ERRORS=1 NOVA_REQUIRE_ALL_TESTS=1
swift build --build-tests --enable-code-coverage
# A hung test fails the run instead of holding CI until its own limit.
timeout 1200 swift test --enable-code-coverage --skip-build
python3 scripts/coverage.py "$(swift test --enable-code-coverage --show-codecov-path)" NovaQueue=85 NovaRedis=85 NovaRedisQueue=85 NovaSecurity=85 NovaPolicy=85 NovaMonitoring=85 NovaAlerting=85 NovaDashboards=85 NovaCore=85 NovaServer=85 NovaDatabase=85 NovaBenchmarks=85 NovaApplication=85 NovaJobKinds=85 NovaConsole=85

# The Python client's tests (pytest), against real `nova serve` processes they start from the
# binary just built; they include the README's three-ways quickstart, run as pasted.
if python3 -c 'import pytest' 2>/dev/null; then python=python3; else need python3-pytest-module python3-pytest; python=/usr/bin/python3; fi
NOVA_BIN="$(swift build --enable-code-coverage --show-bin-path)/nova" timeout 900 "$python" -m pytest -q -p no:cacheprovider clients/python/tests

# The console in a real browser: headless Chromium driven by Selenium against a real `nova serve`
# (sign-in, a job's verified audit trail, bulk retry, queues, alerts, CSRF, viewers, the proxy
# header); it takes a screenshot of each page (NOVA_CONSOLE_SCREENSHOTS=docs/console refreshes
# the README's).
NOVA_BIN="$(swift build --enable-code-coverage --show-bin-path)/nova" timeout 600 .build/browser-venv/bin/python -m pytest -q -p no:cacheprovider Tests/Browser

# The decoders of untrusted bytes (RESP from the network, tar from evidence bundles) are fuzzed
# for a short while on every run; a crash fails the run and leaves its input in .build/fuzz.
bash scripts/fuzz-resp.sh 20
bash scripts/fuzz-tar.sh 20
