"""Transcribed audio for CTC: transcript units, the labeled dataset and its collate function.

The synthetic corpus is transcribed in phones (its phone transcript, silence excluded); LibriSpeech
in letters with ``|`` after every word, as fairseq's ``.ltr`` labels (``libri_labels.py``).
Output index 0 of every CTC vocabulary in the book is the blank.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch

from ..errors import ConfigError
from .dataset import collate_audio

__all__ = ["BLANK", "LETTERS", "UNITS", "WORD_BOUNDARY", "TranscribedAudio", "collate_ctc", "ctc_frames_needed",
           "letters_to_words", "transcript_units"]

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


def ctc_frames_needed(targets: torch.Tensor) -> int:
    """The fewest output frames a CTC alignment of ``targets`` needs: one per symbol, plus a blank between
    two equal neighbours (Graves et al. 2006)."""
    return int(len(targets) + (targets[1:] == targets[:-1]).sum())


class TranscribedAudio(torch.utils.data.Dataset):
    """Whole utterances with their transcripts as CTC targets.

    Wraps an :class:`~speechssl.data.dataset.AudioDataset` (which checks every file: rate,
    channels, length, NaN) and adds ``targets`` ``(S,)``: the utterance's
    :func:`transcript_units` (``unit="phones"`` for the synthetic corpus, ``"letters"`` for
    LibriSpeech) encoded by ``model.encode_targets``. An utterance without a transcript, or
    with a symbol the vocabulary lacks, is an error that names it.

    An utterance whose transcript needs more frames than its audio gives (:func:`ctc_frames_needed`
    against ``model.encoder.frame_lengths``) has no CTC alignment: its loss would be infinite, and
    fairseq's ``zero_infinity`` would silently make it 0. Such utterances are dropped here, with one
    warning that counts them and names the first; ``dropped`` lists their ids.
    """

    def __init__(self, audio: torch.utils.data.Dataset, model, unit: str = "phones") -> None:
        self.audio = audio
        targets = []
        for u in audio.utterances:
            symbols = transcript_units(u, unit)
            if not symbols:
                raise ConfigError(f"utterance {u.id!r} ({u.path}): no {unit[:-1]} transcript in the manifest; CTC "
                                  f"fine-tuning needs one for every utterance")
            targets.append(model.encode_targets(symbols, source=f"utterance {u.id!r}"))
        frames = model.encoder.frame_lengths(torch.tensor([u.num_samples for u in audio.utterances])).tolist()
        self.keep = [i for i, (t, f) in enumerate(zip(targets, frames)) if ctc_frames_needed(t) <= f]
        self.targets = [targets[i] for i in self.keep]
        kept = set(self.keep)
        self.dropped = [u.id for i, u in enumerate(audio.utterances) if i not in kept]
        if self.dropped:
            i = next(i for i, u in enumerate(audio.utterances) if u.id == self.dropped[0])
            warnings.warn(f"{len(self.dropped)} of {len(audio.utterances)} utterances have a transcript longer than "
                          f"their audio allows (e.g. {self.dropped[0]!r}: {ctc_frames_needed(targets[i])} frames "
                          f"needed, {frames[i]} available) and are left out", stacklevel=2)
        if not self.keep:
            raise ConfigError(f"every one of the {len(audio.utterances)} utterances has a transcript longer than its "
                              f"audio allows; check that the transcripts belong to this audio")

    def __len__(self) -> int:
        return len(self.keep)

    @property
    def sizes(self):
        """Length in samples of every item (for length-grouped batching)."""
        return self.audio.sizes[self.keep]

    def __getitem__(self, index: int) -> dict:
        item = self.audio[self.keep[index]]
        item["targets"] = self.targets[index]
        return item


def collate_ctc(items: Sequence[Mapping]) -> dict:
    """Pad ``audio`` (``(T,)`` each) and ``targets`` (``(S,)`` int64 each) into a batch:
    ``audio`` ``(B, T)``, ``lengths``, ``targets`` ``(B, S_max)`` padded with -1, ``target_lengths``."""
    batch = collate_audio([{k: v for k, v in it.items() if k != "targets"} for it in items])
    tl = torch.tensor([len(it["targets"]) for it in items], dtype=torch.int64)
    targets = torch.full((len(items), int(tl.max()) if len(items) else 0), -1, dtype=torch.int64)
    for i, it in enumerate(items):
        targets[i, : len(it["targets"])] = it["targets"]
    batch["targets"], batch["target_lengths"] = targets, tl
    return batch
