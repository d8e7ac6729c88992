"""The text side of wav2vec-U and its unsupervised selection metric (fairseq ``examples/wav2vec/unsupervised``).

Text side (``prepare_text.sh``): a lexicon phonemises every word once (fairseq runs ``phonemize`` on the
word list; this book runs the same eSpeak NG path as its corpus, :func:`lexicon`), then
:func:`with_silence` writes each sentence as phones with ``<SIL>`` around it and between words with
probability 0.25 (``phonemize_with_sil.py -s 0.25 --surround``; Sec. 2.4). The corpus's ``sil`` (id 0)
is ``<SIL>``. :func:`text_batches` pads the sentences into the id tensor the discriminator reads.

The synthetic corpus brings its unpaired sentences (``unpaired_text.jsonl``); on LibriSpeech they are a text
file of one sentence per line, the paper's LibriSpeech language-model corpus (:func:`read_sentences`).

Unsupervised model selection (Sec. 3.3; fairseq ``unpaired_audio_text.py``): :func:`weighted_lm_ppl`.
"""

from __future__ import annotations

import gzip
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from .data.manifest import Sentence
from .data.phones import PHONES, SILENCE
from .errors import ConfigError
from .ngram import PhoneLM

__all__ = ["read_sentences", "InventoryError", "check_inventory", "check_same_inventory", "lexicon", "with_silence",
           "pad_sequences", "vocabulary_usage", "Selection", "weighted_lm_ppl", "phones_without_silence",
           "text_batches"]


class InventoryError(ConfigError):
    """Symbols outside the phone inventory, or two sides with different inventories."""


def check_inventory(sequences: Iterable[Sequence[str]], inventory: Sequence[str], source: str) -> None:
    """Refuse ``sequences`` whose symbols are not all in ``inventory``, naming ``source`` and them."""
    known = set(inventory)
    unknown = sorted({s for seq in sequences for s in seq if s not in known})
    if unknown:
        raise InventoryError(f"{source}: expected phones of the inventory ({len(known)} symbols: "
                             f"{' '.join(inventory[:6])} ...), found {len(unknown)} others: {' '.join(unknown[:10])}")


def check_same_inventory(audio: Sequence[str], text: Sequence[str]) -> None:
    """The generator's outputs and the text's symbols must be the same list, in the same order."""
    if list(audio) != list(text):
        only_a, only_t = sorted(set(audio) - set(text)), sorted(set(text) - set(audio))
        raise InventoryError(f"the audio side's phone inventory ({len(audio)} symbols) and the text's "
                             f"({len(text)}) differ: only in audio {only_a or '-'}, only in text {only_t or '-'}"
                             + ("" if only_a or only_t else ", same symbols in another order"))


def lexicon(words: Iterable[str], voice: str = "en-us") -> dict[str, list[str]]:
    """Each distinct word phonemised alone by eSpeak NG and folded onto the corpus's phones."""
    from .data.synth.align import text_to_phones

    return {w: text_to_phones(w.lower(), voice) for w in sorted(set(words))}


def with_silence(words: Sequence[Sequence[str]], prob: float, rng: random.Random, *, surround: bool = True
                 ) -> list[str]:
    """A sentence given as the phones of its words, with ``sil`` between two words with probability
    ``prob`` and, with ``surround``, at both ends."""
    if not 0 <= prob <= 1:
        raise ConfigError(f"silence probability: expected a number in [0, 1], found {prob!r}")
    out = [SILENCE] if surround else []
    for i, w in enumerate(words):
        if i and rng.random() < prob:
            out.append(SILENCE)
        out.extend(w)
    return out + [SILENCE] if surround else out


def pad_sequences(seqs: Sequence[torch.Tensor], value: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (N, T_max, ...) tensor and the lengths (N,)."""
    return pad_sequence(list(seqs), batch_first=True, padding_value=value), torch.tensor([len(s) for s in seqs])


def vocabulary_usage(hypotheses: Iterable[Sequence[str]], inventory: Sequence[str]) -> float:
    """Share of the inventory's phones (``sil`` excluded) that the hypotheses use at least once."""
    phones = [p for p in inventory if p != SILENCE]
    seen = {p for h in hypotheses for p in h} & set(phones)
    return len(seen) / len(phones)


@dataclass(frozen=True)
class Selection:
    """The unsupervised selection metric of one model (lower is better) and its two parts."""

    lm_ppl: float
    usage: float

    @property
    def weighted_lm_ppl(self) -> float:
        return self.lm_ppl / self.usage ** 2 if self.usage > 0 else math.inf


def weighted_lm_ppl(lm: PhoneLM, hypotheses: Sequence[Sequence[str]], inventory: Sequence[str] = PHONES) -> Selection:
    """fairseq's ``weighted_lm_ppl`` (``unpaired_audio_text.py``, ``vocab_usage_power 2``):

        lm_ppl / usage^2,  lm_ppl = 10^(-sum log10 p(h) / (sum |h| + number of sentences))

    over the generator's argmax phone sequences ``h`` of unlabelled audio with ``sil`` removed (``</s>``
    is predicted once per sentence, hence the added count), ``usage`` the share of the inventory's phones
    it emits (:func:`vocabulary_usage`). fairseq divides the phones seen by an inventory that includes
    ``<SIL>``, which it never counts as seen (at most (V - 1) / V); here neither side counts ``sil``. The
    paper's Sec. 3.3 states the same trade-off as a two-stage rule; fairseq's single number is the one its
    runs select checkpoints with.
    """
    hyps = [[p for p in h if p != SILENCE] for h in hypotheses]
    return Selection(lm.perplexity(hyps), vocabulary_usage(hyps, inventory))


def phones_without_silence(ids: Sequence[int], inventory: Sequence[str] = PHONES) -> list[str]:
    return [inventory[i] for i in ids if inventory[i] != SILENCE]


def text_batches(sentences: Mapping[str, Sequence[str]] | Sequence[Sequence[str]], inventory: Sequence[str] = PHONES
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Phone sentences as one padded id tensor (N, L) and lengths (N,), checked against the inventory."""
    rows = list(sentences.values()) if isinstance(sentences, Mapping) else list(sentences)
    if not rows:
        raise ConfigError("unpaired text: expected at least one sentence, found an empty split")
    check_inventory(rows, inventory, "unpaired text")
    index = {p: i for i, p in enumerate(inventory)}
    return pad_sequences([torch.tensor([index[p] for p in r], dtype=torch.long) for r in rows])


def read_sentences(path: str | os.PathLike) -> list[Sentence]:
    """Unpaired text from a plain-text file (or its ``.gz``), one sentence per line, its words the line's
    whitespace-separated tokens (LibriSpeech's ``librispeech-lm-norm.txt`` is upper-case words already); blank
    lines are skipped. The sentences' phones come later, from :func:`lexicon`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--text {path}: expected a text file of sentences, one per line, found nothing there")
    with (gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else open(p, encoding="utf-8")) as f:
        return [Sentence(id=f"{p.name}:{i}", text=line.strip(), words=line.split(), phones=[])
                for i, line in enumerate(f, 1) if line.strip()]
