"""What defines a synthetic corpus: :class:`CorpusConfig` (split sizes, voices, speaking
ranges, padding and noise), its validation, the audio splits and the named presets."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ...errors import ConfigError
from ..sentences import DEFAULT_SOURCES, EXCLUDED_SOURCES
from .espeak import _PITCH_MAX, _PITCH_MIN, _RATE_MAX, _RATE_MIN, ENGLISH_VOICES

#: Voice variants (``espeak-ng-data/voices/!v``) used by default: eight male and five female
#: formant settings and the six Klatt-synthesiser voices. They change pitch, formants,
#: breathiness and the glottal source, but not the phonemes. Novelty variants (whisper,
#: robots, croak) are left out.
DEFAULT_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
)

#: Audio splits in generation order. Evaluation splits come first so that they always get
#: fresh sentences; ``finetune_1h`` contains ``finetune`` (as Libri-light's 1 h set contains
#: its 10 min set) and adds to it.
AUDIO_SPLITS: tuple[str, ...] = ("dev", "test", "finetune", "finetune_1h", "pretrain")
TRAIN_SPLITS = frozenset({"finetune", "finetune_1h", "pretrain"})


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
        and math.isfinite(float(x))


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that defines a synthetic corpus (together with the seed).

    Split sizes are targets in seconds of audio: a split stops growing as soon as its total
    reaches the target, so it exceeds it by less than one utterance. Ranges are inclusive
    ``(low, high)`` pairs.
    """

    name: str = "custom"
    pretrain_seconds: float = 1440.0
    finetune_seconds: float = 600.0
    finetune_1h_seconds: float = 0.0   # 0: no finetune_1h split
    dev_seconds: float = 240.0
    test_seconds: float = 240.0
    unpaired_sentences: int = 2000
    voices: tuple[str, ...] = ENGLISH_VOICES
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    dev_speakers: int = 8
    test_speakers: int = 8
    rate_range: tuple[int, int] = (140, 200)     # words per minute, per speaker
    pitch_range: tuple[int, int] = (30, 70)      # eSpeak pitch 0-100, per speaker
    rate_jitter: float = 0.04                    # relative, per utterance
    pitch_jitter: int = 4                        # absolute, per utterance
    pad_seconds: tuple[float, float] = (0.10, 0.35)   # silence added before and after
    noise_dbfs: tuple[float, float] | None = (-66.0, -54.0)  # RMS of the noise floor
    peak_range: tuple[float, float] = (0.35, 0.90)     # peak amplitude after normalisation
    min_words: int = 4
    max_words: int = 20
    sources: tuple[str, ...] = DEFAULT_SOURCES
    max_unpaired_fraction: float = 0.5           # of the sentence pool, at most

    def __post_init__(self) -> None:
        for f in ("voices", "variants", "sources", "rate_range", "pitch_range", "pad_seconds",
                  "peak_range", "noise_dbfs"):
            v = getattr(self, f)
            if isinstance(v, list):
                object.__setattr__(self, f, tuple(v))
        self.validate()

    # -- validation ----------------------------------------------------------------------
    def _fail(self, field: str, expected: str, found: Any) -> None:
        raise ConfigError(f"CorpusConfig({self.name!r}).{field}: expected {expected}, found {found!r}")

    def _pair(self, field: str, lo: float, hi: float, integer: bool = False) -> None:
        v = getattr(self, field)
        kind = "integers" if integer else "numbers"
        ok = isinstance(v, tuple) and len(v) == 2 and all(_is_number(x) for x in v)
        if ok and integer:
            ok = all(isinstance(x, (int, np.integer)) for x in v)
        if not ok or not (lo <= v[0] <= v[1] <= hi):
            self._fail(field, f"a pair (low, high) of {kind} with {lo} <= low <= high <= {hi}", v)

    def validate(self) -> None:
        """Check every field; raises :class:`~speechssl.errors.ConfigError` naming the field,
        what was expected and what was found."""
        if not isinstance(self.name, str) or not self.name:
            self._fail("name", "a non-empty string", self.name)
        for f in ("pretrain_seconds", "finetune_seconds", "dev_seconds", "test_seconds"):
            v = getattr(self, f)
            if not _is_number(v) or v <= 0:
                self._fail(f, "a positive number of seconds", v)
        v = self.finetune_1h_seconds
        if not _is_number(v) or v < 0 or (0 < v < self.finetune_seconds):
            self._fail("finetune_1h_seconds",
                       f"0 (no such split) or at least finetune_seconds={self.finetune_seconds}", v)
        for f, lo in (("unpaired_sentences", 0), ("dev_speakers", 1), ("test_speakers", 1),
                      ("min_words", 1), ("max_words", 1), ("pitch_jitter", 0)):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                self._fail(f, f"an integer >= {lo}", v)
        if self.max_words < self.min_words:
            self._fail("max_words", f"an integer >= min_words={self.min_words}", self.max_words)
        for f, allowed in (("voices", ENGLISH_VOICES), ("sources", None), ("variants", None)):
            v = getattr(self, f)
            if not isinstance(v, tuple) or not v or not all(isinstance(x, str) and x for x in v):
                self._fail(f, "a non-empty tuple of strings", v)
            if len(set(v)) != len(v):
                self._fail(f, "no duplicates", v)
            if allowed is not None and not set(v) <= set(allowed):
                self._fail(f, f"names from {list(allowed)}", v)
        bad = [s for s in self.sources if s.endswith("-o") or s in EXCLUDED_SOURCES]
        if bad:
            self._fail("sources", f"non-offensive fortune files such as {list(DEFAULT_SOURCES)}", bad)
        if any("+" in v or "/" in v for v in self.variants):
            self._fail("variants", "variant names such as 'm3' or 'f2' (without '+')", self.variants)
        self._pair("rate_range", _RATE_MIN, _RATE_MAX, integer=True)
        self._pair("pitch_range", _PITCH_MIN, _PITCH_MAX, integer=True)
        self._pair("pad_seconds", 0.0, 5.0)
        self._pair("peak_range", 1e-3, 1.0)
        if self.noise_dbfs is not None:
            self._pair("noise_dbfs", -120.0, -20.0)
        if not _is_number(self.rate_jitter) or not 0 <= self.rate_jitter <= 0.5:
            self._fail("rate_jitter", "a number in [0, 0.5]", self.rate_jitter)
        if self.pitch_jitter > 50:
            self._fail("pitch_jitter", "an integer in [0, 50]", self.pitch_jitter)
        if not _is_number(self.max_unpaired_fraction) or not 0 <= self.max_unpaired_fraction < 1:
            self._fail("max_unpaired_fraction", "a number in [0, 1)", self.max_unpaired_fraction)
        per_voice = len(self.variants)
        n_eval = self.dev_speakers + self.test_speakers
        need = -(-n_eval // len(self.voices)) + 1
        if per_voice < need:
            self._fail("variants", f"at least {need} variants, so that every voice keeps a "
                       f"training speaker after {n_eval} dev+test speakers are set aside",
                       self.variants)

    # -- conversions ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CorpusConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"CorpusConfig: unknown fields {unknown}; known: {sorted(names)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> "CorpusConfig":
        return dataclasses.replace(self, **changes)

    @property
    def split_targets(self) -> dict[str, float]:
        """Target seconds of each audio split, in generation order."""
        out = {"dev": self.dev_seconds, "test": self.test_seconds,
               "finetune": self.finetune_seconds, "finetune_1h": self.finetune_1h_seconds,
               "pretrain": self.pretrain_seconds}
        return {s: float(out[s]) for s in AUDIO_SPLITS if out[s] > 0}


#: Named configurations. ``tiny``: about 45 minutes of audio, generated in well under a minute
#: on two cores; for the book's executed chapters and the tests of other modules.
#: ``reduced``: several hours (6 h pre-training, the 10 min / 1 h fine-tuning sets of
#: Libri-light, 30 min dev and test), for runs that take the method seriously.
PRESETS: dict[str, CorpusConfig] = {
    "tiny": CorpusConfig(name="tiny", pretrain_seconds=24 * 60, finetune_seconds=10 * 60,
                         finetune_1h_seconds=0, dev_seconds=4 * 60, test_seconds=4 * 60,
                         unpaired_sentences=2000, dev_speakers=8, test_speakers=8),
    "reduced": CorpusConfig(name="reduced", pretrain_seconds=6 * 3600, finetune_seconds=10 * 60,
                            finetune_1h_seconds=3600, dev_seconds=30 * 60, test_seconds=30 * 60,
                            unpaired_sentences=20_000, dev_speakers=16, test_speakers=16),
}


def get_preset(preset: str | CorpusConfig) -> CorpusConfig:
    """A :class:`CorpusConfig` from a preset name (or the config itself)."""
    if isinstance(preset, CorpusConfig):
        return preset
    if isinstance(preset, str) and preset in PRESETS:
        return PRESETS[preset]
    raise ConfigError(f"preset: expected one of {sorted(PRESETS)} or a CorpusConfig, found {preset!r}")
