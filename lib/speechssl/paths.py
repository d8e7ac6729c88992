"""Where generated data and runs live, and which scale a chapter runs at.

Everything generated (corpora, features, checkpoints, run logs) goes into folders that git
ignores. Defaults: ``data/`` and ``runs/`` in the checkout when the package is used from a
checkout (the usual ``pip install -e .``), otherwise ``~/.cache/speechssl``. Environment
variables override them:

- ``SPEECHSSL_DATA``  corpora and derived data
- ``SPEECHSSL_RUNS``  training runs (checkpoints, metric logs)
- ``SPEECHSSL_SCALE`` ``tiny`` (CPU, minutes; default), ``reduced`` (one GPU) or ``full``
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

SCALES = ("tiny", "reduced", "full")


def repo_root() -> Path | None:
    """The checkout this package was imported from, if it is one (``lib/speechssl`` inside it)."""
    here = Path(__file__).resolve().parent
    root = here.parent.parent
    if (root / "pyproject.toml").is_file() and (root / "lib" / "speechssl").is_dir():
        return root
    return None


def _base(env: str, sub: str) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    root = repo_root()
    return (root / sub) if root is not None else Path.home() / ".cache" / "speechssl" / sub


def data_dir() -> Path:
    return _base("SPEECHSSL_DATA", "data")


def runs_dir() -> Path:
    return _base("SPEECHSSL_RUNS", "runs")


def corpus_dir(preset: str) -> Path:
    """Folder of the synthetic corpus generated with ``preset`` (e.g. ``data/synth-tiny``)."""
    return data_dir() / f"synth-{preset}"


def scale(default: str = "tiny") -> str:
    """The scale chapters run at, from ``SPEECHSSL_SCALE``; an unknown value is an error."""
    value = os.environ.get("SPEECHSSL_SCALE", default).strip().lower()
    if value not in SCALES:
        raise ConfigError(f"SPEECHSSL_SCALE must be one of {SCALES}, found {value!r}")
    return value
