"""wav2vec-U's audio side: silence removal, k-means, PCA, and segment pooling.

Audio side (paper Sec. 2, fairseq ``scripts/prepare_audio.sh``): features of one Transformer layer,
k-means with ``K = 128`` (``wav2vec_cluster_faiss.py``), PCA to 512 (``pca.py``), then

- :func:`segment_means`: consecutive frames with the same cluster form a segment, represented by the mean
  of its (PCA) features (``merge_clusters.py --pooling mean``);
- :func:`pool_adjacent`: the mean of every two consecutive segments, an odd last segment standing alone
  (``mean_pool.py``, ``subsample_rate 0.5``).

Silence (Sec. 2.2, fairseq ``scripts/vads.py`` + ``remove_silence.py``): the paper removes silence from
every split with rVAD and concatenates the voiced stretches. :func:`voiced_intervals` is a plain energy
detector in rVAD's framing (25 ms windows every 10 ms): a frame is speech when its energy is 15 dB above
the utterance's noise floor (its 5th-percentile frame energy), and pauses shorter than 0.1 s stay (stop
closures are as quiet as silence). The synthetic corpus's silence is padding and pauses over a noise floor
at -66 to -54 dBFS, a case for which the energy alone is a sound criterion; the chapter measures its
agreement with the alignment's ``sil``. :func:`remove_silence` concatenates the voiced intervals.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError

__all__ = ["spliced_mfcc", "voiced_intervals", "remove_silence", "segment_means", "pool_adjacent", "segment_units",
           "mfcc_unit_targets", "SegmentedAudio", "AudioPipeline", "to_original", "segment_boundaries",
           "phone_boundaries", "BoundaryScores", "boundary_scores", "score_boundaries", "UtteranceSegmentation",
           "SegmentationView"]


def voiced_intervals(wav: torch.Tensor, *, sample_rate: int = 16_000, margin_db: float = 15.0,
                     min_silence_s: float = 0.1) -> list[tuple[int, int]]:
    """Voiced stretches ``(start, end)`` of a waveform, in samples (see the module notes)."""
    win, hop = int(0.025 * sample_rate), int(0.010 * sample_rate)
    wav = torch.as_tensor(wav, dtype=torch.float32).reshape(-1)
    if wav.numel() < win:
        return [(0, wav.numel())] if wav.numel() else []
    frames = wav.unfold(0, win, hop)
    energy = 10 * torch.log10(frames.square().mean(1) + 1e-10)
    speech = energy > torch.quantile(energy, 0.05) + margin_db
    # pauses shorter than min_silence_s count as speech
    runs, counts = torch.unique_consecutive(speech, return_counts=True)
    ends = counts.cumsum(0)
    short = int(min_silence_s * sample_rate / hop)
    for i, (is_speech, n) in enumerate(zip(runs.tolist(), counts.tolist())):
        if not is_speech and 0 < i < len(runs) - 1 and n < short:
            speech[ends[i] - n:ends[i]] = True
    intervals: list[tuple[int, int]] = []
    runs, counts = torch.unique_consecutive(speech, return_counts=True)
    start = 0
    for is_speech, n in zip(runs.tolist(), counts.tolist()):
        if is_speech:
            a, b = start * hop, min(wav.numel(), (start + n - 1) * hop + win)
            intervals.append((a, b))
        start += n
    return intervals


def remove_silence(wav: torch.Tensor, intervals: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The voiced intervals of ``wav`` concatenated (fairseq ``remove_silence.py``); the whole waveform
    when no interval was found, so that no utterance disappears."""
    if not intervals:
        return wav
    return torch.cat([wav[a:b] for a, b in intervals])


def spliced_mfcc(wav: torch.Tensor, context: int = 4) -> torch.Tensor:
    """The no-self-supervision input of the pipeline: 39-dim MFCC (chapter 0's), normalised per utterance
    to zero mean and unit variance (CMVN), each frame joined with its ``context`` neighbours on either side
    (edges repeated): ``(F, 39 * (2 * context + 1))`` at 100 Hz."""
    from .features import mfcc

    m = mfcc(wav)
    m = (m - m.mean(0)) / m.std(0).clamp(min=1e-5)
    padded = torch.cat([m[:1].expand(context, -1), m, m[-1:].expand(context, -1)])
    return padded.unfold(0, 2 * context + 1, 1).transpose(1, 2).reshape(len(m), -1)


