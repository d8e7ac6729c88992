"""Phone alignment from eSpeak NG's PHONEME events (step 3 of the pipeline described in
:mod:`speechssl.data.synth`), and the synthesis and phonemisation of one utterance built on it."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ...errors import SynthesisError
from ...frames import SAMPLE_RATE
from ..phones import PHONE_TO_ID, SILENCE, fold_sequence, phones_of
from ..sentences import sentence_words
from .espeak import ESPEAK_SAMPLE_RATE, get_espeak
from .resample import _resampler


def align_phonemes(events: Sequence[tuple[int, str]], num_samples_out: int,
                   rate_in: int = ESPEAK_SAMPLE_RATE, rate_out: int = SAMPLE_RATE,
                   context: str = "") -> list[tuple[str, int, int]]:
    """Phone segments ``(phone, start, end)`` that tile ``[0, num_samples_out)`` exactly.

    ``events`` are eSpeak ``(sample, mnemonic)`` pairs at ``rate_in``. A phoneme spans from its
    event, converted to ``rate_out`` by rounding ``sample * rate_out / rate_in`` (the
    resampler has no delay, so times map by the rate ratio), to the next event. Then:

    * audio before the first event and pauses are ``sil``; consecutive ``sil`` segments merge;
    * a phoneme that folds to several phones splits its span evenly among them;
    * an absorbed phoneme (``;``, an ``r`` after ``ER``) extends the phoneme before it;
    * a phoneme with zero duration joins the span of the phoneme before it (or after it,
      after a pause), which is then split evenly. eSpeak synthesises a post-vocalic ``l``
      (and the Scottish post-vocalic ``r``) as the end of the vowel's formant transition and
      reports it at the same sample as the next phoneme; about 0.4% of the phonemes of the
      corpus are such cases, and this keeps them in the transcript with a plausible span.

    Raises:
        UnknownPhonemeError: for a phoneme without a mapping.
    """
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    folded = fold_sequence([name for _, name in events], context)
    starts: list[int] = []
    prev = 0
    for sample, _ in events:
        s = min(max((int(sample) * up + down // 2) // down, prev), num_samples_out)
        starts.append(s)
        prev = s
    # Spans [begin, end, phones]; pauses are [begin, end, ["sil"]].
    spans: list[list[Any]] = [[0, starts[0] if starts else num_samples_out, [SILENCE]]]
    carry: list[str] = []                 # zero-length phones waiting for a span after a pause
    for i, phones in enumerate(folded):
        begin = starts[i]
        end = starts[i + 1] if i + 1 < len(starts) else num_samples_out
        real = bool(phones) and phones != (SILENCE,)
        if not phones:                    # absorbed into the preceding phoneme
            spans[-1][1] = max(spans[-1][1], end)
            continue
        if end <= begin:
            if real:
                if spans[-1][2] != [SILENCE]:
                    spans[-1][2].extend(phones)
                else:
                    carry.extend(phones)
            continue
        if real and carry:
            phones, carry = tuple(carry) + phones, []
        spans.append([begin, end, list(phones)])
    if carry:                             # only pauses after them: give them the last phone's span
        last = next((sp for sp in reversed(spans) if sp[2] != [SILENCE]), None)
        if last is None:
            raise SynthesisError(f"no phone has a duration ({context})")
        last[2].extend(carry)
    segments: list[list[Any]] = []
    for begin, end, phones in spans:
        k = len(phones)
        for j, phone in enumerate(phones):
            b, e = begin + (end - begin) * j // k, begin + (end - begin) * (j + 1) // k
            if e <= b:
                continue
            if segments and phone == SILENCE and segments[-1][0] == SILENCE:
                segments[-1][2] = e
            else:
                segments.append([phone, b, e])
    return [(p, int(b), int(e)) for p, b, e in segments]


def _check_tiling(alignment: Sequence[tuple[str, int, int]], num_samples: int) -> None:
    pos = 0
    for phone, b, e in alignment:
        if b != pos or e <= b or phone not in PHONE_TO_ID:
            raise SynthesisError(f"alignment does not tile the audio at segment {(phone, b, e)} "
                                 f"(expected start {pos})")
        pos = e
    if pos != num_samples:
        raise SynthesisError(f"alignment ends at {pos}, audio has {num_samples} samples")


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
               *, seed: int | None = None) -> tuple[np.ndarray, list[tuple[str, int, int]], list[str]]:
    """Synthesise ``text`` at 16 kHz with its phone alignment.

    Returns:
        ``(audio, alignment, words)``: float32 audio in [-1, 1] at 16 kHz; ``(phone, start,
        end)`` segments in 16 kHz samples that tile the audio (``sil`` included); the
        LibriSpeech-style word transcript.

    eSpeak NG keeps some state between calls (see :mod:`speechssl.data.synth`), so two calls
    with the same arguments in one process can differ by a few samples;
    :func:`~speechssl.data.synth.generate_corpus` is exactly reproducible.

    Raises:
        EmptyTextError: for empty text. SynthesisError: for an unknown voice or a missing
        library. ConfigError: for a rate or pitch out of range.
    """
    raw = get_espeak().synthesize_raw(text, voice, rate, pitch, seed=seed)
    audio = _resampler()(raw.audio.astype(np.float32) / 32768.0)
    alignment = align_phonemes(raw.events, len(audio), context=f"{voice}: {text!r}")
    _check_tiling(alignment, len(audio))
    return audio, alignment, sentence_words(text)


def text_to_phones(text: str, voice: str = "en-us") -> list[str]:
    """The phone transcript (no ``sil``) that synthesising ``text`` with ``voice`` would give,
    computed by phonemisation only (no audio)."""
    return _clauses_to_phones(get_espeak().text_to_phonemes(text, voice), f"{voice}: {text!r}")


def _clauses_to_phones(clauses: list[list[list[str]]], context: str) -> list[str]:
    # A pause between clauses, as in synthesis: the r-linking rules do not cross it.
    names: list[str] = []
    for clause in clauses:
        if names:
            names.append("_")
        names.extend(n for word in clause for n in word)
    return phones_of(names, context=context)
