"""HuBERT: self-supervised speech representation learning by masked prediction of hidden units
(Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov & Mohamed 2021).

The model, top-down (paper Sec. II, fairseq ``hubert.py`` and ``hubert_base_librispeech.yaml``):

1. **The encoder is wav2vec 2.0's** (Sec. II-A): feature encoder, projection, span masking and
   Transformer, unchanged (:class:`~speechssl.models.encoder.MaskedEncoder`). Only the masking is
   heavier: ``p = 8%`` of the frames start a span of ``l = 10`` (Sec. IV-C; fairseq ``mask_prob 0.80``),
   about 57% of the frames, at least two spans per utterance. No quantizer.
2. **Hidden units as targets** (Sec. II-B, II-C): every frame has a label ``z_t`` in ``{1..K}``, the
   cluster of an offline k-means teacher: MFCC k-means with ``K = 100`` in the first iteration, k-means
   with ``K = 500`` on a Transformer layer of the previous model in the next. Labels at another rate
   than the model's 50 Hz (MFCC's 100 Hz) are read as fairseq reads them: model frame ``i`` takes label
   ``floor(i * label_rate / 50)``, and frames beyond the last label are dropped (``forward_targets``).
3. **Prediction head** (Sec. II-B): a projection ``A`` of the Transformer output ``o_t`` to
   ``final_dim = 256`` and one embedding ``e_c`` per cluster;
   ``p(c | X~, t) = exp(cos(A o_t, e_c) / tau) / sum_c' exp(cos(A o_t, e_c') / tau)`` with
   ``tau = 0.1`` (fairseq ``logit_temp``). fairseq scores the target against all ``K`` embeddings with
   the target's duplicate set to ``-inf``: the same cross-entropy as this ``K``-way softmax.
4. **Loss** (Sec. II-B): ``L = alpha L_m + (1 - alpha) L_u``, the cross-entropy over masked and over
   unmasked frames, in fairseq's form ``pred_masked_weight * L_m + pred_nomask_weight * L_u`` (BASE:
   1 and 0, so ``alpha = 1``), both summed over frames and divided by the number of masked frames
   (fairseq ``sample_size``), plus 10 times the feature penalty (``loss_weights [10]``).
5. **Several label sets** (Sec. III-C, teacher ensembles): ``num_classes`` lists ``K`` of each set;
   each set has its own block of the projection (fairseq ``untie_final_proj``) and its own embeddings,
   and the losses of the sets add up.

Sizes (Table I; torchaudio ``hubert_pretrain_*``): BASE is wav2vec 2.0 BASE (12 x 768, post-LN, group-norm
encoder, LayerDrop 0.05); LARGE 24 x 1024 and X-LARGE 48 x 1280, both pre-LN with a layer-norm
feature encoder *without* convolution bias (unlike wav2vec 2.0 LARGE), no dropout and no LayerDrop,
the encoder's gradient unscaled (``feature_grad_mult 1.0``), final dimension 768 and 1024. fairseq's
LARGE and X-LARGE also normalise each waveform to zero mean and unit variance (``normalize: true``),
which happens in the data, not in the model (torchaudio's models do not do it either).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import IGNORE_INDEX
from ..errors import ConfigError, config_error
from ..frames import MFCC_FRAMES, MODEL_FRAMES, FrameGrid, labels_on_grid
from .encoder import EncoderConfig, EncoderOutput, MaskedEncoder
from .inputs import audio_from_batch, check_min_samples
from .wav2vec2 import WAV2VEC2_PRESETS

__all__ = ["HUBERT_PRESETS", "Hubert", "HubertConfig"]

@dataclass
class HubertConfig(EncoderConfig):
    """Configuration of :class:`Hubert`: the shared encoder's and the prediction head's; the defaults are
    BASE's first iteration (``preset("base")``)."""

    mask_prob: float = 0.80              # Sec. IV-C: p = 8% of the frames start a span (fairseq mask_prob 0.80)
    num_classes: tuple[int, ...] = (100,)   # K of each label set (first iteration: MFCC k-means, K = 100)
    label_rate: int = 50                 # rate of the labels given to the model, Hz (MFCC labels: 100)
    pred_masked_weight: float = 1.0      # alpha (fairseq pred_masked_weight)
    pred_nomask_weight: float = 0.0      # 1 - alpha (fairseq pred_nomask_weight)
    untie_final_proj: bool = True        # one projection block per label set (hubert_base_librispeech.yaml)

    def __post_init__(self) -> None:
        self.num_classes = tuple(int(k) for k in self.num_classes) if isinstance(self.num_classes, Sequence) \
            else (int(self.num_classes),)
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        if not self.num_classes or any(k < 1 for k in self.num_classes):
            raise config_error(owner, "num_classes", "one K >= 1 per label set", self.num_classes)
        if self.label_rate not in (int(MODEL_FRAMES.rate), 100):
            raise config_error(owner, "label_rate", "50 (the model's frame rate) or 100 (MFCC frames)",
                               self.label_rate)
        if min(self.pred_masked_weight, self.pred_nomask_weight) < 0 or \
                self.pred_masked_weight + self.pred_nomask_weight == 0:
            raise config_error(owner, "pred_masked_weight/pred_nomask_weight", "weights >= 0, not both 0",
                               (self.pred_masked_weight, self.pred_nomask_weight))

    @property
    def label_grid(self) -> FrameGrid:
        """The frame grid of the labels: 50 Hz model frames or 100 Hz MFCC frames."""
        return MODEL_FRAMES if self.label_rate == int(MODEL_FRAMES.rate) else MFCC_FRAMES

    @classmethod
    def preset(cls, name: str, **overrides) -> "HubertConfig":
        """``"base"``, ``"large"``, ``"xlarge"``, ``"reduced"`` (one GPU) or ``"tiny"`` (a CPU), with fields replaced."""
        if name not in HUBERT_PRESETS:
            raise ConfigError(f"HubertConfig.preset: expected one of {sorted(HUBERT_PRESETS)}, found {name!r}")
        return dataclasses.replace(HUBERT_PRESETS[name], **overrides)


