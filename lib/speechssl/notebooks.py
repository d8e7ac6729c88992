"""Execute chapter notebooks in place (what ``scripts/book.sh`` runs before building the book).

``python -m speechssl.notebooks chapters/*.ipynb`` runs each notebook top to bottom in a fresh
kernel whose working directory is the notebook's folder, and stores the outputs in the
notebook. The scale comes from ``SPEECHSSL_SCALE`` (default ``tiny``): the committed outputs
are those of the ``tiny`` run, which nbval then checks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute_notebook(path: str | os.PathLike, timeout: int = 1800, kernel_name: str = "python3") -> float:
    """Run one notebook in place; returns the wall time in seconds. Raises if a cell fails."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # timings of an earlier run would only add noise to the stored notebook
        cell.metadata.pop("execution", None)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPEECHSSL_SCALE", "tiny")
    for nb in args.notebooks:
        print(f"[execute] {nb} (scale {os.environ['SPEECHSSL_SCALE']})", flush=True)
        seconds = execute_notebook(nb, timeout=args.timeout)
        print(f"[execute] {nb}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
