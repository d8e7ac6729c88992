"""Corpus manifests and frame-level phone labels.

A corpus is a folder with one JSON-lines manifest per split (``<root>/<split>.jsonl``),
a ``meta.json`` and the audio files the manifests point to. Each manifest line is one
:class:`Utterance`. Phone alignments are stored in samples at the corpus sample rate, so
frame labels at any frame rate can be derived exactly; the labels at 100 Hz (MFCC frames)
and 50 Hz (the 20 ms frames of the wav2vec 2.0 / HuBERT feature encoder) are also stored in
``<root>/<split>.frames.npz`` by :func:`write_frame_labels`.

Frame conventions (they match the feature extractors, so labels and features line up):

- 100 Hz: Kaldi-style MFCC with a 25 ms window and 10 ms hop, ``snip_edges=True``
  (``torchaudio.compliance.kaldi.mfcc``): ``1 + (N - 400) // 160`` frames.
- 50 Hz: the wav2vec 2.0 convolutional encoder, kernels (10,3,3,3,3,2,2), strides
  (5,2,2,2,2,2,2): receptive field 400 samples, hop 320 (wav2vec 2.0 paper, Sec. 2 / fairseq
  ``conv_feature_layers``).

Both grids are defined once, in :mod:`speechssl.frames`.

Frame ``i`` gets the label of the phone that covers the centre sample of its window.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import CorpusNotFoundError
from ..frames import FRAME_GRIDS, SAMPLE_RATE, FrameGrid


@dataclass
class Utterance:
    """One line of a manifest.

    ``alignment`` holds ``(phone, start_sample, end_sample)`` triples covering the whole
    utterance (silence included, as the ``sil`` phone); ``phones`` is the phone transcript
    without silence; ``path`` is relative to the corpus root.
    """

    id: str
    path: str
    num_samples: int
    speaker: str
    text: str = ""
    words: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    alignment: list[tuple[str, int, int]] = field(default_factory=list)
    sample_rate: int = SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate

    def to_json(self) -> str:
        # a shallow dict: asdict() would deep-copy every alignment for nothing
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["alignment"] = [list(a) for a in self.alignment]
        return json.dumps(d, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> "Utterance":
        d = dict(d)
        d["alignment"] = [(str(p), int(s), int(e)) for p, s, e in d.get("alignment", [])]
        return cls(**d)


def manifest_path(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / f"{split}.jsonl"


def write_manifest(root: str | os.PathLike, split: str, utterances: Iterable[Utterance]) -> Path:
    """Write a split's manifest atomically (temporary file, then rename)."""
    path = manifest_path(root, split)
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for u in utterances:
            f.write(u.to_json() + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(root: str | os.PathLike, split: str) -> list[Utterance]:
    """Read ``<root>/<split>.jsonl``; a missing corpus or split gets a clear error."""
    root = Path(root)
    path = manifest_path(root, split)
    if not root.is_dir():
        raise CorpusNotFoundError(
            f"corpus folder {root} does not exist; generate it with "
            f"`python -m speechssl.data.synth --preset tiny --out {root}`"
        )
    if not path.is_file():
        found = sorted(p.stem for p in root.glob("*.jsonl"))
        raise CorpusNotFoundError(f"no manifest for split {split!r} at {path}; splits found: {found}")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Utterance.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, ValueError) as e:
                raise CorpusNotFoundError(f"{path}:{lineno}: not a valid manifest line ({e})") from e
    return out


def frame_labels(
    alignment: Sequence[tuple[str, int, int]],
    num_samples: int,
    frames: FrameGrid,
    phone_to_id: dict[str, int],
) -> np.ndarray:
    """Phone id of every frame: the phone that covers the frame's centre sample.

    Samples not covered by any alignment segment (there should be none) get the id of
    ``sil``.
    """
    centres = frames.centres(num_samples)
    if len(alignment) == 0:
        return np.full(len(centres), phone_to_id["sil"], dtype=np.int16)
    starts = np.array([s for _, s, _ in alignment])
    ends = np.array([e for _, _, e in alignment])
    ids = np.array([phone_to_id[p] for p, _, _ in alignment], dtype=np.int16)
    seg = np.searchsorted(starts, centres, side="right") - 1
    seg = np.clip(seg, 0, len(starts) - 1)
    out = ids[seg]
    outside = (centres < starts[seg]) | (centres >= ends[seg])
    out[outside] = phone_to_id["sil"]
    return out


def write_frame_labels(root: str | os.PathLike, split: str, utterances: Sequence[Utterance],
                       phone_to_id: dict[str, int]) -> Path:
    """Store 100 Hz and 50 Hz frame labels of a split in ``<split>.frames.npz``.

    Layout: ``ids`` (utterance ids), and per rate ``labels_<rate>`` (all labels concatenated)
    with ``offsets_<rate>`` (``len(ids) + 1`` boundaries).
    """
    arrays: dict[str, np.ndarray] = {"ids": np.array([u.id for u in utterances])}
    for name, grid in FRAME_GRIDS.items():
        labs = [frame_labels(u.alignment, u.num_samples, grid, phone_to_id) for u in utterances]
        arrays[f"offsets_{name}"] = np.cumsum([0] + [len(x) for x in labs]).astype(np.int64)
        arrays[f"labels_{name}"] = np.concatenate(labs) if labs else np.zeros(0, np.int16)
    path = Path(root) / f"{split}.frames.npz"
    tmp = Path(root) / f"{split}.frames.tmp.npz"
    # Like np.savez, but with a fixed timestamp on every member so that the same labels
    # give the same bytes (np.savez stamps the current time).
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
    os.replace(tmp, path)
    return path


def read_frame_labels(root: str | os.PathLike, split: str, rate: str = "100hz") -> dict[str, np.ndarray]:
    """Frame labels of a split as ``{utterance id: int16 array}`` at ``rate`` ('100hz' or '50hz')."""
    if rate not in FRAME_GRIDS:
        raise ValueError(f"rate must be one of {sorted(FRAME_GRIDS)}, got {rate!r}")
    path = Path(root) / f"{split}.frames.npz"
    if not path.is_file():
        raise CorpusNotFoundError(f"no frame labels for split {split!r} at {path}")
    with np.load(path) as z:
        ids, off, lab = z["ids"], z[f"offsets_{rate}"], z[f"labels_{rate}"]
    return {str(i): lab[off[k]:off[k + 1]] for k, i in enumerate(ids)}


def read_meta(root: str | os.PathLike) -> dict:
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise CorpusNotFoundError(
            f"no corpus at {root} (missing {path}); generate it with "
            f"`python -m speechssl.data.synth --preset tiny --out {root}`"
        )
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class Sentence:
    """One line of ``unpaired_text.jsonl``: text that is never spoken in any audio split."""

    id: str
    text: str
    words: list[str]
    phones: list[str]


def read_unpaired_text(root: str | os.PathLike) -> list[Sentence]:
    """Read the text-only split (for wav2vec-U) of a synthetic corpus."""
    path = Path(root) / "unpaired_text.jsonl"
    if not path.is_file():
        raise CorpusNotFoundError(f"no unpaired text at {path}")
    with open(path, encoding="utf-8") as f:
        return [Sentence(**{k: d[k] for k in ("id", "text", "words", "phones")})
                for d in map(json.loads, filter(str.strip, f))]
