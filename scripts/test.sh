#!/usr/bin/env bash
# Command 2: every test. Unit tests of lib/, the three-language check, the book build, and
# nbval (lax mode) over the chapters and the results page against their committed tiny-scale outputs.
#
# The unit tests run on two pytest-xdist workers: many of them spend their time in one thread or in
# subprocesses, and two workers ran them 2.3 times as fast (752 tests: 398 s on one, 170 s on two).
# The notebooks run one after the other, each with the 2 threads its stored outputs were computed with:
# two chapters at once each took about twice as long as alone (bench/RESULTS.md), and later chapters
# reuse the runs of earlier ones. Both parts always run; the exit status is the first failure's.
# In the unit-test part, OpenMP threads waiting at a barrier sleep instead of spinning, so that two
# workers using torch threads at once do not take the cores from each other (bench/RESULTS.md).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
status=0
OMP_WAIT_POLICY=PASSIVE python -m pytest tests -n 2 -p no:cacheprovider "$@" || status=$?
python -m pytest chapters book/results.ipynb \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=1800 -p speechssl.testing.nbval_tolerance \
  --nbval-sanitize-with tests/nbval_sanitize.cfg \
  -p no:cacheprovider "$@" || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
exit "$status"
