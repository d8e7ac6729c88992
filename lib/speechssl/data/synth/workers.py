"""Work units run in worker processes (rendering utterances to WAV files, phonemising the
unpaired text) and the pool of clean eSpeak NG workers that runs them (see "Determinism and
parallelism" in :mod:`speechssl.data.synth`)."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import pickle
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ...errors import SynthesisError
from ...frames import SAMPLE_RATE
from ..manifest import Utterance
from ..phones import SILENCE
from ..sentences import sentence_words
from .align import _check_tiling, _clauses_to_phones, align_phonemes
from .espeak import ENGLISH_VOICES, EspeakNG
from .resample import _resampler


@dataclass(frozen=True)
class _Job:
    """Everything needed to render one utterance; drawn in the main process."""

    utt_id: str
    rel_path: str
    speaker: str
    voice: str
    rate: int
    pitch: int
    text: str
    lead: int          # samples of silence before the speech
    trail: int         # samples of silence after it
    peak: float
    noise_rms: float
    seed: int


def _render(espeak: EspeakNG, root: str, job: _Job) -> Utterance:
    raw = espeak.synthesize_raw(job.text, job.voice, job.rate, job.pitch, seed=job.seed)
    x = _resampler()(raw.audio.astype(np.float32) / 32768.0)
    alignment = align_phonemes(raw.events, len(x), context=f"{job.voice}: {job.text!r}")
    peak = float(np.abs(x).max())
    if peak > 0:
        x *= job.peak / peak
    n = job.lead + len(x) + job.trail
    y = np.zeros(n, np.float32)
    y[job.lead:job.lead + len(x)] = x
    if job.noise_rms > 0:
        noise = np.random.default_rng(job.seed).standard_normal(n, dtype=np.float32)
        noise *= job.noise_rms
        y += noise
    y *= 32767.0
    np.rint(y, out=y)
    np.clip(y, -32768, 32767, out=y)
    pcm = y.astype(np.int16)
    shifted = [(SILENCE, 0, job.lead)] if job.lead else []
    for phone, b, e in alignment:
        b, e = b + job.lead, e + job.lead
        if shifted and phone == SILENCE and shifted[-1][0] == SILENCE:
            shifted[-1] = (SILENCE, shifted[-1][1], e)
        else:
            shifted.append((phone, b, e))
    if job.trail:
        if shifted[-1][0] == SILENCE:
            shifted[-1] = (SILENCE, shifted[-1][1], n)
        else:
            shifted.append((SILENCE, n - job.trail, n))
    _check_tiling(shifted, n)
    # Encode in memory and write the file in one call: libsndfile writing to a file makes many
    # small writes and seeks back to patch the header, which costs ~4 ms per file on ext4
    # against ~0.6 ms for this (same bytes).
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    with open(Path(root, job.rel_path), "wb") as f:
        f.write(buf.getbuffer())
    return Utterance(id=job.utt_id, path=job.rel_path, num_samples=n, speaker=job.speaker,
                     text=job.text, words=sentence_words(job.text),
                     phones=[p for p, _, _ in shifted if p != SILENCE], alignment=shifted)


def _phonemise(espeak: EspeakNG, item: tuple[str, str, str]) -> dict[str, Any]:
    uid, text, voice = item
    phones = _clauses_to_phones(espeak.text_to_phonemes(text, voice), f"{voice}: {text!r}")
    return {"id": uid, "text": text, "words": sentence_words(text), "phones": phones, "voice": voice}


def _execute(unit: tuple) -> list:
    espeak = _WORKER["espeak"]
    kind = unit[0]
    if kind == "audio":
        _, root, jobs = unit
        return [_render(espeak, root, j) for j in jobs]
    if kind == "text":
        return [_phonemise(espeak, item) for item in unit[1]]
    raise ValueError(f"unknown unit kind {kind!r}")


_WORKER: dict[str, Any] = {}


def _worker_init(library_path: str, data_path: str, isolate: bool) -> None:
    """Pool initialiser: initialise eSpeak (but synthesise nothing: this is the clean state
    every chunk is forked from) and build the resampler."""
    espeak = EspeakNG(library_path, data_path)
    espeak.set_voice(ENGLISH_VOICES[0])   # load the English dictionary once, before forking
    _WORKER["espeak"] = espeak
    _WORKER["isolate"] = isolate
    _resampler()


def _run_forked(unit: tuple) -> list:
    """Run ``_execute(unit)`` in a child forked from this (clean) worker and return its result.

    The child inherits the initialised but unused eSpeak state, so every work unit starts from the
    same engine state. Results (and exceptions) come back pickled through a pipe.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # child
        status = 0
        try:
            os.close(read_fd)
            try:
                payload = pickle.dumps((True, _execute(unit)), protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException as exc:              # report any failure to the parent
                tb = traceback.format_exc()
                try:
                    payload = pickle.dumps((False, exc, tb))
                except Exception:
                    payload = pickle.dumps((False, SynthesisError(f"{type(exc).__name__}: {exc}"), tb))
            with os.fdopen(write_fd, "wb") as f:
                f.write(payload)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise SynthesisError(f"the synthesis process {pid} ended without a result (wait status "
                             f"{status}); it may have been killed (out of memory?)")
    result = pickle.loads(data)
    if result[0]:
        return result[1]
    exc, tb = result[1], result[2]
    if hasattr(exc, "add_note"):
        exc.add_note(f"in the synthesis process:\n{tb}")
    raise exc


def _worker_run(unit: tuple) -> list:
    return _run_forked(unit) if _WORKER["isolate"] else _execute(unit)


class _Executor:
    """A pool of clean eSpeak workers (see "Determinism and parallelism")."""

    def __init__(self, workers: int, library_path: str, data_path: str):
        methods = mp.get_all_start_methods()
        isolate = hasattr(os, "fork") and "forkserver" in methods
        if isolate:
            ctx = mp.get_context("forkserver")
            # The fork server imports this module once; workers are forked from it cheaply.
            # The command line (``python -m speechssl.data.synth``) runs the package's
            # ``__main__``, which multiprocessing does not re-run in the workers, so this
            # module is never also the main program there.
            ctx.set_forkserver_preload([__name__])
        else:
            ctx = mp.get_context("spawn")
        self.pool = ctx.Pool(processes=workers, initializer=_worker_init,
                             initargs=(library_path, data_path, isolate),
                             maxtasksperchild=None if isolate else 1)

    def submit(self, unit: tuple):
        """Queue a work unit (``("audio", root, jobs)`` or ``("text", items)``)."""
        return self.pool.apply_async(_worker_run, (unit,))

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
