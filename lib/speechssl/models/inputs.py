"""The audio input of a batch, and the one length check every audio model makes.

Utterances too short for a model (fewer frames than its loss needs) are dropped once, when the
training set is built (:func:`speechssl.engine.drop_short_utterances` with the model's
``min_input_samples``), as fairseq's ``min_sample_size`` does. :func:`check_min_samples` is the
cheap guard a model keeps for batches built by hand: it names the shortest utterance and the
minimum, instead of failing deep inside the loss.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import AudioError, ConfigError
from ..frames import SAMPLE_RATE

__all__ = ["audio_from_batch", "check_min_samples"]


def audio_from_batch(batch: Mapping, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(audio (B, T), lengths (B,))`` from a :func:`~speechssl.data.dataset.collate_audio` batch.

    ``lengths`` falls back to ``~padding_mask`` and then to the full width.
    """
    if not isinstance(batch, Mapping) or "audio" not in batch:
        found = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ConfigError(f"{owner}.compute_loss: expected a batch dict with 'audio' (B, T) and 'lengths' (B,), "
                          f"found {found}")
    audio = batch["audio"]
    if not torch.is_tensor(audio) or audio.dim() != 2:
        raise ValueError(f"{owner}: batch['audio'] must have shape (B, T), got "
                         f"{tuple(audio.shape) if torch.is_tensor(audio) else type(audio).__name__}")
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ConfigError(f"{owner}: empty batch (audio of shape {tuple(audio.shape)}); check the batch sampler")
    if batch.get("lengths") is not None:
        lengths = torch.as_tensor(batch["lengths"]).to(audio.device, torch.int64)
    elif batch.get("padding_mask") is not None:
        lengths = (~batch["padding_mask"].to(torch.bool)).sum(1).to(audio.device)
    else:
        lengths = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.int64, device=audio.device)
    if lengths.shape != (audio.shape[0],):
        raise ValueError(f"{owner}: batch['lengths'] must have shape ({audio.shape[0]},), got {tuple(lengths.shape)}")
    if int(lengths.max()) > audio.shape[1] or int(lengths.min()) < 0:
        raise ValueError(f"{owner}: lengths must lie in [0, {audio.shape[1]}], got {lengths.tolist()}")
    return audio, lengths


def check_min_samples(lengths: torch.Tensor, min_samples: int, owner: str, why: str) -> None:
    """An :class:`~speechssl.errors.AudioError` when an utterance has fewer than ``min_samples`` samples.

    ``why`` says what the minimum is for (e.g. "101 frames: the target and 100 distractors").
    """
    shortest = int(lengths.min())
    if shortest < min_samples:
        raise AudioError(
            f"{owner}: an utterance of this batch has {shortest} samples ({1000 * shortest / SAMPLE_RATE:.0f} ms); "
            f"the model needs at least {min_samples} samples ({why}). Drop shorter utterances before batching "
            f"(speechssl.engine.drop_short_utterances with the model's min_input_samples) or use longer crops")
