"""Measures of what a model learned: unit quality, codebook use, phone and word error rates.

Unit quality follows the HuBERT paper (Hsu et al. 2021, Sec. IV-E "Metrics of Target
Quality"): with ``y`` the phone label of a frame and ``z`` its cluster (unit), estimate the
joint distribution ``p(y, z)`` by counting co-occurrences over all frames, then

- phone purity    = E_{p(z)} [ max_y p(y | z) ]   (how phone-like a cluster is; higher is better)
- cluster purity  = E_{p(y)} [ max_z p(z | y) ]   (how concentrated a phone is on one cluster)
- PNMI            = I(y; z) / H(y)                (phone-normalised mutual information: the share of
  the phone label's uncertainty that the cluster removes)

Phone purity rises with the number of clusters K and cluster purity falls, so they are read
together; PNMI is the single number the paper uses to rank teachers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torchaudio


def cooccurrence(phones: np.ndarray, units: np.ndarray, num_phones: int | None = None,
                 num_units: int | None = None) -> np.ndarray:
    """Count matrix ``C[y, z]``: how many frames have phone ``y`` and unit ``z``.

    ``phones`` and ``units`` are integer arrays of the same length (one entry per frame).
    """
    phones = np.asarray(phones).reshape(-1)
    units = np.asarray(units).reshape(-1)
    if phones.shape != units.shape:
        raise ValueError(f"phones and units must have one entry per frame; got {phones.shape} and {units.shape}")
    if phones.size == 0:
        raise ValueError("no frames: phones and units are empty")
    if phones.min() < 0 or units.min() < 0:
        raise ValueError("phone and unit ids must be non-negative (drop padding frames first)")
    num_phones = int(phones.max()) + 1 if num_phones is None else num_phones
    num_units = int(units.max()) + 1 if num_units is None else num_units
    flat = phones.astype(np.int64) * num_units + units.astype(np.int64)
    return np.bincount(flat, minlength=num_phones * num_units).reshape(num_phones, num_units)


@dataclass(frozen=True)
class UnitQuality:
    """Phone purity, cluster purity and PNMI of one labelling (HuBERT paper definitions)."""

    phone_purity: float
    cluster_purity: float
    pnmi: float
    num_frames: int
    used_units: int

    def as_dict(self) -> dict:
        return {"phone_purity": self.phone_purity, "cluster_purity": self.cluster_purity,
                "pnmi": self.pnmi, "num_frames": self.num_frames, "used_units": self.used_units}


def unit_quality_from_counts(counts: np.ndarray) -> UnitQuality:
    """Purity and PNMI from a co-occurrence count matrix ``counts[phone, unit]``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("the co-occurrence matrix is empty")
    p_yz = counts / total
    p_y = p_yz.sum(1)  # (P,)
    p_z = p_yz.sum(0)  # (K,)
    # phone purity: sum_z p(z) max_y p(y|z) = sum_z max_y p(y, z)
    phone_purity = p_yz.max(0).sum()
    # cluster purity: sum_y p(y) max_z p(z|y) = sum_y max_z p(y, z)
    cluster_purity = p_yz.max(1).sum()
    nz = p_yz > 0
    mi = (p_yz[nz] * np.log(p_yz[nz] / np.outer(p_y, p_z)[nz])).sum()
    h_y = -(p_y[p_y > 0] * np.log(p_y[p_y > 0])).sum()
    pnmi = mi / h_y if h_y > 0 else 0.0
    return UnitQuality(float(phone_purity), float(cluster_purity), float(pnmi),
                       int(total), int((counts.sum(0) > 0).sum()))


def unit_quality(phones: np.ndarray, units: np.ndarray, num_phones: int | None = None,
                 num_units: int | None = None) -> UnitQuality:
    """Phone purity, cluster purity and PNMI of frame-aligned ``phones`` and ``units``."""
    return unit_quality_from_counts(cooccurrence(phones, units, num_phones, num_units))


def entropy_perplexity(probs: torch.Tensor) -> torch.Tensor:
    """``exp(H(p))`` along the last dimension of a (batch of) distribution(s)."""
    # [eq entropy]
    p = probs.clamp_min(0)
    p = p / p.sum(-1, keepdim=True)
    logp = torch.where(p > 0, p.log(), torch.zeros_like(p))
    return torch.exp(-(p * logp).sum(-1))
    # [/eq entropy]


def codebook_perplexity(probs: torch.Tensor) -> torch.Tensor:
    """Perplexity of the average codeword distribution, one value per group.

    ``probs``: ``(N, G, V)`` (or ``(N, V)`` for one group) soft or one-hot assignments of ``N``
    frames to the ``V`` entries of each of ``G`` codebooks. Following wav2vec 2.0 (Sec. 3.2,
    diversity loss) and fairseq's ``prob_perplexity``/``code_perplexity``, the assignments are
    averaged over the frames first, then ``exp(entropy)`` is taken per group. It ranges from 1
    (every frame uses the same entry: collapse) to ``V`` (uniform use). The sum over groups is
    the number fairseq logs; its maximum is ``G * V``.
    """
    if probs.dim() == 2:
        probs = probs.unsqueeze(1)
    if probs.dim() != 3:
        raise ValueError(f"probs must have shape (N, G, V) or (N, V); got {tuple(probs.shape)}")
    # [eq perplexity]
    return entropy_perplexity(probs.float().mean(0))  # (G,)
    # [/eq perplexity]


