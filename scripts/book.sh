#!/usr/bin/env bash
# Command 1: set up, generate the tiny corpus, execute every chapter at tiny scale and build
# the HTML book from scratch.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
python -m speechssl.notebooks --sync-repository _config.yml chapters/*.ipynb
python -m speechssl.notebooks chapters/*.ipynb book/results.ipynb
jupyter-book clean . >/dev/null
jupyter-book build . -W -n --keep-going
echo "The book is at $(pwd)/_build/html/index.html"
