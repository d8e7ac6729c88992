"""A Transformer encoder for speech and unit sequences (BERT on units; wav2vec 2.0 and HuBERT later).

Blocks (Vaswani et al. 2017; BERT, Devlin et al. 2019; wav2vec 2.0, Baevski et al. 2020):

- :class:`SelfAttention`: multi-head self-attention computed by
  :func:`torch.nn.functional.scaled_dot_product_attention` (a fused kernel on GPU), with a
  boolean key-padding mask so that no query attends to padding.
- :class:`FeedForward`: ``Linear -> GELU -> dropout -> Linear -> dropout``.
- :class:`EncoderLayer`: attention and feed-forward sub-layers with residual connections,
  either *post-LN* (BERT, wav2vec 2.0 BASE: ``x = LN(x + f(x))``) or *pre-LN* (wav2vec 2.0
  LARGE: ``x = x + f(LN(x))``), chosen with ``layer_norm_first``.
- :class:`TransformerEncoder`: optional positional embedding added to the input, one layer
  norm (at the input for post-LN, at the output for pre-LN), dropout, the layers with
  *LayerDrop* (Fan et al. 2020: in training each layer is skipped with probability
  ``layer_drop``), and optionally every hidden state.
- Positional information: :class:`LearnedPositionalEmbedding` (BERT) and
  :class:`ConvPositionalEmbedding` (wav2vec 2.0 Sec. 2: a grouped convolution of kernel 128
  with 16 groups, weight normalisation and GELU, whose output is added to the input).

Module and parameter names follow torchaudio's ``wav2vec2.components`` (``attention.q_proj``,
``feed_forward.intermediate_dense``, ``final_layer_norm``, ...) so its checkpoints map onto
these modules name for name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import config_error

__all__ = [
    "ConvPositionalEmbedding",
    "EncoderLayer",
    "FeedForward",
    "LearnedPositionalEmbedding",
    "SelfAttention",
    "TransformerEncoder",
    "TransformerOutput",
    "init_bert_params",
]


def init_bert_params(module: nn.Module) -> None:
    """BERT initialisation: ``N(0, 0.02)`` for linear and embedding weights, zero biases.

    (fairseq ``init_bert_params``; the padding embedding row is zeroed.)
    """
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    Shapes: ``x`` ``(B, T, C)``, ``padding_mask`` ``(B, T)`` bool (``True`` = padding) or ``None``
    -> ``(B, T, C)``.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads != 0:
            raise config_error("SelfAttention", "num_heads", f"a divisor of embed_dim={embed_dim}", num_heads)
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"SelfAttention expects x of shape (B, T, {self.embed_dim}), got {tuple(x.shape)}")
        bsz, tsz, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(bsz, tsz, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        attn_mask = None
        if padding_mask is not None:
            keep = ~padding_mask.to(torch.bool)                   # (B, T), True = may be attended to
            keep = keep | ~keep.any(-1, keepdim=True)             # an empty sequence attends to all (no NaN)
            attn_mask = keep[:, None, None, :]                    # (B, 1, 1, T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(bsz, tsz, self.embed_dim)  # (B, T, C)
        return self.out_proj(y)


class FeedForward(nn.Module):
    """Position-wise ``Linear(C, F) -> GELU -> dropout -> Linear(F, C) -> dropout``."""

    def __init__(self, embed_dim: int, ffn_dim: int, activation_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))  # (B, T, F)
        return self.output_dropout(self.output_dense(x))                   # (B, T, C)


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward sub-layers, post-LN or pre-LN.

    post-LN (``layer_norm_first=False``; BERT, wav2vec 2.0 BASE)::

        x = LN(x + dropout(attn(x)));  x = LN'(x + ffn(x))

    pre-LN (``layer_norm_first=True``; wav2vec 2.0 LARGE)::

        x = x + dropout(attn(LN(x)));  x = x + ffn(LN'(x))

    Shapes: ``x`` ``(B, T, C)``, ``padding_mask`` ``(B, T)`` -> ``(B, T, C)``.
    """

    def __init__(self, embed_dim: int, num_heads: int, ffn_dim: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0,
                 layer_norm_first: bool = False) -> None:
        super().__init__()
        self.attention = SelfAttention(embed_dim, num_heads, attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.layer_norm_first = layer_norm_first
        self.feed_forward = FeedForward(embed_dim, ffn_dim, activation_dropout, dropout)
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        residual = x
        if self.layer_norm_first:
            x = self.layer_norm(x)
        x = residual + self.dropout(self.attention(x, padding_mask))
        if self.layer_norm_first:
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x)
        return self.final_layer_norm(x + self.feed_forward(x))


