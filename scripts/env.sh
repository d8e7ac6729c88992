#!/usr/bin/env bash
# Prints the path of a virtual environment that holds exactly requirements-lock.txt and the
# package of this checkout (installed editable). The environment is kept in a cache folder
# keyed on the lock file and the Python version, so repeated runs reuse it and a changed lock
# builds a new one. Progress goes to stderr; only the path goes to stdout.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
key=$( { cat "$root/requirements-lock.txt"; "$py" -c 'import sys, platform; print(sys.version, platform.machine())'; } | sha256sum | cut -c1-16)
cache=${SPEECHSSL_CACHE:-$HOME/.cache/speechssl}
venv=$cache/venv-$key
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
# Point the editable install at this checkout (fast; no dependencies touched).
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root" >&2
echo "$venv"
