"""What every chapter notebook does first and most: set up, read the corpus, train a recipe.

    ch = chapter.setup()                       # scale from SPEECHSSL_SCALE, seeds, plots, the corpus
    run = ch.train("wav2vec2")                 # the scale's recipe on the `pretrain` split
    dev = ch.utterances("dev")

At ``full`` scale the papers' runs are trained from the command line on LibriSpeech; a chapter then
resumes the finished run from its folder instead of training (``runs/<model>-full``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import kernels, paths
from .data.dataset import collate_audio
from .data.manifest import Utterance, read_frame_labels, read_manifest
from .engine import seed_everything
from .recipes import CORPUS, Recipe, recipe
from .run import Run, start_run

__all__ = ["Chapter", "setup"]


@dataclass
class Chapter:
    """The scale, seed, corpus and device of a chapter."""

    scale: str
    seed: int
    root: Path
    device: torch.device

    def recipe(self, name: str, **overrides: Any) -> Recipe:
        """The chapter's recipe for ``name``: the scale's, with the chapter's seed."""
        return recipe(name, self.scale, **{"seed": self.seed, **overrides})

    def utterances(self, split: str) -> list[Utterance]:
        return read_manifest(self.root, split)

    def labels(self, split: str, rate: str = "100hz") -> dict:
        """Frame phone labels of a split on the ``100hz`` or ``50hz`` grid."""
        return read_frame_labels(self.root, split, rate)

    def train(self, r: Recipe | str, split: str = "pretrain", *, reuse: bool = False, stop_at: int | None = None,
              resume: bool = False, model: torch.nn.Module | None = None, dataset: Any = None,
              collate: Callable | None = collate_audio, utterances: list | None = None, **build_kwargs: Any) -> Run:
        """Train a recipe (a name: the chapter's recipe) on a split, and return the :class:`~speechssl.run.Run`.

        A fresh run overwrites the run folder; ``resume=True`` continues it (e.g. after ``stop_at``);
        ``reuse=True`` continues a run that is already there, or trains it (a later chapter reusing an
        earlier chapter's model). At ``full`` scale the finished command-line run is loaded.
        """
        r = self.recipe(r) if isinstance(r, str) else r
        utts = self.utterances(split) if utterances is None and dataset is None else (utterances or [])
        run = start_run(r, utts, self.root, model=model, dataset=dataset, collate=collate, what=split, **build_kwargs)
        return self.fit(run, reuse=reuse, stop_at=stop_at, resume=resume)

    def fit(self, run: Run, *, reuse: bool = False, stop_at: int | None = None, resume: bool = False) -> Run:
        """Train a :class:`~speechssl.run.Run` built elsewhere (e.g. a HuBERT iteration's) as :meth:`train` does."""
        if self.scale == "full" or resume:
            run.fit(resume=True, stop_at=stop_at)
        elif reuse:
            run.fit(resume="auto", stop_at=stop_at)
        else:
            run.fit(overwrite=True, stop_at=stop_at)
        return run


def setup(seed: int = 0) -> Chapter:
    """Set a chapter up: the scale (``SPEECHSSL_SCALE``), seeds, figure style and the synthetic corpus of
    the scale (generated when missing). At ``tiny`` scale torch uses 2 threads, as the stored outputs did,
    and the CPU kernels of :mod:`speechssl.kernels` (pinned when started from ``scripts/``)."""
    from .data.synth import ensure_corpus
    from .viz import setup_plots

    scale = paths.scale()
    if scale == "tiny":
        torch.set_num_threads(2)
        kernels.pin()
    seed_everything(seed)
    setup_plots()
    root = Path(ensure_corpus(paths.corpus_dir(CORPUS[scale]), CORPUS[scale], seed=seed))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"scale={scale}, corpus={CORPUS[scale]}, device={device.type}")
    return Chapter(scale, seed, root, device)
