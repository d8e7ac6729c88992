"""BERT on discrete speech units (vq-wav2vec, Baevski et al. 2020, Sec. 4).

Once audio is a sequence of vq-wav2vec units, algorithms made for text apply to it. The paper
pre-trains a BERT (Devlin et al. 2019) on the unit sequences of Librispeech with one change to
the masking: neighbouring 10 ms units are so correlated that masking single tokens makes the
task too easy, so *spans* are masked (Sec. 4): a share ``p = 0.05`` of positions is drawn as
span starts and the ``M = 10`` tokens from each start are masked (about 40% of the tokens),
and the model predicts them with a cross-entropy over the vocabulary
(:func:`speechssl.nn.masking.span_mask`).

The vocabulary (Sec. 4 / 5.3): each frame's ``G = 2`` codes are one token, and the vocabulary
is the set of codewords that actually occur in the training data (13.5k of the 102.4k possible
for the Gumbel model, 23k for k-means), built here by :class:`UnitVocabulary`.

Model, top-down:

1. token embedding + learned positional embedding, layer norm, dropout;
2. a post-LN Transformer encoder (:class:`speechssl.nn.transformer.TransformerEncoder`);
3. a masked-LM head: ``Linear -> GELU -> LayerNorm -> Linear`` whose output matrix is tied to the
   token embedding (BERT/RoBERTa).

Sizes (Sec. 5.3): BERT base 12 layers, width 768, FFN 3072, 12 heads; the ablation "BERT
small" width 512, FFN 2048, 8 heads, dropout 0.05.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..nn.conv import config_error, lengths_to_padding_mask
from ..nn.losses import masked_token_loss
from ..nn.masking import corrupt_tokens, span_mask
from ..nn.transformer import LearnedPositionalEmbedding, TransformerEncoder, TransformerOutput, init_bert_params

__all__ = [
    "UNIT_BERT_PRESETS", "UNIT_BERT_TRAIN", "UnitBert", "UnitBertConfig", "UnitSequences", "UnitVocabulary",
    "collate_units",
]


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


@dataclass
class UnitBertConfig:
    """Configuration of :class:`UnitBert`; the defaults are BERT base (vq-wav2vec Sec. 5.3)."""

    vocab_size: int                 # len(UnitVocabulary): 3 special tokens + the units seen in the data
    embed_dim: int = 768            # Sec. 5.3 BERT base: model dimension 768
    num_layers: int = 12            # 12 layers
    num_heads: int = 12             # 12 attention heads
    ffn_dim: int = 3072             # inner (FFN) dimension 3072
    dropout: float = 0.1            # BERT base dropout 0.1 (Devlin et al. 2019)
    attention_dropout: float = 0.1  # BERT base attention dropout 0.1
    activation_dropout: float = 0.0
    layer_norm_first: bool = False  # post-LN, as BERT
    layer_drop: float = 0.0
    max_positions: int = 4096       # covers the longest Librispeech utterance (35 s = 3,500 frames)
    mask_start_prob: float = 0.05   # Sec. 4: p = 0.05 of the tokens start a span ...
    mask_span: int = 10             # ... of M = 10 masked tokens
    random_prob: float = 0.0        # Sec. 4 masks spans with <mask> only (BERT's 80/10/10 would be 0.1/0.1)
    keep_prob: float = 0.0
    pad_id: int = UnitVocabulary.PAD
    mask_id: int = UnitVocabulary.MASK
    num_special: int = len(UnitVocabulary.SPECIALS)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        owner = type(self).__name__
        if not isinstance(self.vocab_size, int) or self.vocab_size < self.num_special + 1:
            raise config_error(owner, "vocab_size", f"an integer >= {self.num_special + 1} (len(UnitVocabulary))",
                               self.vocab_size)
        for name in ("embed_dim", "num_layers", "num_heads", "ffn_dim", "max_positions", "mask_span"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise config_error(owner, name, "an integer >= 1", v)
        if self.embed_dim % self.num_heads != 0:
            raise config_error(owner, "num_heads", f"a divisor of embed_dim={self.embed_dim}", self.num_heads)
        for name in ("dropout", "attention_dropout", "activation_dropout", "layer_drop"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise config_error(owner, name, "a probability in [0, 1)", v)
        if not 0.0 < self.mask_start_prob <= 1.0:
            raise config_error(owner, "mask_start_prob", "a probability in (0, 1]", self.mask_start_prob)
        if self.random_prob < 0 or self.keep_prob < 0 or self.random_prob + self.keep_prob > 1:
            raise config_error(owner, "random_prob/keep_prob", "non-negative with a sum <= 1",
                               (self.random_prob, self.keep_prob))

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides) -> "UnitBertConfig":
        """``"base"`` (Sec. 5.3), ``"small"`` (the ablation BERT of Sec. 5.3), ``"reduced"`` (4 layers
        of 256, one GPU) or ``"tiny"`` (2 layers of 128 with 4 heads, about a minute on a CPU)."""
        if name not in UNIT_BERT_PRESETS:
            raise ConfigError(f"UnitBertConfig.preset: expected one of {sorted(UNIT_BERT_PRESETS)}, found {name!r}")
        return cls(vocab_size=vocab_size, **{**UNIT_BERT_PRESETS[name], **overrides})


UNIT_BERT_PRESETS: dict[str, dict] = {
    "base": {},
    "small": {"embed_dim": 512, "ffn_dim": 2048, "num_heads": 8, "dropout": 0.05, "attention_dropout": 0.05},
    "reduced": {"embed_dim": 256, "num_layers": 4, "num_heads": 4, "ffn_dim": 1024, "max_positions": 2048},
    "tiny": {"embed_dim": 128, "num_layers": 2, "num_heads": 4, "ffn_dim": 512, "max_positions": 1024},
}


#: Training settings: fields of :class:`speechssl.train.TrainConfig`, where a "sample" is one unit
#: token: ``max_batch_samples`` is the token budget of a batch (fairseq ``--max-tokens``) and
#: ``crop_samples`` the longest sequence (longer ones are cropped at a random start by
#: :class:`UnitSequences`). fairseq's ``polynomial_decay`` with power 1 is the linear warm-up and
#: linear decay of the paper: schedule ``polynomial`` down to ``min_lr = 0``.
UNIT_BERT_TRAIN: dict[str, dict] = {
    # Sec. 5.3 (BERT base): the learning rate is warmed up over the first 10k updates to 1e-5 and
    # then decayed linearly over 250k updates in total; 128 GPUs with 3,072 tokens each (393k tokens
    # per update).
    "full": {"lr": 1e-5, "schedule": "polynomial", "warmup_steps": 10_000, "max_steps": 250_000, "min_lr": 0.0,
             "max_batch_samples": 3_072, "crop_samples": 3_072, "weight_decay": 0.01, "betas": (0.9, 0.98),
             "eps": 1e-6},
    # one GPU: 20k updates of 16k tokens, sequences of up to 1,024 units
    "reduced": {"lr": 5e-4, "schedule": "polynomial", "warmup_steps": 1_000, "max_steps": 20_000, "min_lr": 0.0,
                "max_batch_samples": 16_384, "crop_samples": 1_024, "weight_decay": 0.01, "betas": (0.9, 0.98),
                "eps": 1e-6},
    # 2 CPU cores, about a minute: 300 updates of 4k tokens, sequences of up to 256 units
    "tiny": {"lr": 1e-3, "schedule": "polynomial", "warmup_steps": 30, "max_steps": 300, "min_lr": 0.0,
             "max_batch_samples": 4_096, "crop_samples": 256, "weight_decay": 0.01, "betas": (0.9, 0.98),
             "eps": 1e-6},
}


class UnitSequences(Dataset):
    """Token sequences (one per utterance) for :class:`speechssl.train.Trainer`.

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