def segment_means(features: torch.Tensor, clusters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the features (T, D) over each run of equal consecutive cluster ids (T,); returns the
    segments (S, D) and the number of frames of each (S,)."""
    if features.ndim != 2 or clusters.shape != features.shape[:1]:
        raise ValueError(f"expected features (T, D) and one cluster id per frame; found {tuple(features.shape)} "
                         f"and {tuple(clusters.shape)}")
    _, counts = torch.unique_consecutive(clusters, return_counts=True)
    ends = counts.cumsum(0)
    sums = torch.cat([features.new_zeros(1, features.size(1)), features.cumsum(0)])   # prefix sums
    return (sums[ends] - sums[ends - counts]) / counts[:, None].to(features), counts


def pool_adjacent(segments: torch.Tensor) -> torch.Tensor:
    """The mean of segments (0, 1), (2, 3), ...; an odd last segment is kept as it is."""
    s = segments.size(0)
    pairs = segments[: s - s % 2].reshape(s // 2, 2, -1).mean(1)
    return torch.cat([pairs, segments[s - s % 2:]])


def segment_units(units: torch.Tensor, frames_per_segment: torch.Tensor) -> torch.Tensor:
    """The most frequent of the frames' ``units`` (F,) in each pooled segment (:func:`pool_adjacent` of the
    segments of ``frames_per_segment`` frames), the smallest on a tie; ``-1`` for a segment whose frames lie
    beyond the units. The auxiliary targets of wav2vec-U 2.0 (module notes of
    :mod:`speechssl.models.wav2vec_u`) read at the GAN's segments."""
    pooled = frames_per_segment[: len(frames_per_segment) // 2 * 2].reshape(-1, 2).sum(1)
    if len(frames_per_segment) % 2:
        pooled = torch.cat([pooled, frames_per_segment[-1:]])
    ends = pooled.cumsum(0).tolist()
    out = torch.full((len(pooled),), -1, dtype=torch.long)
    for i, (start, end) in enumerate(zip([0, *ends[:-1]], ends)):
        window = units[start:end]
        if len(window):
            out[i] = torch.bincount(window).argmax()
    return out


def mfcc_unit_targets(utterances: Sequence, root, frames_per_segment: Sequence[torch.Tensor], num_units: int,
                      *, vad: bool = True, seed: int = 0) -> list[torch.Tensor]:
    """wav2vec-U 2.0's auxiliary targets read at the GAN's segments: one k-means unit of MFCC frames per pooled
    segment of every utterance (``frames_per_segment``: the layer frames of each segment before pooling).

    As fairseq's ``prepare_audio_v2.sh``: 39-dim MFCC of the audio after silence removal, k-means with
    ``num_units`` centres (``w2vu2.yaml`` ``target_dim 64``) fitted on these utterances; the 100 Hz units are
    read on the layer's frame grid as HuBERT reads them (:func:`~speechssl.frames.labels_on_grid`, fairseq
    ``target_downsample_rate 2``), then :func:`segment_units` takes each segment's most frequent one, since
    this generator reads segments where wav2vec-U 2.0's reads frames."""
    from .cluster import KMeans
    from .data.audio import load_audio
    from .features import mfcc
    from .frames import MFCC_FRAMES, MODEL_FRAMES, labels_on_grid

    frames = []
    for u in utterances:
        wav = load_audio(Path(root) / u.path)
        frames.append(mfcc(remove_silence(wav, voiced_intervals(wav) if vad else [])))
    kmeans = KMeans(num_units, seed=seed, progress=False).fit(torch.cat(frames))
    out = []
    for f, counts in zip(frames, frames_per_segment):
        n = int(counts.sum())                       # the layer's frames: 100 Hz (MFCC) or 50 Hz (a model)
        grid = MFCC_FRAMES if n == len(f) else MODEL_FRAMES
        ids = torch.as_tensor(kmeans.predict(f)).long()
        out.append(segment_units(labels_on_grid(ids, MFCC_FRAMES, grid, n), counts))
    return out


@dataclass
class SegmentedAudio:
    """The GAN's audio input: per utterance, the pooled segment features and what they came from."""

    features: list[torch.Tensor]           # (S_i, pca_dim) after adjacent pooling
    clusters: list[torch.Tensor]           # (F_i,) k-means id of every voiced frame
    segments: list[torch.Tensor]           # (S'_i,) frames per segment before adjacent pooling
    kept: list[list[tuple[int, int]]]      # voiced intervals in samples ([] = VAD off)


class AudioPipeline:
    """Silence removal, k-means on a layer's frames, PCA, segment and adjacent pooling (module notes).

    ``fit`` learns k-means and PCA on the frames of the training utterances; ``transform`` applies them
    to any split, the same way (fairseq applies the train centroids and PCA to every split; issue 3581:
    test audio with its silence left in gave 89% PER against 24%).
    """

    def __init__(self, featurize, root, *, num_clusters: int = 128, pca_dim: int = 512, vad: bool = True,
                 seed: int = 0, kmeans_init: int = 3):
        if not isinstance(num_clusters, int) or num_clusters < 1:
            raise ConfigError(f"num_clusters: expected a positive integer, found {num_clusters!r}")
        if not isinstance(pca_dim, int) or pca_dim < 1:
            raise ConfigError(f"pca_dim: expected a positive integer, found {pca_dim!r}")
        self.featurize, self.root = featurize, root
        self.num_clusters, self.pca_dim, self.vad = num_clusters, pca_dim, vad
        self.seed, self.kmeans_init = seed, kmeans_init
        self.kmeans = self.pca = None

    def frames(self, utterances: Sequence) -> tuple[list[torch.Tensor], list[list[tuple[int, int]]]]:
        """The layer's frames of every utterance, after silence removal, and the voiced intervals."""
        from pathlib import Path

        from .data.audio import load_audio

        feats, kept = [], []
        with torch.no_grad():
            for u in utterances:
                wav = load_audio(Path(self.root) / u.path)
                iv = voiced_intervals(wav) if self.vad else []
                feats.append(self.featurize(remove_silence(wav, iv)).float())
                kept.append(iv)
        return feats, kept

    def fit(self, utterances: Sequence) -> "AudioPipeline":
        self._fit(self.frames(utterances)[0])
        return self

    def _fit(self, feats: list[torch.Tensor]) -> None:
        from sklearn.decomposition import PCA

        from .cluster import KMeans

        x = torch.cat(feats)
        if self.num_clusters > len(x):
            raise ConfigError(f"num_clusters: expected at most the number of training frames ({len(x)}), "
                              f"found {self.num_clusters}")
        if self.pca_dim > x.shape[1]:
            raise ConfigError(f"pca_dim: expected at most the feature dimension ({x.shape[1]}), found {self.pca_dim}")
        # fairseq: faiss k-means (50 iterations, 3 restarts) on the raw layer features, no PCA before it
        self.kmeans = KMeans(self.num_clusters, n_init=self.kmeans_init, seed=self.seed, progress=False).fit(x)
        # fairseq pca.py: faiss.PCAMatrix(d, pca_dim, eigen_power=0), i.e. no whitening
        self.pca = PCA(self.pca_dim, random_state=self.seed).fit(x.numpy())

    def fit_transform(self, utterances: Sequence) -> SegmentedAudio:
        """:meth:`fit` on ``utterances`` and their segments, reading and featurising them once."""
        feats, kept = self.frames(utterances)
        self._fit(feats)
        return self._segment(feats, kept)

    def transform(self, utterances: Sequence) -> SegmentedAudio:
        if self.kmeans is None:
            raise RuntimeError("AudioPipeline.transform: call fit() on the training utterances first")
        return self._segment(*self.frames(utterances))

    def _segment(self, feats: list[torch.Tensor], kept: list[list[tuple[int, int]]]) -> SegmentedAudio:
        out = SegmentedAudio([], [], [], kept)
        for f in feats:
            ids = torch.as_tensor(self.kmeans.predict(f)).long()
            z = torch.from_numpy(self.pca.transform(f.numpy())).float()
            seg, counts = segment_means(z, ids)
            out.features.append(pool_adjacent(seg))
            out.clusters.append(ids)
            out.segments.append(counts)
        return out


# -- segment boundaries against phone boundaries ---------------------------------------------------------

def to_original(positions: Sequence[int], kept: Sequence[tuple[int, int]]) -> list[int]:
    """Sample positions on the voiced timeline (the ``kept`` intervals concatenated) in the original waveform."""
    if not kept:
        return [int(p) for p in positions]
    offsets = [0]
    for a, b in kept:
        offsets.append(offsets[-1] + b - a)
    out = []
    for p in positions:
        k = min(bisect.bisect_right(offsets, p) - 1, len(kept) - 1)
        out.append(int(kept[k][0] + p - offsets[k]))
    return out


def segment_boundaries(frames_per_segment: Sequence[int], kept: Sequence[tuple[int, int]], *, pooled: bool = True,
                       grid=None) -> list[int]:
    """Where one segment ends and the next begins, in samples of the original waveform: midway between the
    centres of the last frame of a segment and the first of the next on ``grid`` (default: the models' 50 Hz
    frames); with ``pooled``, the segments after :func:`pool_adjacent` (the GAN's input)."""
    from .frames import MODEL_FRAMES

    grid = grid or MODEL_FRAMES
    counts = [int(c) for c in frames_per_segment]
    if pooled:
        counts = [sum(counts[i:i + 2]) for i in range(0, len(counts), 2)]
    ends = torch.tensor(counts).cumsum(0)[:-1].tolist()
    return to_original([f * grid.hop + (grid.window - grid.hop) // 2 for f in ends], kept)


def phone_boundaries(alignment: Sequence[tuple[str, int, int]], kept: Sequence[tuple[int, int]] = ()) -> list[int]:
    """The start of every phone but the first, in samples; given voiced intervals, only those inside one (a
    boundary in removed silence cannot be found)."""
    starts = [s for _, s, _ in alignment[1:]]
    return [s for s in starts if not kept or any(a <= s < b for a, b in kept)]


@dataclass(frozen=True)
class BoundaryScores:
    """Boundary detection counts: found boundaries, reference boundaries, and the one-to-one matches."""

    found: int
    reference: int
    matched: int

    @property
    def precision(self) -> float:
        return self.matched / self.found if self.found else 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: "BoundaryScores") -> "BoundaryScores":
        return BoundaryScores(self.found + other.found, self.reference + other.reference, self.matched + other.matched)


def boundary_scores(found: Sequence[int], reference: Sequence[int], tolerance: int) -> BoundaryScores:
    """Match found boundaries to reference ones, each used at most once, when they are at most ``tolerance``
    samples apart (the usual phone-segmentation score, e.g. 20 ms). On a line, walking both sorted lists and
    matching the first pair within reach gives the largest such matching."""
    f, r = sorted(found), sorted(reference)
    i = j = matched = 0
    while i < len(f) and j < len(r):
        if abs(f[i] - r[j]) <= tolerance:
            matched, i, j = matched + 1, i + 1, j + 1
        elif f[i] < r[j]:
            i += 1
        else:
            j += 1
    return BoundaryScores(len(f), len(r), matched)


def score_boundaries(utterances: Sequence, frames_per_segment: Sequence, kept: Sequence, *, pooled: bool = True,
                     tolerance: int = 320) -> BoundaryScores:
    """The segment boundaries of every utterance against its phone boundaries, summed (tolerance in samples:
    320 is 20 ms, one frame of the models); ``frames_per_segment`` and ``kept`` as :class:`SegmentedAudio` has them."""
    total = BoundaryScores(0, 0, 0)
    for u, counts, iv in zip(utterances, frames_per_segment, kept):
        total += boundary_scores(segment_boundaries([int(c) for c in counts], iv, pooled=pooled),
                                 phone_boundaries(u.alignment, iv), tolerance)
    return total


@dataclass
class UtteranceSegmentation:
    """One utterance through silence removal, k-means and pooling, with its boundaries against the phones'."""

    clusters: torch.Tensor                 # k-means id of every voiced frame
    kept: list[tuple[int, int]]            # voiced intervals, in samples
    boundaries: list[int]                  # segment boundaries, in samples of the original waveform
    scores: BoundaryScores                 # against the phone boundaries inside the voiced intervals


class SegmentationView:
    """k-means of several sizes ``ks`` fitted on the frames of (at most ``max_utterances``) training utterances,
    to see one utterance segmented at each size, pooled or not (the chapter's widget)."""

    def __init__(self, featurize, root, train: Sequence, ks: Sequence[int], *, seed: int = 0,
                 max_utterances: int = 100, tolerance: int = 320):
        from .cluster import KMeans

        self.pipe = AudioPipeline(featurize, root)
        x = torch.cat(self.pipe.frames(train[:max_utterances])[0])
        self.kmeans = {k: KMeans(k, n_init=1, seed=seed, progress=False).fit(x) for k in ks}
        self.tolerance = tolerance

    def __call__(self, utterance, k: int, pooled: bool = True) -> UtteranceSegmentation:
        if k not in self.kmeans:
            raise ConfigError(f"k: expected one of the fitted sizes {sorted(self.kmeans)}, found {k!r}")
        frames, kept = self.pipe.frames([utterance])
        ids = torch.as_tensor(self.kmeans[k].predict(frames[0])).long()
        _, counts = torch.unique_consecutive(ids, return_counts=True)
        found = segment_boundaries(counts.tolist(), kept[0], pooled=pooled)
        return UtteranceSegmentation(ids, kept[0], found, boundary_scores(
            found, phone_boundaries(utterance.alignment, kept[0]), self.tolerance))
