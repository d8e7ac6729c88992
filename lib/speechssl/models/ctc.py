"""Fine-tuning a wav2vec 2.0 or HuBERT encoder with CTC (Baevski et al. 2020, Sec. 3.3 and Sec. 4.3;
HuBERT, Hsu et al. 2021, Sec. IV-D, fine-tunes the same way).

A randomly initialised linear layer on top of the Transformer maps every 20 ms frame to the
output symbols plus the CTC blank, and the model is trained with CTC (Graves et al. 2006) on a
few labeled utterances. Following the paper and fairseq's ``wav2vec_ctc`` model:

- the feature encoder is not trained (fairseq ``feature_grad_mult: 0.0``);
- the Transformer is frozen for the first ``freeze_updates`` updates, so that only the new
  output layer learns while it is random (fairseq ``freeze_finetune_updates``; 10k of 13k
  updates for the 10-minute split, ``base_10m.yaml``);
- a modified SpecAugment (Park et al. 2019) masks spans of time steps with the learned mask
  vector and spans of channels with zeros (``mask_prob 0.65`` / length 10 and
  ``mask_channel_prob 0.25`` / length 64 for the 10-minute split);
- the loss is summed over an utterance and averaged over utterances (``sentence_avg: true``),
  with infinite losses (targets longer than the frames) set to zero (``zero_infinity: true``).

``linear_probe=True`` keeps the whole encoder frozen for the entire run: frozen pre-trained
features with a linear CTC layer, the third row of the fine-tuning chapter's table. A model
trained from scratch on the labels (the first row) sets ``freeze_updates=0`` and
``train_feature_encoder=True``: a random encoder that never learns would be no baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transcripts import BLANK
from ..errors import ConfigError, config_error
from ..nn.masking import MaskSpec
from .inputs import audio_from_batch, check_min_samples
from .encoder import MaskedEncoder

__all__ = ["CTCConfig", "Wav2Vec2CTC"]


@dataclass
class CTCConfig:
    """Fine-tuning settings; the defaults are fairseq's ``base_10m.yaml`` (10 minutes of labels)."""

    freeze_updates: int = 10_000         # freeze_finetune_updates: Transformer frozen before this update
    linear_probe: bool = False           # keep the whole encoder frozen (frozen features + linear CTC)
    train_feature_encoder: bool = False  # True only for a model trained from scratch on the labels
    mask_prob: float = 0.65              # time masking, fairseq semantics (p * M, see Wav2Vec2Config)
    mask_length: int = 10
    mask_channel_prob: float = 0.25      # channel masking: share of channels covered ...
    mask_channel_length: int = 64        # ... by spans of this many channels
    layer_drop: float = 0.1              # layerdrop: 0.1
    final_dropout: float = 0.0           # dropout before the output layer (fairseq final_dropout default)

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if not isinstance(self.freeze_updates, int) or self.freeze_updates < 0:
            raise config_error(owner, "freeze_updates", "an integer >= 0", self.freeze_updates)
        for name in ("mask_length", "mask_channel_length"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise config_error(owner, name, "an integer >= 1", v)
        if not 0.0 <= self.mask_prob < self.mask_length:
            raise config_error(owner, "mask_prob", f"in [0, mask_length={self.mask_length})", self.mask_prob)
        if not 0.0 <= self.mask_channel_prob < self.mask_channel_length:
            raise config_error(owner, "mask_channel_prob", f"in [0, mask_channel_length={self.mask_channel_length})",
                               self.mask_channel_prob)
        for name in ("layer_drop", "final_dropout"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise config_error(owner, name, "a probability in [0, 1)", v)
        if self.linear_probe and self.train_feature_encoder:
            raise config_error(owner, "train_feature_encoder", "False with linear_probe=True (a frozen encoder)", True)

    @property
    def time_mask(self) -> MaskSpec:
        """SpecAugment in time (fairseq ``apply_mask``: ``min_masks=2``), spans replaced by ``mask_emb``."""
        return MaskSpec.fairseq(self.mask_prob, self.mask_length, min_spans=2)

    @property
    def channel_mask(self) -> MaskSpec:
        """SpecAugment over channels (fairseq ``mask_channel_*``, no minimum), spans set to 0."""
        return MaskSpec.fairseq(self.mask_channel_prob, self.mask_channel_length)


class Wav2Vec2CTC(nn.Module):
    """A :class:`~speechssl.models.wav2vec2.Wav2Vec2` or :class:`~speechssl.models.hubert.Hubert` encoder with a
    linear CTC output layer.

    ``vocab`` lists the output symbols; index 0 of the output is the blank, symbol ``i`` of
    ``vocab`` is output ``i + 1``. The pre-training parts of the encoder (quantizer or
    prediction head, final projection) stay in the module, unused, so a pre-trained state dict loads as it is.

    Shapes: ``audio`` ``(B, T)``, ``lengths`` ``(B,)`` -> log-probabilities ``(B, T', 1 + V)``
    and frame lengths ``(B,)``.
    """

    def __init__(self, encoder: MaskedEncoder, vocab: Sequence[str], cfg: CTCConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else CTCConfig()
        if len(vocab) == 0 or len(set(vocab)) != len(vocab):
            raise ConfigError(f"Wav2Vec2CTC.vocab: expected distinct symbols, found {list(vocab)[:10]} "
                              f"({len(vocab)} symbols, {len(set(vocab))} distinct)")
        self.vocab = list(vocab)
        self.index = {s: i + 1 for i, s in enumerate(self.vocab)}
        self.encoder = encoder
        self.encoder.encoder.layer_drop = cfg.layer_drop
        self.final_dropout = nn.Dropout(cfg.final_dropout)
        self.head = nn.Linear(encoder.cfg.embed_dim, 1 + len(self.vocab))
        nn.init.xavier_uniform_(self.head.weight)                   # fairseq Linear() for the CTC projection
        nn.init.zeros_(self.head.bias)
        if not cfg.train_feature_encoder:                             # feature_grad_mult 0.0
            for p in self.encoder.feature_encoder.parameters():
                p.requires_grad_(False)
        if cfg.linear_probe:
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    @property
    def min_input_samples(self) -> int:
        """Shortest usable utterance: one frame (the transcript's length is checked by the dataset)."""
        return self.encoder.receptive_field

    @property
    def num_outputs(self) -> int:
        return 1 + len(self.vocab)

    def encode_targets(self, symbols: Sequence[str], *, source: str = "transcription") -> torch.Tensor:
        """Symbols -> output indices ``(S,)``; an unknown symbol is an error naming ``source``."""
        unknown = sorted({s for s in symbols if s not in self.index})
        if unknown:
            raise ConfigError(f"{source}: symbols {unknown} are not in the CTC vocabulary of {len(self.vocab)} symbols")
        return torch.tensor([self.index[s] for s in symbols], dtype=torch.int64)

    def decode_ids(self, ids: Sequence[int]) -> list[str]:
        return [self.vocab[i - 1] for i in ids if i != BLANK]

    def trains_encoder(self, num_updates: int) -> bool:
        """Whether the Transformer gets gradients at this update (after ``freeze_updates``)."""
        return not self.cfg.linear_probe and num_updates >= self.cfg.freeze_updates

    def channel_mask(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``(B, D)`` bool: channels zeroed over the whole utterance (fairseq ``mask_channel_*``)."""
        dim = self.encoder.cfg.embed_dim
        return self.cfg.channel_mask.sample(torch.full((batch_size,), dim, dtype=torch.int64, device=device), dim)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None, *, num_updates: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], dtype=torch.int64, device=audio.device)
        time_mask = self.cfg.time_mask if self.training and self.cfg.mask_prob > 0 else False  # spans -> mask_emb
        cmask = None
        if self.training and self.cfg.mask_channel_prob > 0:                     # channel spans -> 0
            cmask = self.channel_mask(audio.shape[0], audio.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trains_encoder(num_updates)):
            out = self.encoder(audio, lengths, mask=time_mask, channel_mask=cmask)
        logits = self.head(self.final_dropout(out.x))                           # (B, T', 1 + V)
        return logits.float().log_softmax(-1), out.lengths

    def compute_loss(self, batch: Mapping, num_updates: int = 0) -> tuple[torch.Tensor, dict]:
        """CTC summed per utterance, averaged over utterances. ``batch``: ``audio``, ``lengths``,
        ``targets`` ``(B, S)`` padded with -1 and ``target_lengths`` ``(B,)``
        (:func:`~speechssl.data.transcripts.collate_ctc`).

        Metrics: ``ctc_loss`` and ``frozen`` (1 while the Transformer is frozen).
        """
        owner = type(self).__name__
        audio, lengths = audio_from_batch(batch, owner)
        check_min_samples(lengths, self.encoder.receptive_field, owner, "one frame")
        if "targets" not in batch or "target_lengths" not in batch:
            raise ConfigError(f"{owner}: the batch needs 'targets' and 'target_lengths' (use collate_ctc); "
                              f"found keys {sorted(batch)}")
        targets, target_lengths = batch["targets"], batch["target_lengths"]
        log_probs, frames = self(audio, lengths, num_updates=num_updates)
        flat = targets[targets >= 0]
        loss = F.ctc_loss(log_probs.transpose(0, 1), flat.to(log_probs.device), frames, target_lengths,
                          blank=BLANK, reduction="sum", zero_infinity=True) / audio.shape[0]
        return loss, {"ctc_loss": loss.detach(), "frozen": float(not self.trains_encoder(num_updates))}


