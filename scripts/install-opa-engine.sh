#!/usr/bin/env bash
# Installs the real OPA engine (Go, v1.20.2, in the PyPI package opa-golib-python-bindings) into a
# Python virtual environment, for the OPA test fixture (Tests/Fixtures/opa/opa_fixture.py).
# Usage: scripts/install-opa-engine.sh VENV
set -euo pipefail
venv=${1:?usage: install-opa-engine.sh VENV}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import opa_bindings' 2>/dev/null; then exit 0; fi
rm -rf "$venv"
python3 -m venv "$venv"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
# A ctypes binding (py3-none wheel) whose metadata asks for Python 3.14; it runs on 3.11 too.
"$venv/bin/pip" download -q opa-golib-python-bindings==0.4.4 --no-deps --only-binary=:all: --python-version 3.14 -d "$wheels"
"$venv/bin/pip" install -q --ignore-requires-python --no-deps "$wheels"/opa_golib_python_bindings-*.whl
"$venv/bin/python" -c 'import opa_bindings' && echo "OPA engine installed in $venv"
