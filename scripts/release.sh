#!/usr/bin/env bash
# Builds the two files a host needs, nova and nova-supervise, with the Swift runtime linked in
# statically, stripped, into dist/. Copy them to /usr/local/bin on the host (x86-64 Debian 12 or
# Ubuntu 22.04 and later: besides the C library they need only libstdc++, zlib and SQLite), then
# install deploy/systemd/nova-worker.service (or nova-serve.service). About 13 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
for program in nova nova-supervise; do
  swift build -c release --static-swift-stdlib --product "$program"
done
bin="$(swift build -c release --static-swift-stdlib --show-bin-path)"
mkdir -p dist
for program in nova nova-supervise; do
  strip -o "dist/$program" "$bin/$program"
done
ls -l dist
echo "shared libraries of dist/nova:"
ldd dist/nova
