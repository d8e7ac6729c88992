#!/usr/bin/env bash
# The GPU check as the device machine runs it (see bench/gpu_check.py, "Running on a GPU"): the wheels
# carried in .whl/, if any, go into /tmp/site; then the script, with every other option passed on.
#   bash bench/gpu_check.sh $OUT/gpu [--dry-run] [--budget 540] ...
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash bench/gpu_check.sh OUT_DIR [gpu_check.py options]}
shift
path=lib
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  path=/tmp/site:lib
fi
PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}" exec python3 bench/gpu_check.py --out "$out" "$@"
