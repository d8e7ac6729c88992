"""Fine-tuning a wav2vec 2.0 encoder with CTC (Baevski et al. 2020, Sec. 3.3 and Sec. 4.3).

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

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..metrics import ErrorRate, phone_error_rate
from ..nn.conv import config_error
from ..nn.masking import span_mask
from .wav2vec import audio_from_batch, check_receptive_field
from .wav2vec2 import Wav2Vec2

__all__ = ["BLANK", "LETTERS", "UNITS", "WORD_BOUNDARY", "CTCConfig", "TranscribedAudio", "Wav2Vec2CTC", "beam_decode",
           "collate_ctc", "evaluate_per", "greedy_decode", "letters_to_words", "transcript_units", "word_error_rate"]

#: Index of the CTC blank in every vocabulary of this module.
BLANK = 0
#: Word boundary of letter transcripts (fairseq's ``.ltr`` labels, ``libri_labels.py``).
WORD_BOUNDARY = "|"
#: Output letters for LibriSpeech: the 26 upper-case letters, the apostrophe and the word boundary
#: (the symbols of fairseq's ``dict.ltr.txt`` for LibriSpeech).
LETTERS: tuple[str, ...] = (WORD_BOUNDARY, *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
#: Transcript units: ``phones`` (the synthetic corpus' phone transcripts) or ``letters`` (the text).
UNITS = ("phones", "letters")


def transcript_units(utterance, unit: str = "phones") -> list[str]:
    """The CTC target symbols of an utterance record.

    ``phones``: its phone transcript (silence excluded). ``letters``: the characters of its
    words, each word followed by the boundary ``|``, as in fairseq's ``.ltr`` labels
    (``"A CAT"`` -> ``A | C A T |``).
    """
    if unit == "phones":
        return list(utterance.phones)
    if unit == "letters":
        return [c for w in utterance.words for c in (*w.upper(), WORD_BOUNDARY)]
    raise ConfigError(f"transcript unit: expected one of {UNITS}, found {unit!r}")


def letters_to_words(symbols: Sequence[str]) -> list[str]:
    """Letters with ``|`` boundaries -> words (empty words from repeated boundaries dropped)."""
    return [w for w in "".join(symbols).split(WORD_BOUNDARY) if w]


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


class Wav2Vec2CTC(nn.Module):
    """A :class:`~speechssl.models.wav2vec2.Wav2Vec2` encoder with a linear CTC output layer.

    ``vocab`` lists the output symbols; index 0 of the output is the blank, symbol ``i`` of
    ``vocab`` is output ``i + 1``. The pre-training parts of the encoder (quantizer, final
    projection) stay in the module, unused, so a pre-trained state dict loads as it is.

    Shapes: ``audio`` ``(B, T)``, ``lengths`` ``(B,)`` -> log-probabilities ``(B, T', 1 + V)``
    and frame lengths ``(B,)``.
    """

    def __init__(self, encoder: Wav2Vec2, vocab: Sequence[str], cfg: CTCConfig | None = None) -> None:
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
        full = torch.full((batch_size,), dim, dtype=torch.int64, device=device)
        return span_mask(full, dim, self.cfg.mask_channel_prob / self.cfg.mask_channel_length,
                         self.cfg.mask_channel_length)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None, *, num_updates: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], dtype=torch.int64, device=audio.device)
        tmask: torch.Tensor | bool = False
        cmask = None
        if self.training and self.cfg.mask_prob > 0:                             # time spans -> mask_emb
            frames = enc.frame_lengths(lengths)
            num_frames = int(enc.frame_lengths(torch.tensor([audio.shape[-1]])))
            tmask = span_mask(frames, num_frames, self.cfg.mask_prob / self.cfg.mask_length, self.cfg.mask_length,
                              min_spans=2)
        if self.training and self.cfg.mask_channel_prob > 0:                     # channel spans -> 0
            cmask = self.channel_mask(audio.shape[0], audio.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trains_encoder(num_updates)):
            out = enc(audio, lengths, mask=tmask, channel_mask=cmask)
        logits = self.head(self.final_dropout(out.x))                           # (B, T', 1 + V)
        return logits.float().log_softmax(-1), out.lengths

    def compute_loss(self, batch: Mapping, num_updates: int = 0) -> tuple[torch.Tensor, dict]:
        """CTC summed per utterance, averaged over utterances. ``batch``: ``audio``, ``lengths``,
        ``targets`` ``(B, S)`` padded with -1 and ``target_lengths`` ``(B,)`` (see :func:`collate_ctc`).

        Metrics: ``ctc_loss`` and ``frozen`` (1 while the Transformer is frozen).
        """
        owner = type(self).__name__
        audio, lengths = audio_from_batch(batch, owner)
        check_receptive_field(lengths, self.encoder.feature_encoder, owner)
        if "targets" not in batch or "target_lengths" not in batch:
            raise ConfigError(f"{owner}: the batch needs 'targets' and 'target_lengths' (use collate_ctc); "
                              f"found keys {sorted(batch)}")
        targets, target_lengths = batch["targets"], batch["target_lengths"]
        log_probs, frames = self(audio, lengths, num_updates=num_updates)
        flat = targets[targets >= 0]
        loss = F.ctc_loss(log_probs.transpose(0, 1), flat.to(log_probs.device), frames, target_lengths,
                          blank=BLANK, reduction="sum", zero_infinity=True) / audio.shape[0]
        return loss, {"ctc_loss": loss.detach(), "frozen": float(not self.trains_encoder(num_updates))}


def collate_ctc(items: Sequence[Mapping]) -> dict:
    """Pad ``audio`` (``(T,)`` each) and ``targets`` (``(S,)`` int64 each) into a batch:
    ``audio`` ``(B, T)``, ``lengths``, ``targets`` ``(B, S_max)`` padded with -1, ``target_lengths``."""
    from ..data.dataset import collate_audio

    batch = collate_audio([{k: v for k, v in it.items() if k != "targets"} for it in items])
    tl = torch.tensor([len(it["targets"]) for it in items], dtype=torch.int64)
    targets = torch.full((len(items), int(tl.max()) if len(items) else 0), -1, dtype=torch.int64)
    for i, it in enumerate(items):
        targets[i, : len(it["targets"])] = it["targets"]
    batch["targets"], batch["target_lengths"] = targets, tl
    return batch


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: the most likely output per frame, repeats merged, blanks removed.

    ``log_probs`` ``(B, T, 1 + V)``, ``lengths`` ``(B,)`` -> output indices per utterance.
    """
    best = log_probs.argmax(-1).cpu()
    out = []
    for b, n in enumerate(lengths.tolist()):
        path = torch.unique_consecutive(best[b, : int(n)])
        out.append([int(i) for i in path if int(i) != BLANK])
    return out


class TranscribedAudio(torch.utils.data.Dataset):
    """Whole utterances with their transcripts as CTC targets.

    Wraps an :class:`~speechssl.data.dataset.AudioDataset` (which checks every file: rate,
    channels, length, NaN) and adds ``targets`` ``(S,)``: the utterance's
    :func:`transcript_units` (``unit="phones"`` for the synthetic corpus, ``"letters"`` for
    LibriSpeech) encoded by ``model.encode_targets``. An utterance without a transcript, or
    with a symbol the vocabulary lacks, is an error that names it.
    """

    def __init__(self, audio: torch.utils.data.Dataset, model: Wav2Vec2CTC, unit: str = "phones") -> None:
        self.audio = audio
        self.targets = []
        for u in audio.utterances:
            symbols = transcript_units(u, unit)
            if not symbols:
                raise ConfigError(f"utterance {u.id!r} ({u.path}): no {unit[:-1]} transcript in the manifest; CTC "
                                  f"fine-tuning needs one for every utterance")
            self.targets.append(model.encode_targets(symbols, source=f"utterance {u.id!r}"))

    def __len__(self) -> int:
        return len(self.audio)

    @property
    def sizes(self):
        """Length in samples of every item (for length-grouped batching)."""
        return self.audio.sizes

    def __getitem__(self, index: int) -> dict:
        item = self.audio[index]
        item["targets"] = self.targets[index]
        return item


@functools.lru_cache(maxsize=4)
def _beam_decoder(vocab: tuple[str, ...], beam_size: int):
    """torchaudio's lexicon-free decoder for ``vocab``, built once per vocabulary and beam size."""
    try:
        from torchaudio.models.decoder import ctc_decoder
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError("beam search needs torchaudio's CTC decoder and the flashlight-text package "
                          "(pip install flashlight-text)") from e
    # the decoder wants a silence token: the word boundary of letter vocabularies, else an extra
    # token that the model never emits (phones have no word boundary)
    extra = [] if WORD_BOUNDARY in vocab else [WORD_BOUNDARY]
    return ctc_decoder(lexicon=None, tokens=["<blank>", *vocab, *extra], lm=None, nbest=1, beam_size=beam_size,
                       blank_token="<blank>", sil_token=WORD_BOUNDARY, unk_word="<unk>", log_add=True)


def beam_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: Sequence[str], *, beam_size: int = 50
                ) -> list[list[int]]:
    """Lexicon-free beam search without a language model (``torchaudio.models.decoder.ctc_decoder``),
    merging hypotheses that reach the same labelling by adding their probabilities (``log_add``).

    Needs the ``flashlight-text`` package; raises ``ImportError`` naming it otherwise. Returns
    output indices (as :func:`greedy_decode`) of the best hypothesis per utterance. With a word
    boundary ``|`` in ``vocab`` (letters), the hypothesis has no leading boundary and ends with
    one, as the targets do.
    """
    decoder = _beam_decoder(tuple(vocab), beam_size)
    lp = log_probs.detach().float().cpu()
    if WORD_BOUNDARY not in vocab:
        never = torch.full((*lp.shape[:2], 1), -1e4)                      # log-probability of the extra silence
        lp = torch.cat([lp, never], -1)
    hyps = decoder(lp.contiguous(), lengths.to(torch.int32).cpu())
    out = [[int(t) for t in h[0].tokens if 0 < int(t) <= len(vocab)] for h in hyps]
    if WORD_BOUNDARY in vocab:
        # the decoder starts and ends every hypothesis with its silence token (the word boundary):
        # normalise to the targets' form, every word followed by one boundary
        b = list(vocab).index(WORD_BOUNDARY) + 1
        for toks in out:
            while toks and toks[0] == b:
                toks.pop(0)
            while toks and toks[-1] == b:
                toks.pop()
            if toks:
                toks.append(b)
    return out


