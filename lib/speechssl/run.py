"""Running a recipe: the one path from a recipe and a corpus to a trained model, shared by the
commands and the chapters.

    r = recipe("wav2vec2", "tiny")
    run = start_run(r, read_manifest(root, "pretrain"), root)   # seeded model, filtered data, trainer
    run.fit()                                                   # run.model, run.history
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .data.dataset import collate_audio
from .engine import Trainer, drop_short_utterances, make_train_dataset, seed_everything
from .recipes import Recipe

__all__ = ["Run", "start_run"]


@dataclass
class Run:
    """A recipe's model and its :class:`~speechssl.engine.Trainer`."""

    recipe: Recipe
    model: nn.Module
    trainer: Trainer

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.trainer.history

    def fit(self, resume: bool | str | os.PathLike = False, *, overwrite: bool = False, stop_at: int | None = None
            ) -> list[dict[str, Any]]:
        """Train (see :meth:`Trainer.fit`); returns the metric records."""
        return self.trainer.fit(resume, overwrite=overwrite, stop_at=stop_at)


def start_run(r: Recipe, utterances: Sequence, root: str | os.PathLike, *, model: nn.Module | None = None,
              dataset: Any = None, collate: Callable | None = collate_audio, what: str = "training set",
              **build_kwargs: Any) -> Run:
    """The model of ``r`` (built after seeding with the run's seed, unless given) and its trainer.

    Utterances shorter than the model's ``min_input_samples`` are dropped once, here (fairseq's
    ``min_sample_size``); ``dataset`` replaces the default training set of random crops.
    """
    if model is None:
        seed_everything(r.train.seed)
        model = r.build(**build_kwargs)
    if dataset is None:
        kept = drop_short_utterances(utterances, getattr(model, "min_input_samples", None), what=what)
        dataset = make_train_dataset(r.train, kept, root)
    return Run(r, model, Trainer(model, r.train, dataset, collate))
