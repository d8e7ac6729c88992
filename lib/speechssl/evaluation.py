"""Evaluating trained models on held-out speakers: batches, the training loss in eval mode, features and
units per frame, and the masked-prediction baselines of a unit BERT.

Every function leaves the global random state as it found it and restores the model's train/eval mode,
so a chapter can evaluate between two halves of a run without changing the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.audio import load_audio
from .data.dataset import AudioDataset, collate_audio
from .data.units import UnitVocabulary
from .engine.batches import move_to
from .nn.quantizers import codes_to_ids

__all__ = ["batches", "features_of", "held_out", "masked_prediction", "unigram_entropy", "unit_sequences", "units_of"]


def batches(utterances: Sequence, root: str | os.PathLike, *, batch_size: int = 8, max_samples: int | None = None,
            collate: Callable = collate_audio) -> list[dict]:
    """Evaluation batches of whole utterances (or their first ``max_samples`` samples), in manifest order."""
    data = AudioDataset(utterances, root, max_samples=max_samples, crop="start" if max_samples else "none")
    return [collate([data[i] for i in range(s, min(s + batch_size, len(data)))]) for s in range(0, len(data), batch_size)]


@torch.no_grad()
def held_out(model: torch.nn.Module, eval_batches: Sequence[Mapping], *, seed: int = 0, num_updates: int = 0,
             weight: str | None = None) -> dict[str, float]:
    """The model's ``compute_loss`` metrics on held-out batches, in eval mode (no dropout; quantizers take
    their argmax), with masks and distractors drawn from ``seed`` so every model sees the same ones.

    Each metric is averaged over batches weighted by the metric ``weight`` (e.g. ``num_masked``, the
    number of frames the loss was computed on), or by the number of utterances; the total of ``weight``
    is returned under its own name. ``loss`` is the model's training loss.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    total = 0.0
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for b in eval_batches:
                loss, metrics = model.compute_loss(move_to(dict(b), device), num_updates)
                w = float(metrics[weight]) if weight else float(len(b["lengths"]))
                for k, v in {"loss": loss, **metrics}.items():
                    if k != weight:
                        sums[k] = sums.get(k, 0.0) + float(v) * w
                total += w
    finally:
        model.train(was_training)
    out = {k: v / total for k, v in sums.items()}
    if weight:
        out[weight] = total
    return out


def features_of(model: torch.nn.Module, layer: Any = None, device: torch.device | str | None = None
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``waveform (T,) -> frames (T', C)``: the model's ``extract_features`` at ``layer`` (frozen, eval mode)."""
    device = device or next(model.parameters()).device
    kwargs = {} if layer is None else {"layer": layer}

    def featurize(wav: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            out = model.extract_features(wav[None].to(device), **kwargs)
        finally:
            model.train(was_training)
        return (out[0] if isinstance(out, tuple) else out)[0].cpu()

    return featurize


def units_of(model: torch.nn.Module, device: torch.device | str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``waveform (T,) -> codes (T', G)``: a quantizing model's deterministic units."""
    device = device or next(model.parameters()).device
    return lambda wav: model.units(wav[None].to(device))[0].cpu()


def unit_sequences(model: torch.nn.Module, utterances: Sequence, root: str | os.PathLike) -> list[torch.Tensor]:
    """One sequence of unit ids (:func:`~speechssl.nn.quantizers.codes_to_ids`) per utterance."""
    units = units_of(model)
    with torch.no_grad():
        return [codes_to_ids(units(load_audio(Path(root) / u.path)), model.cfg.num_vars) for u in utterances]


@torch.no_grad()
def masked_prediction(bert: torch.nn.Module, vocab: UnitVocabulary, sequences: Sequence[torch.Tensor], *,
                      seed: int = 0) -> tuple[dict[str, float], int]:
    """Masked-unit accuracy of a unit BERT and of two predictors that read no context beyond a neighbour:
    the most frequent unit, and a copy of the nearest unmasked unit (left first), on the same span masks.

    Returns ``({predictor: accuracy}, masked units)``.
    """
    was_training = bert.training
    bert.eval()
    device = next(bert.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    hits = {"BERT": 0, "most frequent unit": 0, "copy nearest unmasked unit": 0}
    total = 0
    try:
        for s in sequences:
            tokens = vocab.encode(s)[None][:, :bert.cfg.max_positions]
            lengths = torch.tensor([tokens.shape[1]])
            mask = bert.cfg.mask.sample(lengths, tokens.shape[1], generator=gen)
            pred = bert.lm_head(bert(tokens.masked_fill(mask, bert.cfg.mask_id).to(device), lengths.to(device)).x)
            t, m = tokens[0], mask[0]
            idx = torch.arange(len(t))
            visible = idx[~m]
            if len(visible) == 0 or not bool(m.any()):
                continue
            nearest = visible[(idx[:, None] - visible[None, :]).abs().argmin(1)]
            hits["BERT"] += int((pred[0].argmax(-1).cpu()[m] == t[m]).sum())
            hits["most frequent unit"] += int((t[m] == len(vocab.SPECIALS)).sum())   # token 3: the most frequent
            hits["copy nearest unmasked unit"] += int((t[nearest][m] == t[m]).sum())
            total += int(m.sum())
    finally:
        bert.train(was_training)
    return {k: v / max(total, 1) for k, v in hits.items()}, total


def unigram_entropy(sequences: Sequence[torch.Tensor], vocab: UnitVocabulary) -> float:
    """Entropy (nats) of the unit frequencies: the loss of a predictor that knows only how common units are."""
    freq = np.bincount(torch.cat([vocab.encode(s) for s in sequences]).numpy(), minlength=len(vocab))
    p = freq[freq > 0] / freq.sum()
    return float(-(p * np.log(p)).sum())
