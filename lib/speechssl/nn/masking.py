"""Span masking and BERT-style token corruption.

**Span masking** (:func:`span_mask`). vq-wav2vec's BERT (Baevski et al. 2020, Sec. 4) masks
*spans* of consecutive tokens rather than single tokens, because neighbouring 10 ms units are
strongly correlated and a single masked token is easy to fill in from its neighbours: sample
a proportion ``p = 0.05`` of all positions as span starts (without replacement) and mask the
``M = 10`` tokens from every start; spans may overlap, so about ``1 - (1 - p)^M``, i.e. 40%, of
the tokens end up masked (fewer at the edges). wav2vec 2.0 (Sec. 3.1) masks its latent frames
the same way with ``p = 0.065, M = 10`` (about 49%), and HuBERT with ``p = 0.08``.

The number of starts per sequence of length ``L`` is ``floor(p * L + u)`` with ``u ~ U[0, 1)``
(an unbiased rounding of ``p * L``, as fairseq's ``compute_mask_indices``, whose ``mask_prob``
is ``p * M``), at least ``min_spans``. As there, the starts are drawn without replacement from
``0 .. L - M - 1`` (from the first ``n + 1`` positions when fewer than ``n + 1`` remain, in which
case spans are cut at ``L``).

**Token corruption** (:func:`corrupt_tokens`). The masked positions become the prediction
targets; their inputs are replaced by a ``<mask>`` token, or (BERT, Devlin et al. 2019) 80% by
``<mask>``, 10% by a random token and 10% left unchanged when ``random_prob = keep_prob = 0.1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import config_error

__all__ = ["MaskSpec", "corrupt_tokens", "expected_mask_fraction", "span_mask"]


def expected_mask_fraction(start_prob: float, span_length: int) -> float:
    """``1 - (1 - p)^M``: the masked share of a long sequence (0.40 for p = 0.05, M = 10)."""
    return 1.0 - (1.0 - start_prob) ** span_length


@dataclass(frozen=True)
class MaskSpec:
    """One span-masking setting, shared by every model that masks: ``p``, ``M`` and the minimum.

    ``start_prob`` is the papers' ``p`` (share of positions that start a span), ``length`` their
    ``M`` and ``min_spans`` the fewest spans per sequence. fairseq states the same setting as
    ``mask_prob = p * M`` (:meth:`fairseq`, :attr:`mask_prob`). The book's models:

    - vq-wav2vec's BERT (Sec. 4): ``p = 0.05, M = 10``, at least one span;
    - wav2vec 2.0 (Sec. 3.1): ``mask_prob = 0.65, M = 10`` (p = 0.065), at least two spans
      (fairseq ``apply_mask``: ``min_masks=2``);
    - CTC fine-tuning (fairseq ``base_10m.yaml``): ``mask_prob = 0.65, M = 10`` in time,
      ``mask_channel_prob = 0.25, M = 64`` over channels (no minimum);
    - HuBERT (Sec. IV-C): ``mask_prob = 0.80, M = 10`` (p = 0.08), at least two spans.
    """

    start_prob: float
    length: int
    min_spans: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.length, int) or self.length < 1:
            raise config_error("MaskSpec", "length", "an integer >= 1", self.length)
        if not 0.0 <= self.start_prob <= 1.0:
            raise config_error("MaskSpec", "start_prob", "a probability in [0, 1]", self.start_prob)
        if not isinstance(self.min_spans, int) or self.min_spans < 0:
            raise config_error("MaskSpec", "min_spans", "an integer >= 0", self.min_spans)

    @classmethod
    def fairseq(cls, mask_prob: float, length: int, min_spans: int = 0) -> "MaskSpec":
        """The spec of fairseq's ``mask_prob`` (``p * M``), ``mask_length`` and ``min_masks``."""
        return cls(mask_prob / length, length, min_spans)

    @property
    def mask_prob(self) -> float:
        """fairseq's ``mask_prob``: ``p * M``."""
        return self.start_prob * self.length

    @property
    def expected_fraction(self) -> float:
        """The masked share of a long sequence, ``1 - (1 - p)^M`` (spans overlap)."""
        return expected_mask_fraction(self.start_prob, self.length)

    def sample(self, lengths: torch.Tensor, max_len: int, *, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """``(B, max_len)`` bool mask for sequences of ``lengths`` (:func:`span_mask`)."""
        return span_mask(lengths, max_len, self.start_prob, self.length, min_spans=self.min_spans,
                         generator=generator)


def span_mask(lengths: torch.Tensor, max_len: int, start_prob: float, span_length: int, *,
              min_spans: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random spans of ``span_length`` positions starting at a share ``start_prob`` of positions.

    Args:
        lengths: ``(B,)`` valid length of each sequence; positions ``>= lengths[b]`` are never masked.
        max_len: ``T``, the padded length.
        start_prob: ``p``, share of positions drawn as span starts (vq-wav2vec BERT: 0.05).
        span_length: ``M``, positions masked from each start (vq-wav2vec BERT: 10).
        min_spans: at least this many spans per non-empty sequence (e.g. 1 so that every
            sequence contributes to a masked-prediction loss).
        generator: optional generator for reproducible masks (its device is used).

    Returns:
        ``(B, T)`` bool, ``True`` at masked positions, on the device of ``lengths``.
    """
    if not 0.0 <= start_prob <= 1.0:
        raise config_error("span_mask", "start_prob", "a probability in [0, 1]", start_prob)
    if span_length < 1:
        raise config_error("span_mask", "span_length", "an integer >= 1", span_length)
    if min_spans < 0:
        raise config_error("span_mask", "min_spans", "an integer >= 0", min_spans)
    dev = generator.device if generator is not None else lengths.device
    lens = lengths.to(torch.int64).cpu().tolist()
    mask = torch.zeros(len(lens), max_len, dtype=torch.bool, device=dev)
    for b, length in enumerate(lens):
        length = min(int(length), max_len)
        if length <= 0:
            continue
        u = float(torch.rand((), generator=generator, device=dev))
        n_starts = max(int(math.floor(start_prob * length + u)), min_spans)
        # fairseq compute_mask_indices: starts are drawn without replacement from 0 .. L - M - 1, or from
        # n_starts + 1 positions when that range is too small (a span may then be cut at L)
        n_positions = length - span_length
        if n_positions <= n_starts:
            n_positions = n_starts + 1
        n_positions = min(n_positions, length)
        n_starts = min(n_starts, n_positions)
        if n_starts == 0:
            continue
        starts = torch.randperm(n_positions, generator=generator, device=dev)[:n_starts]      # (S,)
        pos = (starts[:, None] + torch.arange(span_length, device=dev)[None, :]).reshape(-1)  # (S*M,)
        mask[b, pos[pos < length]] = True
    return mask.to(lengths.device)


def corrupt_tokens(tokens: torch.Tensor, mask: torch.Tensor, mask_id: int, *, random_prob: float = 0.0,
                   keep_prob: float = 0.0, random_range: tuple[int, int] | None = None,
                   ignore_index: int = -100, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT inputs and targets from ``tokens`` and a boolean ``mask``.

    Args:
        tokens: ``(B, T)`` int64 token ids.
        mask: ``(B, T)`` bool, the positions to predict.
        mask_id: id of the ``<mask>`` token.
        random_prob: share of masked positions given a random token instead (BERT: 0.1).
        keep_prob: share of masked positions left unchanged (BERT: 0.1).
        random_range: ``[low, high)`` ids a random replacement is drawn from (the real units,
            not the special tokens); required when ``random_prob > 0``.

    Returns:
        ``(inputs, targets)``: ``inputs`` ``(B, T)`` with the masked positions replaced, and
        ``targets`` ``(B, T)`` equal to ``tokens`` at masked positions and ``ignore_index`` elsewhere.
    """
    if tokens.shape != mask.shape:
        raise ValueError(f"tokens and mask must have the same shape, got {tuple(tokens.shape)} and {tuple(mask.shape)}")
    if random_prob < 0 or keep_prob < 0 or random_prob + keep_prob > 1:
        raise config_error("corrupt_tokens", "random_prob/keep_prob", "non-negative with a sum <= 1",
                           (random_prob, keep_prob))
    targets = torch.where(mask, tokens, torch.full_like(tokens, ignore_index))
    inputs = tokens.clone()
    dev = generator.device if generator is not None else tokens.device
    u = torch.rand(tokens.shape, generator=generator, device=dev).to(tokens.device)
    replace_mask = mask & (u >= random_prob + keep_prob)
    inputs[replace_mask] = mask_id
    if random_prob > 0:
        if random_range is None or random_range[1] <= random_range[0]:
            raise config_error("corrupt_tokens", "random_range", "[low, high) with high > low", random_range)
        rnd = torch.randint(random_range[0], random_range[1], tokens.shape, generator=generator,
                            device=dev).to(tokens.device)
        random_mask = mask & (u < random_prob)
        inputs[random_mask] = rnd[random_mask]
    return inputs, targets
