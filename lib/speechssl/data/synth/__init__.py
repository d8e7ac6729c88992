"""A deterministic, phone-aligned synthetic speech corpus generated offline with eSpeak NG.

Why a synthetic corpus
----------------------
The book's chapters need speech with *exact* phone boundaries (to measure how well learned
units match phones), many speakers, several splits including a 10-minute labelled set, and
unpaired text, all reproducible on a laptop or a free Colab runtime in seconds. A formant
synthesiser provides all of that: eSpeak NG (https://github.com/espeak-ng/espeak-ng) reports
every phoneme it produces together with the sample at which it starts, runs several hundred
times faster than real time, and ships as a pip wheel (``espeakng-loader``) that includes
``libespeak-ng`` and its data, so nothing has to be installed system-wide.

Pipeline for one utterance
--------------------------
1. :class:`EspeakNG` calls the C API through :mod:`ctypes` in synchronous mode; the synth
   callback collects the 22,050 Hz int16 audio and the PHONEME events (mnemonic name and
   ``sample``, the index of the first sample generated for that phoneme).
2. :class:`Resampler` converts to 16 kHz with a polyphase windowed-sinc filter that computes
   exactly what ``torchaudio.functional.resample`` computes (same Hann-windowed kernel, 6
   zero crossings, roll-off 0.99; the tests compare both), without needing torch in the
   worker processes.
3. :func:`align_phonemes` folds the events onto :data:`~speechssl.data.phones.PHONES` and
   turns them into segments that tile the utterance (see "Boundary convention").
4. For the corpus, the utterance is peak-normalised, padded with leading and trailing
   silence, given a faint white-noise floor (digital silence does not occur in recordings,
   and a model should not be able to detect pauses from exact zeros), quantised to 16 bits
   and written with :mod:`soundfile`.

Boundary convention
-------------------
A phone starts at its event's ``sample`` (converted to 16 kHz by rounding ``s * 320 / 441``)
and ends where the next event starts; audio before the first event, pauses (``_``, ``_:``)
and the added padding are ``sil``. eSpeak queues the PHONEME event together with the wave
generation commands of that phoneme, so ``sample`` is the first sample of the phoneme's own
audio; for stops this includes the closure, as in the CMU/TIMIT folded convention (closure
and burst are one phone). Measured on generated corpora (and checked by
``tests/test_synth.py``): 10 ms frames labelled ``sil`` are about 35 dB quieter (median) than
vowel frames, and the energy rises by about 30 dB (median) from the 10 ms before the end of a
pause to the 10 ms after it; without the noise floor, eSpeak's pauses are digital silence up
to 4 ms before the next phone's event. A post-vocalic ``l`` that eSpeak reports with zero
duration shares the vowel's span (see :func:`align_phonemes`).

Determinism and parallelism
---------------------------
``libespeak-ng`` keeps state from one utterance to the next that no API call resets:
function-level ``static`` variables of its wave generator (the pitch-flutter phase, the
glottal-cycle counter, the automatic gain). The same text can therefore come out a few
samples longer or shorter depending on what was synthesised before. To make a corpus depend
only on its configuration and seed, utterances are generated in fixed chunks of
:data:`CHUNK_SIZE`, and every chunk is synthesised in a process forked from a worker that
has initialised eSpeak but never synthesised anything, so every chunk starts from the same
engine state (on platforms without ``fork``, every chunk runs in a fresh process instead).
Chunk boundaries are fixed by the plan, so the output is byte-identical whatever the number
of workers. Everything random (speakers, sentences, jitter, padding, noise, eSpeak's own
noise generator) is drawn from :mod:`numpy` generators seeded from the corpus seed.

Corpus layout (``generate_corpus``)
-----------------------------------
``wav/<split>/<utt_id>.wav`` (16 kHz mono PCM_16), ``<split>.jsonl`` (one
:class:`~speechssl.data.manifest.Utterance` per line), ``<split>.frames.npz`` (100 Hz and
50 Hz frame labels), ``unpaired_text.jsonl`` (``id``, ``text``, ``words``, ``phones``,
``voice``), ``phones.txt`` (one phone per line, line number = id) and ``meta.json``. The
corpus is written to a temporary sibling folder that is renamed into place at the end, so an
interrupted run never leaves a folder that looks complete.

Modules
-------
:mod:`~speechssl.data.synth.espeak` (the ctypes binding of eSpeak NG),
:mod:`~speechssl.data.synth.resample`, :mod:`~speechssl.data.synth.align` (alignment, and the
synthesis of one utterance), :mod:`~speechssl.data.synth.config` (:class:`CorpusConfig` and the
presets), :mod:`~speechssl.data.synth.speakers`, :mod:`~speechssl.data.synth.plan` (the
deterministic draws of a corpus), :mod:`~speechssl.data.synth.workers` (work units and the
worker pool), :mod:`~speechssl.data.synth.generate`, :mod:`~speechssl.data.synth.meta`
(``meta.json``) and :mod:`~speechssl.data.synth.cli` (``python -m speechssl.data.synth``).
This package re-exports their public API.

Licences: eSpeak NG is GPL-3.0-or-later; it is used as a program (through its C API) to
generate audio, and the generated audio is not a derivative work of it. The sentences come
from the BSD-licensed FreeBSD fortune files.
"""

from .align import align_phonemes, synthesize, text_to_phones
from .cli import main, summary
from .config import AUDIO_SPLITS, DEFAULT_VARIANTS, PRESETS, CorpusConfig, get_preset
from .espeak import (
    DATA_ENV,
    ENGLISH_VOICES,
    LIBRARY_ENV,
    EmptyTextError,
    EspeakNG,
    RawSynthesis,
    get_espeak,
)
from .generate import CHUNK_SIZE, ensure_corpus, generate_corpus
from .meta import GENERATOR_NAME, GENERATOR_VERSION, corpus_is_current
from .resample import Resampler
from .speakers import Speaker, assign_speaker_roles, build_speakers

__all__ = [
    "AUDIO_SPLITS", "CHUNK_SIZE", "CorpusConfig", "DATA_ENV", "DEFAULT_VARIANTS", "ENGLISH_VOICES",
    "EmptyTextError", "EspeakNG", "GENERATOR_NAME", "GENERATOR_VERSION", "LIBRARY_ENV", "PRESETS",
    "RawSynthesis", "Resampler", "Speaker", "align_phonemes", "assign_speaker_roles",
    "build_speakers", "corpus_is_current", "ensure_corpus", "generate_corpus", "get_espeak",
    "get_preset", "main", "summary", "synthesize", "text_to_phones",
]
