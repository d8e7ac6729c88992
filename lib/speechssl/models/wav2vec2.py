"""wav2vec 2.0: self-supervised learning of speech representations (Baevski, Zhou, Mohamed & Auli 2020).

The model, top-down (paper Sec. 2 and 3). Parts 1-4 and the feature penalty are the masked encoder
that HuBERT reuses (:mod:`speechssl.models.encoder`); this module adds parts 5 and 6.

1. **Feature encoder** ``f: X -> Z`` (Sec. 2): seven convolutions ``[(512, 10, 5)] + [(512, 3, 2)] * 4
   + [(512, 2, 2)] * 2`` with GELU, one frame every 320 samples (20 ms) seeing 400 samples (25 ms).
   BASE normalises only the first layer, with a per-channel group norm; LARGE puts a layer norm in
   every layer (fairseq ``extractor_mode`` ``default`` / ``layer_norm``). The gradient into the
   encoder is scaled by 0.1 (fairseq ``feature_grad_mult``).
2. **Feature projection**: layer norm, then a linear map to the Transformer width, then dropout
   (fairseq ``layer_norm``, ``post_extract_proj``, ``dropout_input``).
3. **Masking** (Sec. 3.1): a share ``p = 0.065`` of the frames start a span of ``M = 10`` masked
   frames (fairseq ``mask_prob = 0.65`` is ``p * M``), about 49% of all frames, at least two spans
   per utterance; masked frames are replaced by one learned vector (``mask_emb``).
4. **Context network** ``g`` (Sec. 2): a convolutional relative positional embedding (kernel 128,
   16 groups, weight norm) and a Transformer, post-LN for BASE and pre-LN for LARGE, with
   LayerDrop (:mod:`speechssl.nn.transformer`).
5. **Quantization module** (Sec. 2, 3.2): ``G = 2`` codebooks of ``V = 320`` entries chosen by a
   straight-through Gumbel-softmax from the *unmasked* encoder output, the temperature decaying
   from 2 by a factor 0.999995 per update down to 0.5, then a linear map (``project_q``).
6. **Objective** (Sec. 3.2, Eq. 2-4): for every masked frame ``t``, InfoNCE over the cosine
   similarity, divided by ``kappa = 0.1``, between the projected context vector ``c_t`` and the
   quantized target ``q_t`` against ``K = 100`` distractors drawn uniformly from the other *masked*
   frames of the same utterance; plus ``alpha = 0.1`` times the diversity loss
   ``(G V - exp(H(p_bar))) / (G V)`` (fairseq's form of Eq. 4), plus 10 times the mean squared
   encoder output (fairseq ``loss_weights = [0.1, 10]``, the feature penalty).

Sizes (Sec. 4.2, fairseq configs): BASE 12 layers of width 768, FFN 3072, 12 heads (the paper's
text says 8; the released checkpoints and fairseq use 12), final dimension 256, LayerDrop 0.05;
LARGE 24 layers of 1024, FFN 4096, 16 heads, final dimension 768, LayerDrop 0.2, with the
layer-norm encoder, convolution bias and pre-LN Transformer of fairseq's LibriVox LARGE model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, config_error
from ..frames import WAV2VEC2_ENCODER
from ..nn.quantizers import GumbelQuantizer
from .encoder import EncoderConfig, EncoderOutput, MaskedEncoder
from .inputs import audio_from_batch, check_min_samples

__all__ = ["Wav2Vec2", "Wav2Vec2Config", "Wav2Vec2Output", "WAV2VEC2_PRESETS", "sample_masked_negatives"]


@dataclass
class Wav2Vec2Config(EncoderConfig):
    """Configuration of :class:`Wav2Vec2`: the shared encoder's (:class:`~speechssl.models.encoder.EncoderConfig`)
    and the quantizer's and contrastive task's; the defaults are BASE (``preset("base")``)."""

    dropout_features: float = 0.1        # on the unmasked features that feed the quantizer
    num_vars: int = 320                  # V
    groups: int = 2                      # G
    max_temp: float = 2.0                # latent_temp = (2, 0.5, 0.999995)
    min_temp: float = 0.5
    temp_decay: float = 0.999995
    num_negatives: int = 100             # K
    diversity_weight: float = 0.1        # alpha
    quantize_targets: bool = True        # False: continuous targets (Table 4; fairseq quantize_targets)

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        for name in ("num_vars", "groups", "num_negatives"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise config_error(owner, name, "an integer >= 1", v)
        if self.final_dim % self.groups:
            raise config_error(owner, "groups", f"a divisor of final_dim={self.final_dim}", self.groups)
        if not 0.0 <= self.dropout_features < 1.0:
            raise config_error(owner, "dropout_features", "a probability in [0, 1)", self.dropout_features)
        if not (self.max_temp >= self.min_temp > 0 and 0 < self.temp_decay <= 1):
            raise config_error(owner, "max_temp/min_temp/temp_decay", "max_temp >= min_temp > 0, decay in (0, 1]",
                               (self.max_temp, self.min_temp, self.temp_decay))

    @classmethod
    def preset(cls, name: str, **overrides) -> "Wav2Vec2Config":
        """``"base"`` (about 95M parameters), ``"large"`` (about 317M), ``"reduced"`` (one GPU) or
        ``"tiny"`` (a few minutes on a CPU), optionally with fields replaced."""
        if name not in WAV2VEC2_PRESETS:
            raise ConfigError(f"Wav2Vec2Config.preset: expected one of {sorted(WAV2VEC2_PRESETS)}, found {name!r}")
        return dataclasses.replace(WAV2VEC2_PRESETS[name], **overrides)


WAV2VEC2_PRESETS: dict[str, Wav2Vec2Config] = {
    "base": Wav2Vec2Config(),
    # Sec. 4.2 LARGE; layer-norm encoder with bias and pre-LN as fairseq's wav2vec2_large_librivox
    "large": Wav2Vec2Config(extractor_mode="layer_norm", conv_bias=True, embed_dim=1024, num_layers=24,
                            num_heads=16, ffn_dim=4096, layer_norm_first=True, final_dim=768, layer_drop=0.2),
    "reduced": Wav2Vec2Config(conv_layers=tuple((256, k, s) for _, k, s in WAV2VEC2_ENCODER), embed_dim=384,
                              num_layers=6, num_heads=6, ffn_dim=1536, final_dim=128),
    # A few CPU minutes (600 updates of 12 s of audio) instead of 400k updates of 1.6 h. With the
    # paper's spans (M = 10) and feature penalty, and a 32-frame positional kernel, this model stays
    # at chance (log 101) for at least 2,000 such updates (lr 1e-3): the masked frames' context vectors start out
    # alike, the penalty shrinks the encoder output, and the diversity loss spreads the codes
    # over frame-to-frame noise. Three changes let it learn within the budget (measured in
    # chapter 3): short spans (M = 3, mask_prob kept at 0.65, so still about half the frames),
    # a positional convolution of 8 frames, and no feature penalty. The temperature falls from
    # 2 to 0.5 over the first 70% of the run, as the paper's decay does over 400k updates.
    "tiny": Wav2Vec2Config(conv_layers=tuple((128, k, s) for _, k, s in WAV2VEC2_ENCODER), embed_dim=192,
                           num_layers=4, num_heads=4, ffn_dim=768, final_dim=96, num_vars=64, conv_pos=8,
                           layer_drop=0.0, dropout=0.05, attention_dropout=0.05, dropout_input=0.05,
                           dropout_features=0.05, mask_length=3, feature_pen_weight=0.0,
                           temp_decay=0.25 ** (1.0 / (0.7 * 600))),
}


def sample_masked_negatives(mask: torch.Tensor, num_negatives: int, *,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """For every masked frame, ``num_negatives`` other masked frames of the same utterance.

    ``mask`` ``(B, T)`` bool -> ``(M, K)`` int64 indices into the ``M`` masked frames taken in
    row-major order (``x[mask]``): uniform over the utterance's other masked frames, with
    replacement, never the frame itself and never a padded or unmasked frame (fairseq
    ``sample_negatives`` with ``cross_sample_negatives = 0``).
    """
    counts = mask.sum(1)                                               # (B,)
    if int(counts.min()) < 2:
        raise ConfigError("sample_masked_negatives: every utterance needs at least 2 masked frames, found "
                          f"{counts.tolist()}")
    offsets = torch.cumsum(counts, 0) - counts                         # (B,)
    utt = torch.repeat_interleave(torch.arange(len(counts), device=mask.device), counts)  # (M,)
    own = torch.arange(int(counts.sum()), device=mask.device) - offsets[utt]              # index within utterance
    n = counts[utt]                                                    # (M,)
    dev = generator.device if generator is not None else mask.device
    u = torch.rand(len(utt), num_negatives, generator=generator, device=dev).to(mask.device)
    idx = torch.minimum((u * (n - 1)[:, None]).long(), (n - 2)[:, None])                 # [0, n - 1)
    idx = idx + (idx >= own[:, None]).long()                           # skip the frame itself
    return idx + offsets[utt][:, None]


#: The encoder output of :class:`Wav2Vec2` (the shared encoder's).
Wav2Vec2Output = EncoderOutput


class Wav2Vec2(MaskedEncoder):
    """wav2vec 2.0: the shared masked encoder, a product quantizer and the contrastive task."""

    def __init__(self, cfg: Wav2Vec2Config | None = None) -> None:
        cfg = cfg if cfg is not None else Wav2Vec2Config()
        super().__init__(cfg)
        enc_dim = self.feature_encoder.out_channels
        self.dropout_features = nn.Dropout(cfg.dropout_features)
        # Table 4's "continuous targets" (fairseq quantize_targets=False): no quantizer, and project_q maps
        # the encoder features themselves to the loss space; nothing is left for the diversity loss to spread
        self.quantizer = GumbelQuantizer(enc_dim, cfg.num_vars, cfg.groups, code_dim=cfg.final_dim,
                                         combine_groups=False, proj_depth=1, max_temp=cfg.max_temp,
                                         min_temp=cfg.min_temp, temp_decay=cfg.temp_decay) \
            if cfg.quantize_targets else None
        self.project_q = nn.Linear(cfg.final_dim if cfg.quantize_targets else enc_dim, cfg.final_dim)
        self.final_proj = nn.Linear(cfg.embed_dim, cfg.final_dim)
        self.reset_parameters()

    # -- facts ------------------------------------------------------------------------------------
    @property
    def min_input_samples(self) -> int:
        """Shortest usable training utterance: ``K + 1`` frames, so that a masked frame can find
        ``K`` distractors (``receptive_field + K * hop``: 32,400 samples, 2 s, for the paper). The
        training command drops shorter utterances, as fairseq's ``min_sample_size`` does."""
        return self.receptive_field + max(self.cfg.num_negatives, self.cfg.mask_length) * self.hop

    @property
    def chance_loss(self) -> float:
        """``log(K + 1)``: InfoNCE of a model that scores every candidate alike (log 101 = 4.615)."""
        return float(torch.log(torch.tensor(self.cfg.num_negatives + 1.0)))

    def frame_views(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the loss compares, for every frame of one unmasked utterance ``(T,)`` (for analysis):
        ``codes`` ``(T', G)`` (the quantizer's argmax), ``context`` ``(T', F)`` (``final_proj(c)``) and
        ``target`` ``(T', F)`` (``project_q(q)``)."""
        out = self(audio[None].to(self.mask_emb.device))
        views = {"context": self.final_proj(out.x[0]).cpu()}
        if self.quantizer is None:
            return {**views, "target": self.project_q(out.features[0]).cpu()}
        q = self.quantizer(out.features, out.lengths, deterministic=True)
        return {"codes": q.codes[0].cpu(), **views, "target": self.project_q(q.x[0]).cpu()}

    def compute_loss(self, batch: Mapping, num_updates: int = 0) -> tuple[torch.Tensor, dict]:
        """Contrastive loss + ``alpha`` diversity + feature penalty, averaged over masked frames.

        Metrics: ``contrastive_loss``, ``diversity_loss``, ``features_pen``, ``acc`` (the target
        scored above all distractors), ``code_ppl`` / ``prob_ppl`` (max ``G V``), ``temp``,
        ``num_masked`` and ``mask_frac``.
        """
        owner = type(self.cfg).__name__
        audio, lengths = audio_from_batch(batch, owner)
        check_min_samples(lengths, self.min_input_samples, owner,
                          f"{max(self.cfg.num_negatives, self.cfg.mask_length) + 1} frames: a masked target, "
                          f"its {self.cfg.num_negatives} distractors and unmasked frames around spans of "
                          f"{self.cfg.mask_length}")
        return self.pretraining_loss(self(audio, lengths, mask=True), num_updates)

    def pretraining_loss(self, out: Wav2Vec2Output, num_updates: int = 0) -> tuple[torch.Tensor, dict]:
        """The loss of :meth:`compute_loss` from a masked forward pass (``out.mask`` set).

        Separate so that another encoder's output (e.g. torchaudio's, in ``bench/``) can be scored
        by exactly the same quantizer and loss.
        """
        cfg = self.cfg
        m = out.mask
        if m is None:
            raise ConfigError(f"{type(cfg).__name__}.pretraining_loss needs the output of a masked forward pass "
                              f"(mask=True)")
        # Only the masked frames are quantized (fairseq wav2vec2.py: ``y = unmasked_features[mask_indices]``), so the
        # codebook perplexity of the diversity loss is averaged over masked frames, as fairseq and Hugging Face
        # (``_compute_perplexity(probs, mask_time_indices)``) do.
        unmasked = self.dropout_features(out.features[m]).unsqueeze(0)       # (1, M, C_enc)
        q = self.quantizer(unmasked, None, num_updates) if self.quantizer is not None else None
        y = self.project_q(q.x[0] if q is not None else unmasked[0])          # (M, F) targets
        c = self.final_proj(out.x[m])                                          # (M, F) context vectors
        neg_idx = sample_masked_negatives(m, cfg.num_negatives)                # (M, K)
        # index_select, not y[neg_idx]: its backward adds rows one index at a time, in a fixed order, where
        # advanced indexing accumulates repeated indices from several threads in no fixed order (CPU runs then
        # differ in the last bits from one run to the next)
        negs = y.index_select(0, neg_idx.reshape(-1)).view(*neg_idx.shape, -1)  # (M, K, F)
        # [eq contrastive]
        cands = torch.cat([y.unsqueeze(1), negs], 1)                           # (M, 1 + K, F)
        logits = F.cosine_similarity(c.float().unsqueeze(1), cands.float(), dim=-1) / cfg.logit_temp
        same = (negs == y.unsqueeze(1)).all(-1)                                # a distractor equal to the target
        logits[:, 1:] = logits[:, 1:].masked_fill(same, float("-inf"))
        target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        contrastive = F.cross_entropy(logits, target)
        # [/eq contrastive]
        diversity = torch.zeros((), device=logits.device)                     # continuous targets: no codebook
        if q is not None:
            # [eq diversity]
            gv = cfg.groups * cfg.num_vars
            diversity = (gv - q.prob_perplexity) / gv                              # fairseq's form of Eq. 4
            # [/eq diversity]
        # [eq total]
        loss = contrastive + cfg.diversity_weight * diversity + cfg.feature_pen_weight * out.features_pen
        # [/eq total]
        with torch.no_grad():
            acc = (logits[:, 0] > logits[:, 1:].max(-1).values).float().mean()
        num_masked = float(m.sum())
        metrics = {"contrastive_loss": contrastive.detach(), "diversity_loss": diversity.detach(),
                   "features_pen": out.features_pen.detach(), "acc": acc, "num_masked": num_masked,
                   "mask_frac": num_masked / float(out.lengths.sum())}
        if q is not None:
            metrics.update(code_ppl=q.code_perplexity.detach(), prob_ppl=q.prob_perplexity.detach(),
                           temp=float(q.temperature))
        return loss, metrics