def _encoder_of(preset: str, **changes) -> dict:
    """The encoder fields of a wav2vec 2.0 preset (HuBERT reuses its network), with changes."""
    w = WAV2VEC2_PRESETS[preset]
    shared = {f.name for f in dataclasses.fields(EncoderConfig)} - {"mask_prob"}
    return {**{k: getattr(w, k) for k in shared}, **changes}


#: LARGE and X-LARGE (Table I; fairseq hubert_large_lv60k / hubert_xlarge_lv60k, torchaudio
#: hubert_pretrain_large / _xlarge): layer-norm encoder without bias, pre-LN, no dropout or LayerDrop,
#: the encoder's gradient unscaled, and the second iteration's K = 500 labels at 50 Hz.
_BIG = dict(extractor_mode="layer_norm", conv_bias=False, layer_norm_first=True, dropout=0.0, attention_dropout=0.0,
            activation_dropout=0.0, dropout_input=0.0, layer_drop=0.0, feature_grad_mult=1.0, num_classes=(500,))
HUBERT_PRESETS: dict[str, HubertConfig] = {
    "base": HubertConfig(**_encoder_of("base")),
    "large": HubertConfig(**_encoder_of("large", **_BIG, final_dim=768)),
    "xlarge": HubertConfig(**_encoder_of("large", **_BIG, embed_dim=1280, num_layers=48, num_heads=16, ffn_dim=5120,
                                         final_dim=1024)),
    "reduced": HubertConfig(**_encoder_of("reduced")),
    # wav2vec 2.0's tiny encoder with chapter 3's calibration (spans of 3 frames, an 8-frame positional
    # convolution, no feature penalty), HuBERT's mask_prob
    "tiny": HubertConfig(**_encoder_of("tiny")),
}


