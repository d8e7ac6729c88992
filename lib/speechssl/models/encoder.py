"""The masked speech encoder that wav2vec 2.0 and HuBERT share.

HuBERT keeps wav2vec 2.0's network unchanged and replaces only its training target (HuBERT Sec. II-A;
fairseq ``hubert.py`` builds ``ConvFeatureExtractionModel`` and ``TransformerEncoder`` from
``wav2vec2.py``). What both models have, in order:

1. **Feature encoder**: seven convolutions, one frame every 320 samples (20 ms) seeing 400 samples;
   BASE normalises only the first layer (group norm), LARGE every layer (layer norm). Its gradient
   is scaled by ``feature_grad_mult`` (0.1 for BASE).
2. **Feature projection**: layer norm, a linear map to the Transformer width, dropout (fairseq
   ``layer_norm``, ``post_extract_proj``, ``dropout_input``).
3. **Span masking**: a share ``p = mask_prob / M`` of the frames start a span of ``M`` frames that are
   replaced by one learned vector ``mask_emb`` (wav2vec 2.0: 0.65 / 10; HuBERT: 0.80 / 10), at least two
   spans per utterance.
4. **Transformer** with a convolutional positional embedding, post-LN (BASE) or pre-LN (LARGE).
5. **Feature penalty**: the mean squared encoder output, weighted by ``feature_pen_weight`` (10) in
   both losses (fairseq ``loss_weights``).

:class:`MaskedEncoder` builds these parts under the names torchaudio and fairseq checkpoints map to
(:mod:`speechssl.interop`); :class:`~speechssl.models.wav2vec2.Wav2Vec2` and
:class:`~speechssl.models.hubert.Hubert` add their heads and losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import config_error
from ..frames import WAV2VEC2_ENCODER
from ..nn.conv import ConvFeatureEncoder, lengths_to_padding_mask
from ..nn.masking import MaskSpec
from ..nn.transformer import ConvPositionalEmbedding, TransformerEncoder, init_bert_params

__all__ = ["EncoderConfig", "EncoderOutput", "MaskedEncoder"]


@dataclass
class EncoderConfig:
    """The settings of the shared encoder; the defaults are wav2vec 2.0 BASE's."""

    conv_layers: tuple[tuple[int, int, int], ...] = WAV2VEC2_ENCODER   # Sec. 2, (channels, kernel, stride)
    extractor_mode: str = "group_norm"   # BASE: group norm in layer 1 only; LARGE: "layer_norm" everywhere
    conv_bias: bool = False              # fairseq conv_bias (LARGE LibriVox: True)
    embed_dim: int = 768                 # Transformer width
    num_layers: int = 12
    num_heads: int = 12                  # released BASE checkpoints (the paper's text says 8)
    ffn_dim: int = 3072
    layer_norm_first: bool = False       # post-LN (BASE) or pre-LN (LARGE)
    conv_pos: int = 128                  # positional convolution: kernel 128 ...
    conv_pos_groups: int = 16            # ... 16 groups
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.1           # on the projected features
    layer_drop: float = 0.05
    feature_grad_mult: float = 0.1
    final_dim: int = 256                 # dimension of the projected outputs the loss compares
    mask_prob: float = 0.65              # fairseq mask_prob = p * M: p = 0.065 of frames start a span
    mask_length: int = 10                # M
    mask_min_spans: int = 2              # fairseq apply_mask(min_masks=2)
    logit_temp: float = 0.1              # kappa: cosine similarities are divided by it
    feature_pen_weight: float = 10.0     # fairseq loss_weights: the feature penalty

    def __post_init__(self) -> None:
        self.conv_layers = tuple(tuple(int(v) for v in layer) for layer in self.conv_layers)
        self.validate()

    def validate(self) -> None:
        owner = type(self).__name__
        if self.extractor_mode not in ("group_norm", "layer_norm"):
            raise config_error(owner, "extractor_mode", "'group_norm' (BASE) or 'layer_norm' (LARGE)",
                               self.extractor_mode)
        for name in ("embed_dim", "num_layers", "num_heads", "ffn_dim", "conv_pos", "conv_pos_groups", "final_dim",
                     "mask_length"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise config_error(owner, name, "an integer >= 1", v)
        if self.embed_dim % self.num_heads:
            raise config_error(owner, "num_heads", f"a divisor of embed_dim={self.embed_dim}", self.num_heads)
        if not 0.0 < self.mask_prob < self.mask_length:
            raise config_error(owner, "mask_prob", f"in (0, mask_length={self.mask_length}) "
                               f"(p * M with p the share of span starts)", self.mask_prob)
        for name in ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "layer_drop"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise config_error(owner, name, "a probability in [0, 1)", v)
        if self.logit_temp <= 0 or self.feature_grad_mult < 0:
            raise config_error(owner, "logit_temp/feature_grad_mult", "logit_temp > 0, feature_grad_mult >= 0",
                               (self.logit_temp, self.feature_grad_mult))

    @property
    def time_mask(self) -> MaskSpec:
        """The span masking of pre-training: ``p = mask_prob / M``, at least ``mask_min_spans`` spans."""
        return MaskSpec.fairseq(self.mask_prob, self.mask_length, self.mask_min_spans)


@dataclass
class EncoderOutput:
    """``x`` ``(B, T, C)`` Transformer output, ``features`` ``(B, T, C_enc)`` normalised encoder output
    (before projection), ``lengths`` ``(B,)`` frames, ``mask`` ``(B, T)`` masked frames or ``None``,
    ``hidden_states`` (when asked) the input of the first layer and every layer's output."""

    x: torch.Tensor
    features: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor | None = None
    hidden_states: list[torch.Tensor] | None = None
    features_pen: torch.Tensor | None = None


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward (fairseq ``GradMultiply``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: D401
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class MaskedEncoder(nn.Module):
    """Feature encoder, projection, span masking and Transformer (parts 1-5 above).

    A subclass builds its head after calling ``super().__init__(cfg)`` and then calls
    :meth:`reset_parameters`, so that the parameters are drawn in the order fairseq draws them.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cfg.validate()
        self.feature_encoder = ConvFeatureEncoder(
            cfg.conv_layers, norm="group_first" if cfg.extractor_mode == "group_norm" else "layer",
            activation="gelu", bias=cfg.conv_bias)
        enc_dim = self.feature_encoder.out_channels
        self.layer_norm = nn.LayerNorm(enc_dim)                       # fairseq layer_norm (features)
        self.post_extract_proj = nn.Linear(enc_dim, cfg.embed_dim)
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.mask_emb = nn.Parameter(torch.empty(cfg.embed_dim).uniform_())   # fairseq: uniform [0, 1)
        self.encoder = TransformerEncoder(
            cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.ffn_dim, dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
            layer_norm_first=cfg.layer_norm_first, layer_drop=cfg.layer_drop,
            pos_embedding=ConvPositionalEmbedding(cfg.embed_dim, cfg.conv_pos, cfg.conv_pos_groups))

    def reset_parameters(self) -> None:
        """fairseq's initialisation (``wav2vec2.py``, ``hubert.py``), which PyTorch's defaults do not match.

        - feature encoder convolutions: ``kaiming_normal_`` (``ConvFeatureExtractionModel``). With
          PyTorch's default (uniform, gain ``1/sqrt(3)``) each unnormalised layer shrinks the signal,
          and the BASE/tiny encoder output starts near 1e-3: the feature layer norm then sees mostly
          its ``eps`` and pre-training stalls at chance;
        - Transformer linear layers: ``N(0, 0.02)``, zero bias (``TransformerEncoder`` applies
          ``init_bert_params``); the positional convolution keeps its own init;
        - the projections keep PyTorch's default, ``mask_emb`` and the heads their fairseq init (set
          where they are built).
        """
        for block in self.feature_encoder.blocks:
            nn.init.kaiming_normal_(block.conv.weight)
        self.encoder.layers.apply(init_bert_params)

    # -- facts ------------------------------------------------------------------------------------
    @property
    def receptive_field(self) -> int:
        """Samples seen by one frame (400 for the paper's encoder)."""
        return self.feature_encoder.receptive_field

    @property
    def hop(self) -> int:
        """Samples between frames (320, 20 ms)."""
        return self.feature_encoder.hop

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.feature_encoder.output_lengths(lengths)

    # -- forward ----------------------------------------------------------------------------------
    def encode(self, audio: torch.Tensor, lengths: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feature encoder and its layer norm: ``(features (B, T, C_enc), lengths (B,), penalty)``."""
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], dtype=torch.int64, device=audio.device)
        z, frames = self.feature_encoder(audio, lengths)                       # (B, C, T)
        if self.training and self.cfg.feature_grad_mult != 1.0:
            z = _GradMultiply.apply(z, self.cfg.feature_grad_mult)
        valid = ~lengths_to_padding_mask(frames, z.shape[-1])                   # (B, T)
        # [eq feature-penalty]
        pen = (z.float().pow(2).mean(1)[valid]).mean()                          # mean squared output
        # [/eq feature-penalty]
        return self.layer_norm(z.transpose(1, 2)), frames, pen

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None, *, mask: torch.Tensor | bool = False,
                channel_mask: torch.Tensor | None = None, return_hidden_states: bool = False,
                num_layers: int | None = None) -> EncoderOutput:
        """``audio`` ``(B, T)`` -> :class:`EncoderOutput`.

        ``mask``: ``False`` (no masking, for features), ``True`` (draw spans as in pre-training)
        or a ``(B, T')`` bool tensor of frames to mask. ``channel_mask``: optional ``(B, D)`` bool,
        channels of the projected features set to zero in every frame (fine-tuning's SpecAugment,
        fairseq ``mask_channel_*``).
        """
        return self.contextualize(*self.encode(audio, lengths), mask=mask, channel_mask=channel_mask,
                                  return_hidden_states=return_hidden_states, num_layers=num_layers)

    def contextualize(self, feats: torch.Tensor, frames: torch.Tensor, pen: torch.Tensor, *,
                      mask: torch.Tensor | bool = False, channel_mask: torch.Tensor | None = None,
                      return_hidden_states: bool = False, num_layers: int | None = None) -> EncoderOutput:
        """Projection, masking and Transformer over the output of :meth:`encode` (see :meth:`forward`)."""
        padding = lengths_to_padding_mask(frames, feats.shape[1])
        x = self.dropout_input(self.post_extract_proj(feats))                 # (B, T, D)
        x, m = self.apply_mask(x, frames, mask)
        if channel_mask is not None:
            x = x.masked_fill(channel_mask.unsqueeze(1), 0.0)
        out = self.encoder(x, padding if bool(padding.any()) else None, return_hidden_states=return_hidden_states,
                           num_layers=num_layers)
        return EncoderOutput(x=out.x, features=feats, lengths=frames, mask=m, hidden_states=out.hidden_states,
                             features_pen=pen)

    def apply_mask(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor | bool | MaskSpec = True
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Replace masked frames of ``x`` ``(B, T, D)`` by ``mask_emb``: ``(x, mask or None)``.

        ``mask``: ``True`` draws spans with the configuration's ``time_mask`` (pre-training), a
        :class:`~speechssl.nn.masking.MaskSpec` draws spans with that spec (fine-tuning's
        SpecAugment), ``False`` masks nothing, a ``(B, T)`` bool tensor names the frames (padding is
        never masked).
        """
        if mask is False:
            return x, None
        if mask is True:
            mask = self.cfg.time_mask
        if isinstance(mask, MaskSpec):
            m = mask.sample(lengths, x.shape[1])
        else:
            m = mask.to(torch.bool) & ~lengths_to_padding_mask(lengths, x.shape[1])
        return torch.where(m.unsqueeze(-1), self.mask_emb.to(x.dtype), x), m

    @torch.no_grad()
    def extract_features(self, audio: torch.Tensor, lengths: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features for downstream use: the Transformer output ``((B, T', D), (B,))``, unmasked."""
        out = self(audio, lengths)
        return out.x, out.lengths
