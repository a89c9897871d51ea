#!/usr/bin/env bash
# Checks that a GPU host can take the release files as they are (issue #22 point 8): builds them
# with scripts/release.sh, then checks that dist/nova links nothing of Swift's (its only shared
# libraries are the C library's, libstdc++, libgcc_s, zlib and SQLite) and that it works when
# copied alone into a fresh directory, run with a bare environment: its version, a job enqueued
# on a new data directory and run there by `nova worker` under `nova-supervise`.
set -euo pipefail
cd "$(dirname "$0")/.."
# --built checks the files release.sh left in dist/ instead of building them again.
[ "${1:-}" = --built ] || bash scripts/release.sh

allowed='linux-vdso.so.1 ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libstdc++.so.6 libgcc_s.so.1 libz.so.1 libsqlite3.so.0'
for program in dist/nova dist/nova-supervise; do
  libraries=$(ldd "$program" | awk '{ print $1 }' | xargs -n1 basename | sort -u)
  for library in $libraries; do
    case " $allowed " in
      *" $library "*) ;;
      *) echo "error: $program needs $library, which a GPU host without a toolchain lacks (allowed: $allowed)" >&2; exit 1 ;;
    esac
  done
done
echo "dist/nova and dist/nova-supervise link only: $(ldd dist/nova | awk '{ print $1 }' | xargs -n1 basename | sort -u | tr '\n' ' ')"

host=$(mktemp -d)
trap 'kill "${worker:-0}" 2>/dev/null || true; rm -rf "$host"' EXIT
cp dist/nova dist/nova-supervise "$host/"
cd "$host"
run() { env -i HOME="$host" PATH=/usr/bin:/bin "$@"; }
run ./nova --version
cat > nova-jobs.yaml <<'YAML'
kinds:
  hello:
    type: command
    command: [/bin/sh, -c, 'cat > /dev/null; echo "{\"ran_in\": \"$PWD\"}"']
YAML
id=$(run ./nova enqueue hello --payload '{"from":"release check"}' --data-dir data --jobs nova-jobs.yaml)
# Not through `run`: a function sent to the background runs in a subshell, whose pid `$!` is, and
# killing that left the worker running after the check (env execs nova under its own pid).
env -i HOME="$host" PATH=/usr/bin:/bin ./nova worker --data-dir data --jobs nova-jobs.yaml --host-name fresh-host --workers 1 \
  > worker.log 2>&1 &
worker=$!
for _ in $(seq 1 100); do
  state=$(run ./nova jobs show "$id" --data-dir data --jobs nova-jobs.yaml | sed -n 's/.*"state" *: *"\([a-z]*\)".*/\1/p' | head -1)
  [ "$state" = succeeded ] && break
  sleep 0.2
done
kill -TERM "$worker"; wait "$worker" || true
if pgrep -f -- "--host-name fresh-host" > /dev/null; then
  echo "error: the worker of the release check outlived it" >&2
  exit 1
fi
if [ "$state" != succeeded ]; then
  echo "error: the job did not succeed on a fresh directory (state: ${state:-unknown})" >&2
  cat worker.log >&2
  exit 1
fi
echo "the release nova ran job $id from a fresh directory: $(run ./nova jobs show "$id" --data-dir data --jobs nova-jobs.yaml | tr -d '\n' | sed 's/  */ /g' | grep -o '"result" *: *{[^}]*}')"
