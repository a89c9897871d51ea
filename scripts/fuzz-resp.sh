#!/usr/bin/env bash
# Fuzzes the RESP decoder with libFuzzer (and AddressSanitizer) for a while.
# Usage: scripts/fuzz-resp.sh [seconds]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out=.build/fuzz
mkdir -p "$out" "$out/corpus"
cp -n Fuzz/corpus/* "$out/corpus/" 2>/dev/null || true
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name RESPFuzz \
  Sources/NovaRedis/RESPDecoder.swift Sources/NovaRedis/RESPValue.swift Fuzz/RESPDecoderFuzzer.swift \
  -o "$out/resp-fuzzer"
"$out/resp-fuzzer" -max_total_time="$seconds" -max_len=4096 "$out/corpus"
