# Sourced by book.sh and test.sh: enter the repository, activate the pinned environment with this
# checkout's library, quiet progress bars, and make sure the tiny synthetic corpus exists.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
source scripts/activate.sh
export SPEECHSSL_PROGRESS=${SPEECHSSL_PROGRESS:-0}
export SPEECHSSL_SCALE=${SPEECHSSL_SCALE:-tiny}
export PYDEVD_DISABLE_FILE_VALIDATION=1
# One kernel path on every x86-64 CPU with AVX-512 (MKL's reproducible branch, no oneDNN), so that
# the tiny trainings give the committed outputs on any such machine: see lib/speechssl/kernels.py.
eval "$(python -m speechssl.kernels)"
# The tiny corpus is regenerated only when its configuration or the generator changed.
python -m speechssl.data.synth --preset tiny --out "${SPEECHSSL_DATA:-data}/synth-tiny" --reuse
