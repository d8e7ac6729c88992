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
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.units import UnitVocabulary
from ..errors import ConfigError, config_error
from ..nn.conv import lengths_to_padding_mask
from ..nn.losses import masked_token_loss
from ..nn.masking import MaskSpec, corrupt_tokens
from ..nn.transformer import LearnedPositionalEmbedding, TransformerEncoder, TransformerOutput, init_bert_params

__all__ = ["UNIT_BERT_PRESETS", "UnitBert", "UnitBertConfig"]


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

    @property
    def mask(self) -> MaskSpec:
        """Span masking of Sec. 4: ``p = 0.05`` of the tokens start a span of ``M = 10``; at least one span."""
        return MaskSpec(self.mask_start_prob, self.mask_span, min_spans=1)

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
    # tiny: no attention dropout. Its mask over 16 x 4 x 256^2 attention weights per layer took two thirds of a
    # training step on 2 CPU cores (0.30 s per update with it, 0.14 s without, on batches of 4,096 tokens)
    "tiny": {"embed_dim": 128, "num_layers": 2, "num_heads": 4, "ffn_dim": 512, "max_positions": 1024,
             "attention_dropout": 0.0},
}


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
        mask = cfg.mask.sample(lengths, tokens.shape[1])                                              # (B, T)
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