def code_perplexity(codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Perplexity of hard code assignments ``codes`` (``(N,)`` or ``(N, G)`` integer ids)."""
    if codes.dim() == 1:
        codes = codes.unsqueeze(1)
    one_hot = torch.nn.functional.one_hot(codes.long(), num_codes).float()  # (N, G, V)
    return codebook_perplexity(one_hot)


@dataclass(frozen=True)
class CodebookUsage:
    """How a quantizer's codes are used over ``N`` frames of ``G`` groups of ``V`` entries.

    ``entries_used``: distinct entries per group; ``code_perplexity``: the sum over groups of each group's
    perplexity (fairseq's ``code_perplexity``, from 1 per group at collapse to ``G V``); ``units``: ``(N,)``
    dense unit index per frame (the distinct ``G``-tuples numbered by id); ``units_used``: distinct
    tuples; ``unit_perplexity``: perplexity of the tuples.
    """

    entries_used: tuple[int, ...]
    code_perplexity: float
    units: np.ndarray
    units_used: int
    unit_perplexity: float


def codebook_usage(codes: np.ndarray | torch.Tensor, num_vars: int) -> CodebookUsage:
    """:class:`CodebookUsage` of ``(N, G)`` integer codes with ``num_vars`` entries per group."""
    from .nn.quantizers import codes_to_ids

    codes = torch.as_tensor(np.asarray(codes)).long()
    if codes.dim() == 1:
        codes = codes.unsqueeze(1)
    ids = codes_to_ids(codes, num_vars).numpy()
    dense = np.unique(ids, return_inverse=True)[1].reshape(-1)
    return CodebookUsage(tuple(int(len(torch.unique(codes[:, g]))) for g in range(codes.shape[1])),
                         float(code_perplexity(codes, num_vars).sum()), dense, int(dense.max()) + 1,
                         float(code_perplexity(torch.from_numpy(dense), int(dense.max()) + 1).sum()))


@dataclass(frozen=True)
class ErrorRate:
    errors: int
    reference_length: int

    @property
    def rate(self) -> float:
        return self.errors / self.reference_length if self.reference_length else float("nan")


def phone_error_rate(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> ErrorRate:
    """Phone error rate: total Levenshtein distance over total reference length (in phones).

    Uses ``torchaudio.functional.edit_distance`` (substitutions, insertions and deletions all
    cost 1). Sequences are lists of phone symbols (or ids).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"expected as many hypotheses as references; got {len(hypotheses)} and {len(references)}")
    errors = sum(torchaudio.functional.edit_distance(list(r), list(h)) for r, h in zip(references, hypotheses))
    return ErrorRate(int(errors), int(sum(len(r) for r in references)))


def word_error_rate(pairs: Sequence[tuple[Sequence[str], Sequence[str]]]) -> ErrorRate:
    """WER of ``(reference, hypothesis)`` letter sequences (as :func:`evaluate_per` returns
    them for a letter vocabulary), split into words at ``|``."""
    from .data.transcripts import letters_to_words

    return phone_error_rate([letters_to_words(r) for r, _ in pairs], [letters_to_words(h) for _, h in pairs])


def aligned_pairs(reference: Sequence, hypothesis: Sequence) -> list[tuple[object, object]]:
    """The ``(reference, hypothesis)`` symbol pairs of a minimum edit-distance alignment (matches and
    substitutions; insertions and deletions pair a symbol with ``None``), for confusion matrices. Ties are
    broken towards substitutions, then deletions."""
    n, m = len(reference), len(hypothesis)
    d = np.zeros((n + 1, m + 1), dtype=np.int64)
    d[:, 0], d[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1]), d[i - 1, j] + 1, d[i, j - 1] + 1)
    pairs: list[tuple[object, object]] = []
    i, j = n, m
    while i or j:
        if i and j and d[i, j] == d[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            pairs.append((reference[i - 1], hypothesis[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i, j] == d[i - 1, j] + 1:
            pairs.append((reference[i - 1], None))
            i -= 1
        else:
            pairs.append((None, hypothesis[j - 1]))
            j -= 1
    return pairs[::-1]


def confusion_counts(references: Sequence[Sequence], hypotheses: Sequence[Sequence], symbols: Sequence) -> np.ndarray:
    """(reference symbol, hypothesis symbol) counts over the aligned pairs of every utterance; insertions and
    deletions are left out."""
    index = {s: i for i, s in enumerate(symbols)}
    counts = np.zeros((len(symbols), len(symbols)), dtype=np.int64)
    for r, h in zip(references, hypotheses):
        for a, b in aligned_pairs(r, h):
            if a is not None and b is not None:
                counts[index[a], index[b]] += 1
    return counts
