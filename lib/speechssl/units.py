"""Frame labels from a teacher (HuBERT's hidden units), stored with where they came from.

HuBERT trains on the k-means units of a teacher: MFCC frames in its first iteration, a Transformer
layer of the previous model in the next (paper Sec. II-C, fairseq ``examples/hubert/simple_kmeans``).
Labels made from another corpus, or by another teacher, train a model on the wrong targets without
any error, so a label file here carries two fingerprints besides the labels:

- the **corpus**: a hash of the manifests of the splits the labels cover (:func:`corpus_fingerprint`);
- the **teacher**: a hash of what made the labels, e.g. the features, the layer, ``K`` and the k-means
  centres (:func:`fingerprint` of any description).

:meth:`UnitLabels.load` refuses a file whose fingerprints differ from the ones the caller expects, and
:meth:`UnitLabels.check` refuses labels that do not fit the audio: a missing utterance, a length that
differs from the audio's duration at the declared rate by more than 0.1 s (fairseq
``hubert_dataset.verify_label_lengths``, ``tol=0.1``), or an id outside ``[0, K)``. Files are written
atomically (a temporary file, then a rename), so an interrupted stage never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.manifest import Utterance, manifest_path
from .errors import SpeechSSLError

__all__ = ["LabelError", "UnitLabels", "corpus_fingerprint", "fingerprint"]

#: Largest difference between a label sequence's duration and its audio's (fairseq ``verify_label_lengths``).
LENGTH_TOLERANCE_S = 0.1


class LabelError(SpeechSSLError, ValueError):
    """Frame labels that cannot be used: missing, made from another corpus or teacher, or not fitting the audio."""


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-serialisable ``parts`` (NumPy arrays are hashed by their bytes)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def corpus_fingerprint(root: str | os.PathLike, splits: Iterable[str]) -> str:
    """The fingerprint of a corpus's ``splits``: a hash of their manifests' bytes."""
    h = hashlib.sha256()
    for split in sorted(splits):
        path = manifest_path(root, split)
        if not path.is_file():
            raise LabelError(f"{path}: expected the manifest of split {split!r} to fingerprint the corpus, found none")
        h.update(split.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class UnitLabels:
    """``labels``: one ``(F,)`` integer array per utterance id, at ``rate`` frames per second (100: MFCC
    frames, 50: model frames), with ids in ``[0, num_classes)``; ``corpus`` and ``teacher``: fingerprints."""

    labels: dict[str, np.ndarray]
    num_classes: int
    rate: int
    corpus: str
    teacher: str

    def save(self, path: str | os.PathLike) -> Path:
        """Write the labels and their provenance to ``path`` (``.npz``), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"num_classes": self.num_classes, "rate": self.rate, "corpus": self.corpus, "teacher": self.teacher,
                "ids": list(self.labels)}
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **{f"u{i}": np.asarray(v, np.int64)
                                                             for i, v in enumerate(self.labels.values())})
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, corpus: str | None = None, teacher: str | None = None) -> "UnitLabels":
        """Read a label file; with ``corpus`` / ``teacher``, refuse one made from another corpus or teacher."""
        path = Path(path)
        if not path.is_file():
            raise LabelError(f"{path}: expected a label file, found none (run the labels stage first)")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                labels = {uid: z[f"u{i}"] for i, uid in enumerate(meta["ids"])}
        except (OSError, ValueError, KeyError) as e:
            raise LabelError(f"{path}: expected a label file written by UnitLabels.save, found an unreadable file "
                             f"({type(e).__name__}: {e})") from None
        out = cls(labels, int(meta["num_classes"]), int(meta["rate"]), meta["corpus"], meta["teacher"])
        for what, expected, found in (("corpus", corpus, out.corpus), ("teacher", teacher, out.teacher)):
            if expected is not None and expected != found:
                raise LabelError(f"{path}: these labels were made from another {what} (fingerprint {found}, expected "
                                 f"{expected}); make the labels again for this {what}")
        return out

    def check(self, utterances: Sequence[Utterance]) -> None:
        """Refuse labels that do not fit ``utterances``: missing ids, lengths more than 0.1 s off the audio at
        ``rate``, or ids outside ``[0, num_classes)``."""
        missing = [u.id for u in utterances if u.id not in self.labels]
        if missing:
            raise LabelError(f"labels: expected one sequence per utterance, found none for {len(missing)} of "
                             f"{len(utterances)} (first: {missing[0]!r})")
        for u in utterances:
            y = self.labels[u.id]
            if abs(len(y) / self.rate - u.seconds) > LENGTH_TOLERANCE_S:
                raise LabelError(f"labels of {u.id!r}: expected about {u.seconds * self.rate:.0f} frames at "
                                 f"{self.rate} Hz for {u.seconds:.2f} s of audio, found {len(y)} "
                                 f"({len(y) / self.rate:.2f} s); were they made at another label rate?")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise LabelError(f"labels of {u.id!r}: expected unit ids in [0, {self.num_classes}), found ids from "
                                 f"{int(y.min())} to {int(y.max())}")
