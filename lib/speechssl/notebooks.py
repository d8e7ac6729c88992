"""Execute chapter notebooks in place (what ``scripts/book.sh`` runs before building the book).

``python -m speechssl.notebooks chapters/*.ipynb`` runs each notebook top to bottom in a fresh
kernel whose working directory is the notebook's folder, and stores the outputs in the
notebook. The scale comes from ``SPEECHSSL_SCALE`` (default ``tiny``): the committed outputs
are those of the ``tiny`` run, which nbval then checks.

``--sync-repository`` first writes the public repository of ``_config.yml`` (``repository.url`` and
``branch``) into each chapter's "Open in Colab" link and Colab setup cell, so that publishing the book
under another address means changing that one setting (``scripts/book.sh`` does it on every run).
"""

from __future__ import annotations

import argparse
import os
import re
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


def repository(config: str | os.PathLike) -> tuple[str, str]:
    """``(url, branch)`` of the book's public repository in ``_config.yml``."""
    text = Path(config).read_text(encoding="utf-8")
    url = re.search(r"^repository:\s*\n(?:\s+.*\n)*?\s+url:\s*(\S+)", text, re.M)
    branch = re.search(r"^repository:\s*\n(?:\s+.*\n)*?\s+branch:\s*(\S+)", text, re.M)
    if url is None:
        raise SystemExit(f"{config}: expected a repository.url setting, found none")
    return url.group(1).rstrip("/"), branch.group(1) if branch else "main"


def colab_link(url: str, branch: str, notebook: str) -> str:
    """The Colab address of a chapter notebook of the repository at ``url`` (a github.com address)."""
    return f"https://colab.research.google.com/github/{url.split('github.com/', 1)[-1]}/blob/{branch}/chapters/{notebook}"


_BADGE = re.compile(r"\(https://colab\.research\.google\.com/github/[^)\s]+\)")
_CLONE = re.compile(r"git clone -q --depth 1 (?:--branch \S+ )?\S+ /content/")


def sync_repository(path: str | os.PathLike, url: str, branch: str) -> bool:
    """Point a chapter's Colab link and setup cell at ``url``/``branch``; True when the notebook changed."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        new = _BADGE.sub(f"({colab_link(url, branch, path.name)})", cell.source)
        new = _CLONE.sub(f"git clone -q --depth 1 --branch {branch} {url} /content/", new)
        if new != cell.source:
            cell.source, changed = new, True
    if changed:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    parser.add_argument("--sync-repository", metavar="CONFIG",
                        help="point the Colab links and setup cells at the repository of this _config.yml, "
                             "and execute nothing")
    args = parser.parse_args(argv)
    if args.sync_repository:
        url, branch = repository(args.sync_repository)
        for nb in args.notebooks:
            if sync_repository(nb, url, branch):
                print(f"[sync] {nb}: repository {url} ({branch})", flush=True)
        return 0
    os.environ.setdefault("SPEECHSSL_SCALE", "tiny")
    for nb in args.notebooks:
        print(f"[execute] {nb} (scale {os.environ['SPEECHSSL_SCALE']})", flush=True)
        seconds = execute_notebook(nb, timeout=args.timeout)
        print(f"[execute] {nb}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
