"""Discrete unit sequences for a BERT: the unit vocabulary, token datasets and their collate function.

Once audio is a sequence of units (vq-wav2vec codes, k-means clusters), algorithms made for text
apply to it. The vocabulary (vq-wav2vec Sec. 4 / 5.3) holds the codewords that actually occur in
the training data (13.5k of the 102.4k possible for the Gumbel model, 23k for k-means), plus the
special tokens a masked language model needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError

__all__ = ["UnitSequences", "UnitVocabulary", "collate_units"]


class UnitVocabulary:
    """Token ids for unit ids: 3 special tokens, then the units seen in the data, most frequent first.

    ``<pad>`` = 0, ``<mask>`` = 1, ``<unk>`` = 2 (a unit absent from the training data), and unit
    ``units[i]`` has token id ``3 + i``. Unit ids are the integers of
    :meth:`speechssl.models.vq_wav2vec.VQWav2Vec.unit_ids` (``g0 * V + g1`` for two groups), or
    any other non-negative integers (k-means cluster ids, ...).
    """

    PAD, MASK, UNK = 0, 1, 2
    SPECIALS = ("<pad>", "<mask>", "<unk>")

    def __init__(self, units: Sequence[int]) -> None:
        self.units = [int(u) for u in units]
        if len(set(self.units)) != len(self.units) or any(u < 0 for u in self.units):
            raise ConfigError("UnitVocabulary.units: expected distinct non-negative unit ids")
        self._index = {u: i + len(self.SPECIALS) for i, u in enumerate(self.units)}
        self._lookup: torch.Tensor | None = None

    @classmethod
    def build(cls, sequences: Iterable, min_count: int = 1) -> "UnitVocabulary":
        """The units occurring at least ``min_count`` times in ``sequences`` (1-D arrays of unit ids;
        negative entries are padding and ignored), ordered by decreasing count then id."""
        counts: Counter = Counter()
        for seq in sequences:
            arr = np.asarray(seq.cpu() if torch.is_tensor(seq) else seq).reshape(-1)
            counts.update(arr[arr >= 0].tolist())
        units = sorted((u for u, c in counts.items() if c >= min_count), key=lambda u: (-counts[u], u))
        if not units:
            raise ConfigError("UnitVocabulary.build: no unit occurs in the given sequences")
        return cls(units)

    def __len__(self) -> int:
        return len(self.SPECIALS) + len(self.units)

    def encode(self, unit_ids) -> torch.Tensor:
        """Unit ids (any shape) -> token ids; negative ids -> ``<pad>``, unseen ids -> ``<unk>``."""
        ids = torch.as_tensor(np.asarray(unit_ids) if not torch.is_tensor(unit_ids) else unit_ids).long()
        if self._lookup is None:
            top = max(self.units) + 1
            lookup = torch.full((top,), self.UNK, dtype=torch.int64)
            lookup[torch.tensor(self.units)] = torch.arange(len(self.units)) + len(self.SPECIALS)
            self._lookup = lookup
        lookup = self._lookup.to(ids.device)
        inside = (ids >= 0) & (ids < lookup.numel())
        out = torch.full_like(ids, self.UNK)
        out[inside] = lookup[ids[inside]]
        out[ids < 0] = self.PAD
        return out

    def decode(self, tokens) -> torch.Tensor:
        """Token ids -> unit ids, -1 for the special tokens."""
        t = torch.as_tensor(tokens).long()
        table = torch.tensor([-1] * len(self.SPECIALS) + self.units, dtype=torch.int64, device=t.device)
        return table[t]



def collate_units(sequences: Sequence[torch.Tensor], *, max_len: int | None = None, pad_id: int = UnitVocabulary.PAD,
                  generator: torch.Generator | None = None) -> dict:
    """Pad token sequences into a batch ``{"tokens": (B, T) int64, "lengths": (B,) int64}``.

    Sequences longer than ``max_len`` are cropped at a random start (drawn from ``generator``).
    """
    if len(sequences) == 0:
        raise ConfigError("collate_units got an empty batch")
    seqs = []
    for s in sequences:
        s = torch.as_tensor(s).long().reshape(-1)
        if max_len is not None and s.numel() > max_len:
            start = int(torch.randint(0, s.numel() - max_len + 1, (), generator=generator))
            s = s[start:start + max_len]
        seqs.append(s)
    lengths = torch.tensor([s.numel() for s in seqs], dtype=torch.int64)
    tokens = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.int64)
    for b, s in enumerate(seqs):
        tokens[b, : s.numel()] = s
    return {"tokens": tokens, "lengths": lengths}



class UnitSequences(Dataset):
    """Token sequences (one per utterance) for :class:`speechssl.engine.Trainer`.

    Items are ``(T,)`` int64 token tensors (from :meth:`UnitVocabulary.encode`); sequences longer
    than ``max_len`` are cropped to a window whose start is drawn from a generator seeded with
    ``(seed, epoch, index)``, so an epoch's crops do not depend on the order of access (exact
    resume). :attr:`sizes` are the cropped lengths, used for token-budget batching; batches are
    made by :func:`collate_units`.
    """

    def __init__(self, sequences: Sequence, *, max_len: int | None = None, seed: int = 0) -> None:
        self.sequences = [torch.as_tensor(np.asarray(q) if not torch.is_tensor(q) else q).long().reshape(-1)
                          for q in sequences]
        if not self.sequences:
            raise ConfigError("UnitSequences: no sequences")
        empty = [i for i, q in enumerate(self.sequences) if q.numel() == 0]
        if empty:
            raise ConfigError(f"UnitSequences: sequences {empty[:5]} are empty; drop them before training")
        if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
            raise ConfigError(f"UnitSequences.max_len: expected an integer >= 1 or None, found {max_len!r}")
        self.max_len, self.seed, self.epoch = max_len, seed, 0

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def sizes(self) -> np.ndarray:
        n = np.array([q.numel() for q in self.sequences])
        return n if self.max_len is None else np.minimum(n, self.max_len)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> torch.Tensor:
        q = self.sequences[index]
        if self.max_len is None or q.numel() <= self.max_len:
            return q
        start = int(np.random.default_rng((self.seed, self.epoch, index)).integers(0, q.numel() - self.max_len + 1))
        return q[start:start + self.max_len]
