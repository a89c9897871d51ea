#!/usr/bin/env bash
# Runs every test of Nova: builds with coverage, runs the Swift test suites (unit, conformance,
# stress, crash and process tests), then enforces line coverage of the core modules.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real tools the tests use: promtool checks the /metrics exposition.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's prometheus package for promtool..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
  else
    echo "error: promtool is missing; install it first (Debian: sudo apt-get install prometheus)" >&2
    exit 1
  fi
fi

swift build --build-tests --enable-code-coverage
swift test --enable-code-coverage --skip-build
python3 scripts/coverage.py "$(swift test --enable-code-coverage --show-codecov-path)" NovaQueue=85
