#!/usr/bin/env bash
# Builds the two files a host needs, nova and nova-supervise, with the Swift runtime linked in
# statically, stripped, into dist/. Copy them to /usr/local/bin on the host (x86-64 Debian 12 or
# Ubuntu 22.04 and later: besides the C library they need only libstdc++, zlib and SQLite), then
# install deploy/systemd/nova-worker.service (or nova-serve.service). About 13 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# A scratch folder of its own: the debug build in .build (and its coverage flags) stays as it is.
build=(swift build -c release --static-swift-stdlib --scratch-path .build-static)
for program in nova nova-supervise; do
  "${build[@]}" --product "$program"
done
bin="$("${build[@]}" --show-bin-path)"
mkdir -p dist
for program in nova nova-supervise; do
  strip -o "dist/$program" "$bin/$program"
done
ls -l dist
echo "shared libraries of dist/nova:"
ldd dist/nova
