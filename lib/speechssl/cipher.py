"""wav2vec-U's first test: a substitution cipher of the true phone segments, and generators that read it.

The GAN of :mod:`speechssl.models.wav2vec_u` is hard to debug on speech, so chapter 6 first gives it the
easiest input there is: the segments of the true phone alignment, each phone replaced by a fixed random
vector. One linear generator reads that code exactly (:func:`solution_weights`); another reads each code as
the text phone of the same frequency rank (:func:`frequency_code`), which is all that the phones' frequencies
can tell. Both are built here so that a discriminator can be asked which of them it tells from text
(:meth:`speechssl.wav2vec_u.Stages.discriminator_probe`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

from .data.phones import PHONES
from .unpaired import pad_sequences

__all__ = ["true_segments", "cipher_features", "solution_weights", "frequency_code", "reading_weights"]


def true_segments(utterance, inventory: Sequence[str] = PHONES) -> list[int]:
    """The phone ids of an utterance's alignment, one per aligned segment (``sil`` included): the segments
    a perfect segmenter would find."""
    index = {p: i for i, p in enumerate(inventory)}
    return [index[p] for p, _, _ in utterance.alignment]


def cipher_features(utterances: Sequence, dim: int, seed: int = 0, noise: float = 0.0,
                    inventory: Sequence[str] = PHONES) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A substitution cipher of the true segments: phone ``p`` becomes a fixed random vector ``E[p]`` (plus
    Gaussian noise of standard deviation ``noise``). Returns the padded features (N, T, dim), the lengths
    and ``E``."""
    g = torch.Generator().manual_seed(seed)
    code = torch.randn(len(inventory), dim, generator=g)
    seqs = [torch.tensor(true_segments(u, inventory)) for u in utterances]
    feats = [code[s] + noise * torch.randn(len(s), dim, generator=g) for s in seqs]
    x, lengths = pad_sequences(feats)
    return x, lengths, code


def solution_weights(code: torch.Tensor, kernel: int, margin: float) -> torch.Tensor:
    """Generator weights (V, D, kernel) that solve the cipher of ``code`` (V, D): on the tap that reads the
    current segment (``kernel // 2``, the generator's left padding), phone ``p``'s filter is ``E[p]`` scaled so
    that segment ``E[p]`` gives phone ``p`` the logit ``margin``; the other taps are zero."""
    w = torch.zeros(code.size(0), code.size(1), kernel)
    w[:, :, kernel // 2] = margin * code / code.square().sum(1, keepdim=True)
    return w


def frequency_code(audio: Iterable[str], text: Iterable[str]) -> dict[str, str]:
    """Each phone of ``audio`` (a stream of phone tokens) -> the phone of ``text`` with the same frequency
    rank. When the text uses fewer phones, the audio's rarest ones are read, in rank order, as the audio phones
    that the text never uses (a name the text lacks, wrong like any other), so the reading stays one-to-one."""
    ranked = [p for p, _ in Counter(audio).most_common()]
    by_text = [p for p, _ in Counter(text).most_common()]
    return dict(zip(ranked, by_text + [p for p in ranked if p not in by_text]))


def reading_weights(code: torch.Tensor, kernel: int, margin: float, reading: Mapping[str, str],
                    inventory: Sequence[str] = PHONES) -> torch.Tensor:
    """Generator weights (V, D, kernel) that read the segment of phone ``a`` as phone ``reading[a]`` with the
    logit ``margin`` (:func:`solution_weights` with each filter moved to the phone it is read as); phones
    that nothing is read as get zero filters."""
    index = {p: i for i, p in enumerate(inventory)}
    solved = solution_weights(code, kernel, margin)
    w = torch.zeros_like(solved)
    for a, b in reading.items():
        w[index[b]] = solved[index[a]]
    return w
