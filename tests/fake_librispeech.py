"""A tiny LibriSpeech-layout tree of synthetic FLAC files, for tests.

``make_fake_librispeech(tmp_path)`` writes::

    <root>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac
    <root>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

with each utterance a short tone plus noise, and returns what it wrote so tests can compare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

WORDS = ("THE", "CAT", "SAT", "ON", "A", "MAT", "AND", "DOG'S", "BONE", "WENT", "HOME")

#: subset -> speaker -> chapter -> number of utterances
DEFAULT_LAYOUT: dict[str, dict[int, dict[int, int]]] = {
    "dev-clean": {84: {121123: 3}, 174: {50561: 2, 84280: 1}},
    "train-clean-100": {19: {198: 2, 227: 1}, 103: {1240: 2}},
}


def tone(num_samples: int, sample_rate: int = 16_000, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """A sine at ``freq`` Hz plus a little white noise, peak about 0.5, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(num_samples)
    return x.astype(np.float32)


def make_fake_librispeech(
    root: str | Path,
    layout: dict[str, dict[int, dict[int, int]]] | None = None,
    *,
    sample_rate: int = 16_000,
    inner: bool = True,
    seed: int = 0,
) -> dict[str, dict]:
    """Write a LibriSpeech-layout tree under ``root`` and return ``{utt id: record}``.

    Args:
        root: where to write; the tree goes under ``root/LibriSpeech`` when ``inner``.
        layout: ``{subset: {speaker: {chapter: n_utterances}}}``; :data:`DEFAULT_LAYOUT` if None.
        sample_rate: rate of the FLAC files.
        inner: put the subsets under ``LibriSpeech/`` (as the archives do) or directly in root.
        seed: seed of lengths, tones and transcripts.

    Each record has ``subset``, ``speaker``, ``chapter``, ``path`` (absolute), ``num_samples``
    and ``text``.
    """
    layout = DEFAULT_LAYOUT if layout is None else layout
    rng = np.random.default_rng(seed)
    corpus = Path(root) / "LibriSpeech" if inner else Path(root)
    out: dict[str, dict] = {}
    for subset, speakers in layout.items():
        for speaker, chapters in speakers.items():
            for chapter, n in chapters.items():
                folder = corpus / subset / str(speaker) / str(chapter)
                folder.mkdir(parents=True, exist_ok=True)
                lines = []
                for u in range(n):
                    utt_id = f"{speaker}-{chapter}-{u:04d}"
                    num_samples = int(rng.integers(sample_rate // 4, sample_rate))
                    text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 6))))
                    path = folder / f"{utt_id}.flac"
                    x = tone(num_samples, sample_rate, 110.0 + 20 * u, seed=int(rng.integers(1 << 30)))
                    sf.write(path, x, sample_rate, subtype="PCM_16")
                    lines.append(f"{utt_id} {text}")
                    out[utt_id] = dict(subset=subset, speaker=str(speaker), chapter=str(chapter),
                                       path=path, num_samples=num_samples, text=text)
                trans = folder / f"{speaker}-{chapter}.trans.txt"
                trans.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
