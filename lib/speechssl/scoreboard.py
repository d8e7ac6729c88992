"""The book's results page: every model's features against MFCC on the same measures, and the
chapters' verdicts on the papers' claims.

- :func:`representations` turns the trained models of chapters 1-3 and chapter 0's MFCC into
  frame features on one grid, 50 Hz (wav2vec 2.0's frame rate). A 100 Hz frame ``2t`` has the same
  centre as the 50 Hz frame ``t`` (both grids start with a 400-sample window; wav2vec's 465-sample
  frames are 2 ms later), so the 100 Hz features are read every other frame.
- :func:`compare` gives each representation the same linear phone probe and the same k-means
  (``K`` units, fitted on the probe's training frames), whose PNMI is then measured on held-out
  speakers: one unit count and one frame rate for all, where the chapters use 100 Hz (chapter 0)
  and 50 Hz (chapter 3).
- :func:`claims` reads a chapter's table of the paper's claims ("holds here") from its stored
  outputs, so the results page repeats the chapters' verdicts without retyping them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from .cluster import KMeans
from .evaluation import features_of
from .metrics import unit_quality
from .probe import collect_frames, fit_linear_probe

__all__ = ["Claim", "Comparison", "claims", "compare", "every_other_frame", "representations"]


def every_other_frame(featurize: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A 100 Hz featurizer read on the 50 Hz grid (frames 0, 2, 4, ...)."""
    return lambda wav: featurize(wav)[::2]


def representations(mfcc: Callable, wav2vec: torch.nn.Module, vq_wav2vec: torch.nn.Module,
                    wav2vec2: torch.nn.Module, hubert: torch.nn.Module | None = None
                    ) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Frame features at 50 Hz: MFCC, wav2vec's ``c``, vq-wav2vec's ``c``, wav2vec 2.0's Transformer output and,
    when given, HuBERT's (chapter 5's second iteration)."""
    reps = {"MFCC + Δ + ΔΔ (chapter 0)": every_other_frame(mfcc),
            "wav2vec context c (chapter 1)": every_other_frame(features_of(wav2vec, "context")),
            "vq-wav2vec context c (chapter 2)": every_other_frame(features_of(vq_wav2vec, "context")),
            "wav2vec 2.0 Transformer output (chapter 3)": features_of(wav2vec2)}
    if hubert is not None:
        reps["HuBERT iteration 2 Transformer output (chapter 5)"] = features_of(hubert)
    return reps


@dataclass(frozen=True)
class Comparison:
    name: str
    dims: int
    probe_accuracy: float
    pnmi: float


def compare(reps: Mapping[str, Callable], train: Sequence, evaluate: Sequence, root: str | os.PathLike,
            train_labels: Mapping, eval_labels: Mapping, num_phones: int, *, num_units: int = 100, seed: int = 0,
            n_init: int = 3) -> list[Comparison]:
    """The same linear phone probe and the same ``num_units``-means PNMI for every representation."""
    out = []
    for name, featurize in reps.items():
        x_tr, y_tr = collect_frames(featurize, train, root, train_labels)
        x_ev, y_ev = collect_frames(featurize, evaluate, root, eval_labels)
        acc = fit_linear_probe(x_tr, y_tr, x_ev, y_ev, num_phones, seed=seed)
        km = KMeans(num_units, n_init=n_init, seed=seed).fit(x_tr.float())
        q = unit_quality(y_ev.numpy(), km.predict(x_ev.float()), num_phones, num_units)
        out.append(Comparison(name, int(x_tr.shape[1]), float(acc), float(q.pnmi)))
    return out


@dataclass(frozen=True)
class Claim:
    chapter: str
    claim: str
    paper: str
    holds: str


def _markdown_tables(notebook: Path) -> list[list[list[str]]]:
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    tables = []
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            md = output.get("data", {}).get("text/markdown")
            if md is None:
                continue
            md = "".join(md) if isinstance(md, list) else md
            rows = [[c.strip() for c in line.strip().strip("|").split(" | ")]
                    for line in md.splitlines() if line.startswith("|") and not re.match(r"\|\s*-", line)]
            if rows:
                tables.append(rows)
    return tables


def claims(notebook: str | os.PathLike) -> list[Claim]:
    """The rows of the chapter's claims table (the stored table whose header has "holds here")."""
    notebook = Path(notebook)
    for rows in _markdown_tables(notebook):
        header = rows[0]
        if "holds here" in header:
            i = header.index("holds here")
            return [Claim(notebook.stem, r[0], r[1], r[i]) for r in rows[1:] if len(r) == len(header)]
    raise ValueError(f"{notebook}: expected a stored table with a 'holds here' column (run the chapter first), "
                     f"found none")