def word_error_rate(pairs: Sequence[tuple[Sequence[str], Sequence[str]]]) -> ErrorRate:
    """WER of ``(reference, hypothesis)`` letter sequences (as :func:`evaluate_per` returns
    them for a letter vocabulary), split into words at ``|``."""
    return phone_error_rate([letters_to_words(r) for r, _ in pairs], [letters_to_words(h) for _, h in pairs])


@torch.no_grad()
def evaluate_per(model: Wav2Vec2CTC, batches: Sequence[Mapping], *, beam_size: int | None = None
                 ) -> tuple[ErrorRate, list[tuple[list[str], list[str]]]]:
    """Unit error rate of greedy (``beam_size=None``) or beam-search decoding over ``batches``
    (from :func:`collate_ctc`): ``(ErrorRate, [(reference, hypothesis), ...])``. The units are the
    model's vocabulary: the phone error rate for phones, the letter error rate for letters
    (see :func:`word_error_rate` for words)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pairs = []
    for b in batches:
        log_probs, frames = model(b["audio"].to(device), b["lengths"].to(device))
        hyps = (greedy_decode(log_probs, frames) if beam_size is None
                else beam_decode(log_probs, frames, model.vocab, beam_size=beam_size))
        for i, h in enumerate(hyps):
            ref = b["targets"][i, : int(b["target_lengths"][i])].tolist()
            pairs.append((model.decode_ids(ref), model.decode_ids(h)))
    model.train(was_training)
    return phone_error_rate([r for r, _ in pairs], [h for _, h in pairs]), pairs
