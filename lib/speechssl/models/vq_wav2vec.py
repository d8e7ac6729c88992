"""vq-wav2vec: self-supervised learning of discrete speech representations (Baevski, Schneider & Auli 2020).

vq-wav2vec is wav2vec with a quantizer between the encoder and the context network
(paper Sec. 3, Fig. 1a):

1. **Encoder** ``f: X -> Z``: the wav2vec encoder. The paper's model (Sec. 5.2) has 8 layers of
   512 channels, kernels (10, 8, 4, 4, 4, 1, 1, 1) and strides (5, 4, 2, 2, 2, 1, 1, 1): one
   dense frame ``z`` every 10 ms.
2. **Quantizer** ``q: Z -> Z^`` (Sec. 3.1-3.3): each ``z`` becomes ``z^``, one entry of each of
   ``G = 2`` codebooks of ``V = 320`` entries, concatenated, chosen by a Gumbel-softmax or by
   online k-means (:mod:`speechssl.nn.quantizers`). A frame is then a pair of integers, a
   *unit*.
3. **Context network** ``g: Z^ -> C``: the wav2vec context network applied to the *quantized*
   frames (Sec. 5.2: 12 causal layers of kernels 2, 3, ..., 13, with skip connections).
4. **Objective**: wav2vec's future prediction (Eq. 1 of the wav2vec paper) with ``z^`` as the
   targets: ``K = 8`` steps, 10 distractors from the same utterance. The k-means variant adds
   its VQ terms (weight 1); the Gumbel variant needs no extra loss.

After training, :meth:`VQWav2Vec.units` turns audio into unit sequences, which the paper feeds
to a BERT (:mod:`speechssl.models.unit_bert`, Sec. 4).

Paper against fairseq's README command: the command uses 12 prediction steps, GELU,
``--offset auto`` (first step 3 frames ahead), an exponential temperature decay and peak lr
1e-5 on 16 GPUs; the presets here take the paper's text (K = 8, ReLU, k = 1..K, linear
temperature, lr 5e-3) and fairseq only where the paper is silent (``combine_groups``,
log-compression, no encoder bias, 2x-wide logit network).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, config_error
from ..frames import WAV2VEC_ENCODER
from ..nn.quantizers import GumbelQuantizer, KMeansQuantizer, QuantizerOutput, codes_to_ids
from .inputs import check_min_samples
from .wav2vec import Wav2Vec, Wav2VecConfig, Wav2VecOutput, contrastive_metrics

__all__ = ["VQWav2Vec", "VQWav2VecConfig", "QUANTIZERS"]

QUANTIZERS = ("gumbel", "kmeans")

#: Sec. 5.2: the encoder of the full model, three 1x1 layers added to wav2vec's five.
VQ_ENCODER = WAV2VEC_ENCODER + ((512, 1, 1),) * 3
#: Sec. 5.2: twelve context layers, kernels 2 .. 13.
VQ_CONTEXT = tuple((512, k) for k in range(2, 14))


@dataclass
class VQWav2VecConfig(Wav2VecConfig):
    """Configuration of :class:`VQWav2Vec`; the defaults are the paper's Gumbel model (Sec. 5.2).

    Every field of :class:`~speechssl.models.wav2vec.Wav2VecConfig` applies; the ones whose
    paper value differs are repeated here, followed by the quantizer's own fields.
    """

    encoder_layers: tuple[tuple[int, int, int], ...] = VQ_ENCODER  # Sec. 5.2
    context_layers: tuple[tuple[int, int], ...] = VQ_CONTEXT       # Sec. 5.2
    context_skip: bool = True       # Sec. 5.2: skip connections between context blocks
    prediction_steps: int = 8       # Sec. 5.2: K = 8
    quantizer: str = "gumbel"       # Sec. 3.1 ("gumbel") or Sec. 3.2 ("kmeans")
    groups: int = 2                 # Sec. 5.2: G = 2
    num_vars: int = 320             # Sec. 5.2: V = 320
    combine_groups: bool = True     # fairseq --combine-groups (README command of the released models)
    gumbel_proj_depth: int = 2      # Sec. 3.1: linear, ReLU, linear (fairseq --vq-depth 2)
    gumbel_proj_factor: int = 2     # fairseq weight_proj_factor=2
    max_temp: float = 2.0           # Sec. 5.2: tau from 2 ...
    min_temp: float = 0.5           # ... to 0.5 ...
    anneal_updates: int = 280_000   # ... over the first 70% of the 400k updates
    kmeans_gamma: float = 0.25      # Sec. 5.2 (k-means): gamma = 0.25
    kmeans_weight: float = 1.0      # fairseq --loss-weights [1]
    kmeans_project: bool = True     # fairseq KmeansVectorQuantizer.projection

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        for name in ("groups", "gumbel_proj_depth", "gumbel_proj_factor"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise config_error(owner, name, "an integer >= 1", v)
        if not isinstance(self.num_vars, int) or self.num_vars < 2:
            raise config_error(owner, "num_vars", "an integer >= 2 (entries per group, paper V = 320)", self.num_vars)
        if self.quantizer not in QUANTIZERS:
            raise config_error(owner, "quantizer", f"one of {QUANTIZERS}", self.quantizer)
        if not (self.max_temp >= self.min_temp > 0):
            raise config_error(owner, "max_temp/min_temp", "max_temp >= min_temp > 0", (self.max_temp, self.min_temp))
        if not isinstance(self.anneal_updates, int) or self.anneal_updates < 0:
            raise config_error(owner, "anneal_updates", "an integer >= 0", self.anneal_updates)
        if self.kmeans_gamma < 0 or self.kmeans_weight < 0:
            raise config_error(owner, "kmeans_gamma/kmeans_weight", "numbers >= 0",
                               (self.kmeans_gamma, self.kmeans_weight))
        if self.encoder_dim % self.groups != 0:
            raise config_error(owner, "groups", f"a divisor of the encoder width {self.encoder_dim}", self.groups)

    @classmethod
    def preset(cls, name: str, **overrides) -> "VQWav2VecConfig":
        """A named configuration, optionally with fields replaced.

        - ``"paper"``: the full model of Sec. 5.2 (Gumbel, 33,018,496 parameters; pass
          ``quantizer="kmeans"`` for k-means, 31,969,280).
        - ``"small"``: the paper's ablation model for Librispeech 100h (Sec. 5.2: wav2vec's
          5-layer encoder, 7 context layers of kernel 3, 40k updates; 14,133,376).
        - ``"reduced"``: ``"small"`` at 256 channels, for one GPU (3,724,672).
        - ``"tiny"``: wav2vec's 5-layer encoder and 9 context layers of kernel 3 with skip
          connections at 96 channels, K = 8, G = 2 groups of V = 64 entries, for a few minutes
          on a CPU, with three changes: ``predictor_lr_scale=30`` as the tiny wav2vec; a single
          linear logit layer with fairseq's ``N(0, 1)`` init (``--vq-depth 1``), whose large
          logits make the codes depend on the input from the first update (the paper's
          two-layer network starts with logits far smaller than the Gumbel noise, so the codes
          are random); and the InfoNCE loss (fairseq ``--infonce``): with Eq. (1) both
          quantizers collapse to a handful of codes and the loss to the prior (3.35) within
          100 updates at this size. ``preset("tiny", loss="binary")`` shows that collapse.
        """
        if name not in VQ_WAV2VEC_PRESETS:
            raise ConfigError(f"VQWav2VecConfig.preset: expected one of {sorted(VQ_WAV2VEC_PRESETS)}, found {name!r}")
        return dataclasses.replace(VQ_WAV2VEC_PRESETS[name], **overrides)


VQ_WAV2VEC_PRESETS: dict[str, VQWav2VecConfig] = {
    "paper": VQWav2VecConfig(),
    "small": VQWav2VecConfig(encoder_layers=WAV2VEC_ENCODER, context_layers=((512, 3),) * 7, context_skip=False,
                             anneal_updates=28_000),
    "reduced": VQWav2VecConfig(encoder_layers=tuple((256, k, s) for _, k, s in WAV2VEC_ENCODER),
                               context_layers=((256, 3),) * 7, context_skip=False, anneal_updates=14_000),
    "tiny": VQWav2VecConfig(encoder_layers=tuple((96, k, s) for _, k, s in WAV2VEC_ENCODER),
                            context_layers=((96, 3),) * 9, num_vars=64, predictor_lr_scale=30.0,
                            loss="infonce", gumbel_proj_depth=1, anneal_updates=280),
}


class VQWav2Vec(Wav2Vec):
    """vq-wav2vec: wav2vec encoder, a quantizer, a context network on quantized frames, future prediction.

    The encoder, context network and objective are built exactly as in :class:`Wav2Vec`; the
    quantizer is the one new part (paper Sec. 3).
    """

    def __init__(self, cfg: VQWav2VecConfig | None = None) -> None:
        cfg = cfg if cfg is not None else VQWav2VecConfig()
        super().__init__(cfg)
        if cfg.quantizer == "gumbel":
            self.quantizer: GumbelQuantizer | KMeansQuantizer = GumbelQuantizer(
                cfg.encoder_dim, cfg.num_vars, cfg.groups, combine_groups=cfg.combine_groups,
                proj_depth=cfg.gumbel_proj_depth, proj_factor=cfg.gumbel_proj_factor, activation=cfg.activation,
                max_temp=cfg.max_temp, min_temp=cfg.min_temp, anneal_updates=cfg.anneal_updates)
        else:
            self.quantizer = KMeansQuantizer(cfg.encoder_dim, cfg.num_vars, cfg.groups,
                                             combine_groups=cfg.combine_groups, gamma=cfg.kmeans_gamma,
                                             project=cfg.kmeans_project)

    @property
    def num_codewords(self) -> int:
        """``V^G``: how many distinct units the quantizer can express (paper: 102,400)."""
        return self.cfg.num_vars ** self.cfg.groups

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder.output_lengths(lengths)

    def quantize(self, audio: torch.Tensor, lengths: torch.Tensor | None = None, num_updates: int = 0, *,
                 deterministic: bool | None = None) -> tuple[QuantizerOutput, torch.Tensor]:
        """Encoder and quantizer only: ``(QuantizerOutput, frame lengths)``; ``x`` is ``(B, T', D)``."""
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], dtype=torch.int64, device=audio.device)
        z, frames = self.encoder(audio, lengths)                                            # (B, D, T')
        q = self.quantizer(z.transpose(1, 2), frames, num_updates, deterministic=deterministic)  # x: (B, T', D)
        return q, frames

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None,
                num_updates: int = 0) -> Wav2VecOutput:
        """``audio`` ``(B, T)`` -> ``z`` = quantized frames ``z^`` ``(B, T', D)`` and ``c`` ``(B, T', C)``.

        ``extra["quantizer"]`` holds the :class:`~speechssl.nn.quantizers.QuantizerOutput`.
        """
        q, frames = self.quantize(audio, lengths, num_updates)
        c, _ = self.context(q.x.transpose(1, 2), frames)                                     # (B, C, T')
        return Wav2VecOutput(z=q.x, c=c.transpose(1, 2), lengths=frames, extra={"quantizer": q})

    def compute_loss(self, batch: Mapping, num_updates: int = 0) -> tuple[torch.Tensor, dict]:
        """Future prediction of the quantized frames (+ the k-means VQ loss).

        Metrics: ``acc``, ``acc_step1..K``, ``num_positives``, ``code_ppl`` (perplexity of the
        hard codes summed over groups, max ``G V``), ``prob_ppl`` and ``temp`` (Gumbel) or
        ``vq_loss`` (k-means), and ``contrastive_loss``.
        """
        audio, lengths = self.checked_batch(batch)
        out = self(audio, lengths, num_updates)
        q: QuantizerOutput = out.extra["quantizer"]
        res = self.objective(out.c, out.z, out.lengths)
        metrics = contrastive_metrics(res)
        metrics["contrastive_loss"] = res.loss.detach()
        metrics["code_ppl"] = q.code_perplexity.detach()
        loss = res.loss
        if self.cfg.quantizer == "gumbel":
            metrics["prob_ppl"] = q.prob_perplexity.detach()
            metrics["temp"] = float(q.temperature)
        else:
            loss = loss + self.cfg.kmeans_weight * q.loss
            metrics["vq_loss"] = q.loss.detach()
        return loss, metrics

    @torch.no_grad()
    def extract_features(self, audio: torch.Tensor, lengths: torch.Tensor | None = None,
                         layer: str = "context") -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features: ``"context"`` (``c``) or ``"quantized"`` (``z^``, deterministic) -> ``((B, T', C), (B,))``."""
        if layer not in ("context", "quantized"):
            raise ConfigError(f"extract_features.layer: expected 'context' or 'quantized', found {layer!r}")
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], dtype=torch.int64, device=audio.device)
        q, frames = self.quantize(audio, lengths, deterministic=True)
        if layer == "quantized":
            return q.x, frames
        c, _ = self.context(q.x.transpose(1, 2), frames)
        return c.transpose(1, 2), frames

    @torch.no_grad()
    def units(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Discrete units: ``(B, T)`` audio -> ``(B, T', G)`` int64 codes, -1 at padded frames.

        Always the deterministic argmax / nearest codeword (no Gumbel noise), whatever the
        module's mode. Frame lengths: :meth:`frame_lengths`. One id per frame:
        :meth:`unit_ids`.
        """
        if audio.dim() != 2:
            raise ValueError(f"units expects audio of shape (B, T), got {tuple(audio.shape)}")
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], dtype=torch.int64, device=audio.device)
        check_min_samples(lengths, self.receptive_field, type(self.cfg).__name__, "one frame")
        q, _ = self.quantize(audio, lengths, deterministic=True)
        return q.codes

    def unit_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """``(..., G)`` codes -> ``(...)`` ids ``sum_g code_g V^(G-1-g)`` in ``[0, V^G)`` (-1 for padding).

        This *product* numbering covers every possible codeword; the paper's BERT vocabulary
        holds only the codewords that occur in the data (13.5k for Gumbel, 23k for k-means on
        Librispeech): :class:`speechssl.models.unit_bert.UnitVocabulary`.
        """
        return codes_to_ids(codes, self.cfg.num_vars)
