"""Speakers (fixed voice, variant, rate and pitch combinations) and their disjoint dev, test and
train roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import CorpusConfig

# Salts that separate the random streams derived from the corpus seed.
_SPEAKER_SALT = 0x5EA7
_ROLE_SALT = 0x201E


@dataclass(frozen=True)
class Speaker:
    """A fixed (voice, variant, rate, pitch) combination."""

    id: str
    voice: str
    variant: str
    rate: int
    pitch: int

    @property
    def espeak_voice(self) -> str:
        return f"{self.voice}+{self.variant}"


def build_speakers(config: CorpusConfig) -> list[Speaker]:
    """All speakers of the voice x variant grid, ids ``spk000``, ``spk001``, ... in grid order
    (voices outer, variants inner).

    Rate and pitch are drawn uniformly from the config's ranges by a generator seeded with the
    speaker's grid index only, so a speaker id means the same voice for every seed and every
    preset that shares the voices, variants and ranges.
    """
    out = []
    for k, (voice, variant) in enumerate((v, w) for v in config.voices for w in config.variants):
        rng = np.random.default_rng([_SPEAKER_SALT, k])
        rate = int(rng.integers(config.rate_range[0], config.rate_range[1] + 1))
        pitch = int(rng.integers(config.pitch_range[0], config.pitch_range[1] + 1))
        out.append(Speaker(f"spk{k:03d}", voice, variant, rate, pitch))
    return out


def assign_speaker_roles(speakers: Sequence[Speaker], config: CorpusConfig,
                         seed: int) -> dict[str, list[str]]:
    """Split speakers into disjoint ``dev``, ``test`` and ``train`` sets (``train`` serves
    ``pretrain``, ``finetune`` and ``finetune_1h``).

    Dev and test speakers are spread over the accents: the voices are visited round-robin in
    a seeded order, taking a random unused variant of each. Disjointness is asserted.
    """
    rng = np.random.default_rng([seed, _ROLE_SALT])
    by_voice: dict[str, list[Speaker]] = {}
    for s in speakers:
        by_voice.setdefault(s.voice, []).append(s)
    pools = {v: [by_voice[v][i] for i in rng.permutation(len(by_voice[v]))] for v in config.voices}
    order = [config.voices[i] for i in rng.permutation(len(config.voices))]
    roles: dict[str, list[str]] = {"dev": [], "test": []}
    turn = 0
    for role, count in (("dev", config.dev_speakers), ("test", config.test_speakers)):
        for _ in range(count):
            roles[role].append(pools[order[turn % len(order)]].pop().id)
            turn += 1
    taken = set(roles["dev"]) | set(roles["test"])
    roles["train"] = [s.id for s in speakers if s.id not in taken]
    dev, test, train = (set(roles[r]) for r in ("dev", "test", "train"))
    assert not (dev & test) and not (dev & train) and not (test & train), "speaker roles overlap"
    assert train, "no training speakers left"
    return {r: sorted(v) for r, v in roles.items()}
