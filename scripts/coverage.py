#!/usr/bin/env python3
"""Prints line coverage per module from `swift test --enable-code-coverage` and enforces minimums.

Usage: coverage.py CODECOV_JSON [Module=MIN ...]
llvm-cov has no per-folder totals, so the lines of the files under Sources/<Module>/ are summed.
"""
import json
import os
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = sys.argv[1]
    minimums = {}
    for spec in sys.argv[2:]:
        name, _, value = spec.partition("=")
        minimums[name] = float(value)
    with open(path) as handle:
        report = json.load(handle)
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "Sources")) + os.sep
    modules = {}
    for data in report["data"]:
        for entry in data["files"]:
            filename = entry["filename"]
            if not filename.startswith(root):
                continue
            module = filename[len(root):].split(os.sep)[0]
            lines = entry["summary"]["lines"]
            covered, count = modules.get(module, (0, 0))
            modules[module] = (covered + lines["covered"], count + lines["count"])
    failed = False
    print("line coverage per module:")
    for module in sorted(modules):
        covered, count = modules[module]
        percent = 100.0 * covered / count if count else 100.0
        minimum = minimums.get(module)
        verdict = ""
        if minimum is not None:
            ok = percent >= minimum
            failed |= not ok
            verdict = f"  (minimum {minimum:.0f} %: {'ok' if ok else 'FAILED'})"
        print(f"  {module:<16} {percent:6.2f} %  {covered}/{count} lines{verdict}")
    for module in minimums:
        if module not in modules:
            print(f"  {module}: no coverage data (FAILED)")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
