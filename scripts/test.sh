#!/usr/bin/env bash
# Command 2: every test. Unit tests of lib/, the three-language check, the book build, and
# nbval (lax mode) over the chapters and the results page against their committed tiny-scale outputs.
# Two pytest-xdist workers share the 2 cores; speechssl.testing.schedule keeps each chain of chapters that
# reuse each other's runs on one worker, in the book's order.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
python -m pytest tests chapters book/results.ipynb -n 2 --dist loadscope -p speechssl.testing.schedule \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=1800 -p speechssl.testing.nbval_tolerance \
  --nbval-sanitize-with tests/nbval_sanitize.cfg \
  -p no:cacheprovider "$@"
