#!/usr/bin/env bash
# Fuzzes the evidence bundle's tar reader with libFuzzer (and AddressSanitizer) for a while.
# Usage: scripts/fuzz-tar.sh [seconds]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out=.build/fuzz
mkdir -p "$out" "$out/tar-corpus"
cp -n Fuzz/tar-corpus/* "$out/tar-corpus/" 2>/dev/null || true
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name TarFuzz \
  Sources/NovaSecurity/TarReader.swift Fuzz/TarReaderFuzzer.swift \
  -o "$out/tar-fuzzer"
"$out/tar-fuzzer" -max_total_time="$seconds" -max_len=8192 "$out/tar-corpus"