class MaskedLMHead(nn.Module):
    """``Linear -> GELU -> LayerNorm -> Linear(tied to the token embedding) + bias``: ``(N, C)`` -> ``(N, V)``."""

    def __init__(self, embed_dim: int, embedding: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.embedding = embedding                       # shares its weight: (V, C)
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(F.gelu(self.dense(x)))
        return F.linear(x, self.embedding.weight) + self.bias


class UnitBert(nn.Module):
    """A BERT over unit tokens trained to fill in masked spans."""

    def __init__(self, cfg: UnitBertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cfg.validate()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.pos_embedding = LearnedPositionalEmbedding(cfg.max_positions, cfg.embed_dim)
        self.encoder = TransformerEncoder(cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.ffn_dim,
                                          dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                                          activation_dropout=cfg.activation_dropout,
                                          layer_norm_first=cfg.layer_norm_first, layer_drop=cfg.layer_drop)
        self.lm_head = MaskedLMHead(cfg.embed_dim, self.token_embedding)
        self.apply(init_bert_params)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None, *,
                return_hidden_states: bool = False) -> TransformerOutput:
        """``tokens`` ``(B, T)`` int64 -> :class:`TransformerOutput` with ``x`` ``(B, T, C)``."""
        if tokens.dim() != 2:
            raise ValueError(f"UnitBert expects tokens of shape (B, T), got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size}), found "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        padding_mask = None if lengths is None else lengths_to_padding_mask(lengths.to(tokens.device), tokens.shape[1])
        x = self.token_embedding(tokens) + self.pos_embedding(tokens)   # (B, T, C)
        return self.encoder(x, padding_mask, return_hidden_states=return_hidden_states)

    def compute_loss(self, batch: Mapping, num_updates: int = 0) -> tuple[torch.Tensor, dict]:
        """Mask spans, predict the masked tokens. ``batch``: ``tokens`` ``(B, T)``, ``lengths`` ``(B,)``.

        Metrics: ``acc`` (masked-token accuracy), ``mask_frac`` (share of valid tokens masked),
        ``num_masked``.
        """
        if not isinstance(batch, Mapping) or "tokens" not in batch:
            raise ConfigError("UnitBert.compute_loss: expected a batch dict with 'tokens' (B, T) and 'lengths' (B,) "
                              "(see collate_units)")
        tokens = batch["tokens"]
        if tokens.dim() != 2 or tokens.numel() == 0:
            raise ConfigError(f"UnitBert.compute_loss: empty batch or tokens not (B, T): {tuple(tokens.shape)}")
        lengths = batch.get("lengths")
        if lengths is None:
            lengths = (tokens != self.cfg.pad_id).sum(1)
        lengths = lengths.to(tokens.device)
        cfg = self.cfg
        mask = span_mask(lengths, tokens.shape[1], cfg.mask_start_prob, cfg.mask_span, min_spans=1)   # (B, T)
        inputs, targets = corrupt_tokens(tokens, mask, cfg.mask_id, random_prob=cfg.random_prob,
                                         keep_prob=cfg.keep_prob, random_range=(cfg.num_special, cfg.vocab_size))
        x = self(inputs, lengths).x                                                                   # (B, T, C)
        sel = targets != -100
        logits = self.lm_head(x[sel]).unsqueeze(0)                                                    # (1, M, V)
        loss, acc, count = masked_token_loss(logits, targets[sel].unsqueeze(0))
        metrics = {"acc": acc, "mask_frac": float(count) / max(int(lengths.sum()), 1), "num_masked": float(count)}
        return loss, metrics

    @torch.no_grad()
    def extract_features(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None,
                         layer: int | None = None) -> torch.Tensor:
        """Hidden states ``(B, T, C)`` of layer ``layer`` (1-based; default: the last) without masking."""
        out = self(tokens, lengths, return_hidden_states=True)
        return out.x if layer is None else out.hidden_states[layer]
