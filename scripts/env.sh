#!/usr/bin/env bash
# Prints the path of a virtual environment that holds exactly requirements-lock.txt. The environment is
# kept in a cache folder keyed on the lock file and the Python version, so repeated runs (and other
# checkouts) reuse it and a changed lock builds a new one. The library itself is not installed into it:
# scripts/activate.sh puts the checkout's own lib/ first on PYTHONPATH, so two checkouts sharing the
# environment each import their own code. Progress goes to stderr; only the path goes to stdout.
# `env.sh --check` prints the path only when the environment is already built (exit 1 otherwise).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
key=$( { cat "$root/requirements-lock.txt"; "$py" -c 'import sys, platform; print(sys.version, platform.machine())'; } | sha256sum | cut -c1-16)
cache=${SPEECHSSL_CACHE:-$HOME/.cache/speechssl}
venv=$cache/venv-$key
if [ "${1:-}" = "--check" ]; then
  [ -f "$venv/.complete" ] && echo "$venv" && exit 0
  exit 1
fi
if [ ! -f "$venv/.complete" ]; then
  echo "[env] building $venv from requirements-lock.txt (a few minutes, about 3 GB)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r "$root/requirements-lock.txt" >&2
  touch "$venv/.complete"
  # Environments built from older locks are no longer needed.
  for old in "$cache"/venv-*; do
    [ "$old" = "$venv" ] || rm -rf "$old"
  done
fi
# An environment made by an earlier version of this script has the library installed editable, pointing
# at whichever checkout ran last: remove that install once.
if [ ! -f "$venv/.no-editable" ]; then
  "$venv/bin/python" -m pip uninstall -q -y speechssl >&2 2>/dev/null || true
  touch "$venv/.no-editable"
fi
echo "$venv"
