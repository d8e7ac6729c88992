"""The deterministic plan of a corpus: which sentences are spoken and which are left as
unpaired text, and the speaker, rate, pitch, padding, peak, noise and seed of every utterance."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ...frames import SAMPLE_RATE
from .config import AUDIO_SPLITS, TRAIN_SPLITS, CorpusConfig
from .espeak import _PITCH_MAX, _PITCH_MIN, _RATE_MAX, _RATE_MIN
from .speakers import assign_speaker_roles, build_speakers
from .workers import _Job

# Salts that separate the random streams derived from the corpus seed.
_TEXT_SALT = 0x7E47
_SPLIT_SALT = 0x5B17


class _Plan:
    """Deterministic assignment of sentences, speakers and per-utterance parameters."""

    def __init__(self, config: CorpusConfig, seed: int, sentences: Sequence[str]):
        self.config, self.seed = config, seed
        self.speakers = build_speakers(config)
        self.by_id = {s.id: s for s in self.speakers}
        self.roles = assign_speaker_roles(self.speakers, config, seed)
        order = np.random.default_rng([seed, _TEXT_SALT]).permutation(len(sentences))
        n_unpaired = min(config.unpaired_sentences, int(config.max_unpaired_fraction * len(sentences)))
        self.sentences = list(sentences)
        self.unpaired = [int(i) for i in order[len(order) - n_unpaired:]] if n_unpaired else []
        self.audio = [int(i) for i in order[:len(order) - n_unpaired]]
        self.position = 0                  # next unused position in self.audio
        self.train_start: int | None = None

    def split_speakers(self, split: str) -> list[str]:
        return self.roles[split] if split in ("dev", "test") else self.roles["train"]

    def jobs(self, split: str, first_index: int) -> Iterator[_Job]:
        """Jobs of ``split`` from manifest index ``first_index`` on, starting at the current
        stream position; evaluation splits stop when the sentences run out, training splits
        cycle over the training sentences."""
        c = self.config
        rng = np.random.default_rng([self.seed, _SPLIT_SALT, AUDIO_SPLITS.index(split)])
        speakers = self.split_speakers(split)
        if split in TRAIN_SPLITS and self.train_start is None:
            self.train_start = self.position
        pos, index, cycle = self.position, first_index, []
        while True:
            if pos < len(self.audio):
                sentence = self.audio[pos]
            elif split in TRAIN_SPLITS and len(self.audio) > self.train_start:
                span = len(self.audio) - self.train_start
                sentence = self.audio[self.train_start + (pos - self.train_start) % span]
            else:
                return
            if not cycle:
                cycle = [speakers[i] for i in rng.permutation(len(speakers))]
            spk = self.by_id[cycle.pop()]
            rate = int(np.clip(round(spk.rate * (1 + c.rate_jitter * rng.uniform(-1, 1))),
                               _RATE_MIN, _RATE_MAX))
            pitch = int(np.clip(spk.pitch + rng.integers(-c.pitch_jitter, c.pitch_jitter + 1),
                                _PITCH_MIN, _PITCH_MAX))
            lead, trail = (int(round(rng.uniform(*c.pad_seconds) * SAMPLE_RATE)) for _ in range(2))
            peak = float(rng.uniform(*c.peak_range))
            noise = float(10 ** (rng.uniform(*c.noise_dbfs) / 20)) if c.noise_dbfs else 0.0
            job_seed = int(rng.integers(0, 2**31 - 1))
            uid = f"{spk.id}_{split}_{index:05d}"
            yield _Job(utt_id=uid, rel_path=f"wav/{split}/{uid}.wav", speaker=spk.id,
                       voice=spk.espeak_voice, rate=rate, pitch=pitch, text=self.sentences[sentence],
                       lead=lead, trail=trail, peak=peak, noise_rms=noise, seed=job_seed)
            pos += 1
            index += 1

    def commit(self, used: int) -> None:
        self.position += used