class LearnedPositionalEmbedding(nn.Module):
    """A learned vector per position (BERT): ``(B, T, C)`` -> ``(1, T, C)`` embeddings to add."""

    def __init__(self, max_positions: int, embed_dim: int) -> None:
        super().__init__()
        if max_positions < 1:
            raise config_error("LearnedPositionalEmbedding", "max_positions", "an integer >= 1", max_positions)
        self.max_positions = max_positions
        self.embedding = nn.Embedding(max_positions, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tsz = x.shape[1]
        if tsz > self.max_positions:
            raise ValueError(f"sequence of {tsz} positions is longer than max_positions={self.max_positions}; "
                             f"crop the sequences or build the model with a larger max_positions")
        return self.embedding(torch.arange(tsz, device=x.device)).unsqueeze(0)


class ConvPositionalEmbedding(nn.Module):
    """Relative positional information from a grouped convolution (wav2vec 2.0 Sec. 2).

    ``Conv1d(C, C, kernel, groups, padding=kernel // 2)`` with weight normalisation over the
    kernel dimension, the extra frame of an even kernel removed, then GELU (fairseq
    ``conv_pos=128``, ``conv_pos_groups=16``). ``(B, T, C)`` -> ``(B, T, C)`` to add to the input.
    """

    def __init__(self, embed_dim: int, kernel_size: int = 128, groups: int = 16) -> None:
        super().__init__()
        if groups < 1 or embed_dim % groups != 0:
            raise config_error("ConvPositionalEmbedding", "groups", f"a divisor of embed_dim={embed_dim}", groups)
        conv = nn.Conv1d(embed_dim, embed_dim, kernel_size, padding=kernel_size // 2, groups=groups)
        std = math.sqrt(4.0 / (kernel_size * embed_dim))                 # fairseq's init (dropout 0)
        nn.init.normal_(conv.weight, mean=0.0, std=std)
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.num_remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.transpose(1, 2))                                   # (B, C, T + 1 if even kernel)
        if self.num_remove:
            y = y[..., : -self.num_remove]
        return F.gelu(y).transpose(1, 2)                                   # (B, T, C)


@dataclass
class TransformerOutput:
    """``x``: ``(B, T, C)`` final output. ``hidden_states``: when asked, ``L + 1`` tensors
    ``(B, T, C)``: the input of the first layer (after positional embedding, normalisation
    and dropout), then the output of every layer (HuBERT's "layer 6 features" are
    ``hidden_states[6]``)."""

    x: torch.Tensor
    hidden_states: list[torch.Tensor] | None = None


class TransformerEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` with input/output normalisation and LayerDrop.

    Args:
        embed_dim, num_layers, num_heads, ffn_dim: model size (BERT base / wav2vec 2.0 BASE:
            768, 12, 12, 3072).
        dropout: after attention, in the FFN output and on the input (fairseq ``dropout``).
        attention_dropout: on the attention weights (``attention_dropout``).
        activation_dropout: inside the FFN (``activation_dropout``).
        layer_norm_first: pre-LN layers and a final layer norm; otherwise post-LN layers and a
            layer norm on the input.
        layer_drop: probability of skipping each layer in training (wav2vec 2.0 BASE 0.05).
        pos_embedding: optional module whose output ``(B, T, C)`` is added to the input
            (:class:`ConvPositionalEmbedding`); padded frames are zeroed before it.

    Shapes: ``x`` ``(B, T, C)``, ``padding_mask`` ``(B, T)`` bool (``True`` = padding) ->
    :class:`TransformerOutput`.
    """

    def __init__(self, embed_dim: int, num_layers: int, num_heads: int, ffn_dim: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0, layer_norm_first: bool = False,
                 layer_drop: float = 0.0, pos_embedding: nn.Module | None = None) -> None:
        super().__init__()
        for name, v in (("embed_dim", embed_dim), ("num_layers", num_layers), ("ffn_dim", ffn_dim)):
            if v < 1:
                raise config_error("TransformerEncoder", name, "an integer >= 1", v)
        for name, p in (("dropout", dropout), ("attention_dropout", attention_dropout),
                        ("activation_dropout", activation_dropout), ("layer_drop", layer_drop)):
            if not 0.0 <= p < 1.0:
                raise config_error("TransformerEncoder", name, "a probability in [0, 1)", p)
        self.pos_embedding = pos_embedding
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.layer_norm_first = layer_norm_first
        self.dropout = nn.Dropout(dropout)
        self.layer_drop = layer_drop
        self.layers = nn.ModuleList([
            EncoderLayer(embed_dim, num_heads, ffn_dim, dropout=dropout, attention_dropout=attention_dropout,
                         activation_dropout=activation_dropout, layer_norm_first=layer_norm_first)
            for _ in range(num_layers)
        ])

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                return_hidden_states: bool = False, num_layers: int | None = None) -> TransformerOutput:
        """Run the first ``num_layers`` layers (all by default)."""
        if x.dim() != 3:
            raise ValueError(f"TransformerEncoder expects x of shape (B, T, C), got {tuple(x.shape)}")
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        if self.pos_embedding is not None:
            x = x + self.pos_embedding(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        hidden = [x] if return_hidden_states else None
        n = len(self.layers) if num_layers is None else num_layers
        for layer in self.layers[:n]:
            skip = self.training and self.layer_drop > 0 and float(torch.rand(())) < self.layer_drop
            if not skip:
                x = layer(x, padding_mask)  # (B, T, C)
            if hidden is not None:
                hidden.append(x)
        if self.layer_norm_first and n == len(self.layers):
            x = self.layer_norm(x)  # hidden states keep the raw layer outputs, as fairseq's layer_results
        return TransformerOutput(x=x, hidden_states=hidden)
