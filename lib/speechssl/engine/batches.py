"""The data side of the engine: the training set of a configuration, resumable batch streams and
the metric log."""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from ..data.dataset import AudioDataset, collate_audio
from ..errors import ConfigError
from .config import TrainConfig

__all__ = ["INPUT_KEYS", "METRICS_NAME", "PaddedCollate", "SkipBatches", "check_batch", "drop_short_utterances",
           "make_train_dataset", "move_to", "read_metrics", "seed_from"]

log = logging.getLogger("speechssl.engine")

#: File name of the metric log in the run folder.
METRICS_NAME = "metrics.jsonl"
#: Batch keys of a model's main input, in the order looked for: waveforms (``collate_audio``),
#: unit tokens (``collate_units``) or precomputed frame features.
INPUT_KEYS = ("audio", "tokens", "features")


def make_train_dataset(config: TrainConfig, utterances: Sequence, root: str | os.PathLike, **kwargs: Any
                       ) -> AudioDataset:
    """The training :class:`~speechssl.data.dataset.AudioDataset` of a configuration: random crops of
    ``config.crop_samples`` seeded by ``config.seed``, normalised when ``config.normalize``. ``kwargs``
    go to ``AudioDataset`` (e.g. ``frame_labels``)."""
    options = dict(max_samples=config.crop_samples, crop="random" if config.crop_samples is not None else "none",
                   seed=config.seed, normalize=config.normalize)
    options.update(kwargs)
    return AudioDataset(utterances, root, **options)


def drop_short_utterances(utterances: Sequence, min_samples: int | None, *, what: str = "training set") -> list:
    """The utterances of at least ``min_samples`` samples (all when ``None``), logging how many were
    dropped (fairseq's ``min_sample_size``). A :class:`ConfigError` when none is left."""
    utterances = list(utterances)
    if not min_samples:
        return utterances
    kept = [u for u in utterances if u.num_samples >= min_samples]
    if not kept:
        longest = max((u.num_samples for u in utterances), default=0)
        raise ConfigError(f"{what}: every utterance is shorter than the model's minimum of {min_samples} samples "
                          f"(the longest has {longest}); use longer recordings or a model that needs fewer frames")
    if len(kept) < len(utterances):
        first = next(u for u in utterances if u.num_samples < min_samples)
        log.info("%s: dropped %d of %d utterances shorter than %d samples (e.g. %s, %d samples)", what,
                 len(utterances) - len(kept), len(utterances), min_samples, first.id, first.num_samples)
    return kept


class SkipBatches(Sampler):
    """A batch sampler without its first ``start`` batches (resume in the middle of an epoch).

    Batches are skipped as index lists, so the audio of skipped batches is never loaded.
    """

    def __init__(self, batch_sampler: Any, start: int) -> None:
        self.batch_sampler = batch_sampler
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batch_sampler), self.start, None)

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.start)


class PaddedCollate:
    """``collate_audio`` with ``pad_to_multiple`` (picklable, for worker processes)."""

    def __init__(self, multiple: int) -> None:
        self.multiple = multiple

    def __call__(self, items: list) -> dict:
        return collate_audio(items, pad_to_multiple=self.multiple)


def seed_from(*values: int) -> int:
    """A 63-bit seed mixing several integers (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0] >> 1)


def move_to(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``batch`` with every tensor (in dicts, lists and tuples) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device, non_blocking) for v in batch)
    return batch


def check_batch(batch: Any, where: str) -> tuple[dict, int, int]:
    """``(batch as a dict, utterances, samples)``; a :class:`ConfigError` naming ``where`` for a batch
    without an input tensor or an empty one."""
    key = next((k for k in INPUT_KEYS if isinstance(batch, Mapping) and isinstance(batch.get(k), torch.Tensor)), None)
    if key is None:
        raise ConfigError(f"{where}: expected the collate function to return a dict with one of the input tensors "
                          f"{INPUT_KEYS}, found {type(batch).__name__}"
                          + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else ""))
    inputs = batch[key]
    if inputs.dim() == 0 or inputs.shape[0] == 0 or inputs.numel() == 0:
        raise ConfigError(f"{where}: empty batch ({key} of shape {tuple(inputs.shape)})")
    lengths = batch.get("lengths")
    samples = int(lengths.sum()) if isinstance(lengths, torch.Tensor) else int(inputs.numel())
    return dict(batch), int(inputs.shape[0]), samples


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a crash: the log ends there
    return out
