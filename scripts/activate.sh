# Source this file (`source scripts/activate.sh`) to work in the pinned environment with this checkout's
# library: it builds or reuses the environment of requirements-lock.txt and puts lib/ first on PYTHONPATH,
# so Python, pytest and Jupyter kernels started from this shell import this checkout's code.
_speechssl_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_speechssl_venv=$(bash "$_speechssl_root/scripts/env.sh" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2))
# shellcheck disable=SC1091
source "$_speechssl_venv/bin/activate"
export PYTHONPATH="$_speechssl_root/lib${PYTHONPATH:+:$PYTHONPATH}"
unset _speechssl_root _speechssl_venv