class Hubert(MaskedEncoder):
    """HuBERT: the masked encoder of wav2vec 2.0 trained to predict the hidden unit of every masked frame."""

    def __init__(self, cfg: HubertConfig | None = None) -> None:
        cfg = cfg if cfg is not None else HubertConfig()
        super().__init__(cfg)
        blocks = len(cfg.num_classes) if cfg.untie_final_proj else 1
        self.final_proj = nn.Linear(cfg.embed_dim, cfg.final_dim * blocks)                  # A
        # e_c of every label set, one after the other (fairseq label_embs_concat, init uniform [0, 1))
        self.label_embs = nn.Parameter(torch.empty(sum(cfg.num_classes), cfg.final_dim).uniform_())
        self.reset_parameters()

    # -- facts ------------------------------------------------------------------------------------
    @property
    def min_input_samples(self) -> int:
        """Shortest usable utterance: room for one span of ``M`` masked frames and an unmasked one."""
        return self.receptive_field + self.cfg.mask_length * self.hop

    @property
    def chance_loss(self) -> float:
        """``ln K`` of the first label set: the masked cross-entropy of a uniform guess (4.605 for K = 100)."""
        return math.log(self.cfg.num_classes[0])

    # -- targets ----------------------------------------------------------------------------------
    def frame_targets(self, labels: Sequence[torch.Tensor], num_frames: int) -> list[torch.Tensor]:
        """Each label set ``(B, L)`` at the model's frames (fairseq ``forward_targets``): the first
        ``n <= num_frames`` frames, ``n`` the same for every set."""
        grid = self.cfg.label_grid
        out = [labels_on_grid(y, grid, MODEL_FRAMES, num_frames) for y in labels]
        n = min(y.shape[-1] for y in out)
        return [y[..., :n] for y in out]

    def check_labels(self, labels: Sequence[torch.Tensor]) -> None:
        """A clear error for a label set that does not match the configuration."""
        owner = type(self).__name__
        if len(labels) != len(self.cfg.num_classes):
            raise ConfigError(f"{owner}: expected {len(self.cfg.num_classes)} label set(s) (num_classes="
                              f"{self.cfg.num_classes}), found {len(labels)}")
        for i, (y, k) in enumerate(zip(labels, self.cfg.num_classes)):
            if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise ConfigError(f"{owner}: labels of set {i}: expected integer cluster ids, found {y.dtype}")
            valid = y[y != IGNORE_INDEX]
            if len(valid) and (int(valid.min()) < 0 or int(valid.max()) >= k):
                raise ConfigError(f"{owner}: labels of set {i}: expected cluster ids in [0, {k}) (num_classes), "
                                  f"found ids from {int(valid.min())} to {int(valid.max())}")

    # -- the head ---------------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``cos(A o_t, e_c) / tau`` of frames ``x`` ``(N, D)`` against every cluster of each label set:
        one ``(N, K_i)`` tensor per set."""
        cfg = self.cfg
        # [eq hubert-logits]
        proj = self.final_proj(x)                                              # (N, F) or (N, F * sets)
        blocks = proj.chunk(len(cfg.num_classes), -1) if cfg.untie_final_proj else [proj] * len(cfg.num_classes)
        embs = self.label_embs.split(list(cfg.num_classes), 0)                # (K_i, F) per label set
        return [F.cosine_similarity(p.float().unsqueeze(1), e.float().unsqueeze(0), dim=-1) / cfg.logit_temp
                for p, e in zip(blocks, embs)]
        # [/eq hubert-logits]

    # -- the loss ---------------------------------------------------------------------------------
    def compute_loss(self, batch: Mapping, num_updates: int = 0) -> tuple[torch.Tensor, dict]:
        """Masked prediction of the hidden units, over ``batch["labels"]`` (one ``(B, L)`` tensor per label
        set, or one tensor; padding ``-100``) at ``label_rate``.

        Metrics: ``loss_m`` / ``loss_u`` (cross-entropy per masked / unmasked frame, in nats; fairseq
        logs bits, these divided by ln 2), ``acc_m`` / ``acc_u`` (the target scored highest), the same
        for every further label set with a suffix ``_1``, ``_2`` ..., ``features_pen``, ``num_masked``,
        ``mask_frac``.
        """
        owner = type(self.cfg).__name__
        audio, lengths = audio_from_batch(batch, owner)
        check_min_samples(lengths, self.min_input_samples, owner,
                          f"{self.cfg.mask_length + 1} frames: a masked span of {self.cfg.mask_length} and an "
                          f"unmasked frame")
        if "labels" not in batch:
            raise ConfigError(f"{owner}.compute_loss: the batch has no 'labels' (the teacher's units of each frame)")
        labels = batch["labels"]
        labels = [labels] if torch.is_tensor(labels) else list(labels)
        self.check_labels(labels)
        feats, frames, pen = self.encode(audio, lengths)
        targets = self.frame_targets([y.to(feats.device) for y in labels], feats.shape[1])
        n = targets[0].shape[-1]                     # labels shorter than the audio: fairseq drops the last frames
        return self.pretraining_loss(self.contextualize(feats[:, :n], frames.clamp(max=n), pen, mask=True), targets)

    def pretraining_loss(self, out: EncoderOutput, targets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The loss of :meth:`compute_loss` from a masked forward pass and the targets at its frames."""
        cfg = self.cfg
        labelled = targets[0] != IGNORE_INDEX
        for y in targets[1:]:
            labelled = labelled & (y != IGNORE_INDEX)
        m = out.mask & labelled                                                # masked frames with a label
        u = ~out.mask & labelled                                               # unmasked frames with a label
        num_m, num_u = int(m.sum()), int(u.sum())
        sample_size = max(num_m if cfg.pred_masked_weight > 0 else num_u, 1)  # fairseq sample_size
        loss = cfg.feature_pen_weight * out.features_pen
        metrics: dict = {"features_pen": out.features_pen.detach(), "num_masked": float(num_m),
                         "mask_frac": num_m / max(num_m + num_u, 1)}
        for which, sel, weight in (("m", m, cfg.pred_masked_weight), ("u", u, cfg.pred_nomask_weight)):
            logits = self.logits(out.x[sel])
            for i, (lg, y) in enumerate(zip(logits, targets)):
                y = y[sel]
                # [eq hubert-loss]
                ce = F.cross_entropy(lg, y, reduction="sum")                   # summed over the frames
                loss = loss + weight * ce / sample_size
                # [/eq hubert-loss]
                suffix = f"_{i}" if i else ""
                with torch.no_grad():
                    hit = (lg.argmax(-1) == y) & ~(lg.argmin(-1) == y)         # fairseq compute_correct
                    metrics[f"loss_{which}{suffix}"] = ce.detach() / max(len(y), 1)
                    metrics[f"acc_{which}{suffix}"] = hit.float().sum() / max(len(y), 1)
        return loss, metrics
