"""Datasets, collate and length-grouped batching for raw-waveform models.

The pieces every training chapter uses::

    utts = read_manifest(root, "train")
    ds = AudioDataset(utts, root, max_samples=250_000, crop="random", seed=1,
                      frame_labels=read_frame_labels(root, "train", "50hz"))
    sampler = LengthGroupedSampler(ds.sizes, max_samples=1_400_000, seed=1)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_audio, num_workers=2)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        for batch in loader:
            batch["audio"]         # (B, T) float32, zero-padded
            batch["padding_mask"]  # (B, T) bool, True = padding
            batch["labels"]        # (B, F) int64, -100 = padding

Conventions (those of fairseq and torchaudio, so their models can be compared directly):
``padding_mask`` is ``True`` at padded positions, frame labels are padded with ``-100``
(the default ``ignore_index`` of :func:`torch.nn.functional.cross_entropy`), and random crops
are fixed by ``(seed, epoch, index)`` so that a run can be reproduced independently of the
number of data-loader workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from ..errors import AudioError, ConfigError
from .audio import check_length, load_audio
from ..frames import FRAME_GRIDS, MODEL_FRAMES, SAMPLE_RATE, FrameGrid
from .manifest import Utterance

__all__ = [
    "AudioDataset",
    "ENCODER_RECEPTIVE_FIELD",
    "IGNORE_INDEX",
    "LengthGroupedSampler",
    "collate_audio",
]

#: Padding value of frame labels: the default ``ignore_index`` of ``F.cross_entropy``.
IGNORE_INDEX = -100

CROP_MODES = ("random", "start", "none")


#: Receptive field of the wav2vec 2.0 / HuBERT feature encoder, in samples (400): shorter audio yields no frame.
ENCODER_RECEPTIVE_FIELD = MODEL_FRAMES.window


def _min_reason(min_samples: int, sample_rate: int) -> str:
    if min_samples == ENCODER_RECEPTIVE_FIELD:
        return (
            f"{min_samples} samples is the receptive field of the wav2vec 2.0 feature encoder "
            f"(kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2), so shorter audio yields no "
            f"frame; drop such utterances from the list before building the dataset"
        )
    return f"the dataset was built with min_samples={min_samples}"


def _rate_hint(n_labels: int, num_samples: int) -> str:
    matches = [name for name, g in FRAME_GRIDS.items() if g.num_frames(num_samples) == n_labels]
    if matches:
        return f"; that is the length at {matches[0]} (pass the matching FrameGrid as frames=)"
    return "; were the labels made for different audio?"


class AudioDataset(Dataset):
    """Utterances of a manifest as validated waveforms, optionally cropped and frame-labelled.

    Each item is a dict:

    - ``"id"`` (str), ``"speaker"`` (str)
    - ``"audio"``: ``(T,)`` float32 waveform, ``T <= max_samples`` when cropping
    - ``"labels"``: ``(F,)`` int64 frame labels with ``F == frames.num_frames(T)``, only
      when ``frame_labels`` is given

    Every item goes through :func:`~speechssl.data.audio.load_audio` (rate, mono, length,
    NaN/Inf checks); lengths are also checked once against ``min_samples`` when the dataset
    is built, so a corpus with a too-short utterance fails immediately, naming it.

    Cropping (only for utterances longer than ``max_samples``):

    - ``"random"``: a window of ``max_samples`` at a start drawn from a generator seeded
      with ``(seed, epoch, index)``: the same crop for the same epoch whatever the number of
      workers or the order of access. Call :meth:`set_epoch` each epoch (with
      ``persistent_workers=True`` the workers keep their own copy of the dataset, so the
      epoch does not reach them; leave it ``False``, the default). When labels are present
      the start is a multiple of ``frames.hop``, so the crop's frames are exactly frames
      ``start // hop ...`` of the whole utterance.
    - ``"start"``: the first ``max_samples`` samples (evaluation, or to cache features).
    - ``"none"``: never crop (``max_samples`` must then be ``None``).

    Args:
        utterances: manifest records (:func:`~speechssl.data.manifest.read_manifest`).
        root: corpus root; ``Utterance.path`` is relative to it.
        sample_rate: the rate every file must have.
        max_samples: crop length in samples, or ``None`` for no cropping.
        min_samples: shortest acceptable utterance; the default 400 is the receptive field of
            the wav2vec 2.0 feature encoder.
        crop: ``"random"``, ``"start"`` or ``"none"``.
        seed: seed of the random crops (``>= 0``).
        frame_labels: ``{utterance id: (F,) integer array}``, e.g. from
            :func:`~speechssl.data.manifest.read_frame_labels`; ``F`` must equal
            ``frames.num_frames(num_samples)`` for every utterance.
        frames: the frame grid of ``frame_labels`` (``MODEL_FRAMES`` = 50 Hz for 50 Hz labels,
            ``MFCC_FRAMES`` for 100 Hz labels).
        normalize: standardise each utterance to zero mean and unit variance (before
            cropping, over the whole utterance), as fairseq's ``normalize=True`` for the
            LARGE wav2vec 2.0 / HuBERT models. Like fairseq this is ``F.layer_norm``:
            ``(x - mean) / sqrt(var + 1e-5)`` with the biased variance, so very quiet audio
            (variance comparable to ``1e-5``) ends with a standard deviation below 1.

    Raises:
        ConfigError: invalid arguments, duplicate utterance ids, missing labels, or a label
            array whose length disagrees with the utterance's number of frames.
        AudioError: an utterance at another sample rate or shorter than ``min_samples``.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        root: str | os.PathLike,
        *,
        sample_rate: int = SAMPLE_RATE,
        max_samples: int | None = None,
        min_samples: int = ENCODER_RECEPTIVE_FIELD,
        crop: str = "random",
        seed: int = 0,
        frame_labels: Mapping[str, np.ndarray] | None = None,
        frames: FrameGrid = MODEL_FRAMES,
        normalize: bool = False,
    ) -> None:
        if crop not in CROP_MODES:
            raise ConfigError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        if sample_rate <= 0:
            raise ConfigError(f"sample_rate must be positive, got {sample_rate}")
        if min_samples < 1:
            raise ConfigError(f"min_samples must be >= 1, got {min_samples}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        if max_samples is not None:
            if crop == "none":
                raise ConfigError(
                    f"crop='none' never crops, but max_samples={max_samples} was given; "
                    f"pass max_samples=None, or crop='random' / 'start'"
                )
            if max_samples < min_samples:
                raise ConfigError(f"max_samples={max_samples} is below min_samples={min_samples}")
            if frame_labels is not None and max_samples < frames.window:
                raise ConfigError(
                    f"max_samples={max_samples} is shorter than one {frames.name} frame "
                    f"({frames.window} samples); crops would have no labels"
                )
        self.utterances = list(utterances)
        self.root = Path(root)
        self.sample_rate = sample_rate
        self.max_samples = max_samples
        self.min_samples = min_samples
        self.crop = crop
        self.seed = seed
        self.frames = frames
        self.normalize = normalize
        self.epoch = 0
        self._min_reason = _min_reason(min_samples, sample_rate)

        seen: dict[str, int] = {}
        for i, u in enumerate(self.utterances):
            if u.id in seen:
                raise ConfigError(f"utterance id {u.id!r} appears twice (items {seen[u.id]} and {i})")
            seen[u.id] = i
            name = self._name(u)
            if u.sample_rate != sample_rate:
                raise AudioError(
                    f"{name}: expected {sample_rate} Hz, found {u.sample_rate} Hz in the manifest"
                )
            check_length(
                u.num_samples, name=name, sample_rate=sample_rate, min_samples=min_samples,
                min_reason=self._min_reason,
            )

        self.frame_labels: dict[str, np.ndarray] | None = None
        if frame_labels is not None:
            self.frame_labels = {}
            for u in self.utterances:
                if u.id not in frame_labels:
                    raise ConfigError(f"no frame labels for utterance {u.id!r} ({len(frame_labels)} given)")
                lab = np.asarray(frame_labels[u.id])
                if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
                    raise ConfigError(
                        f"frame labels of utterance {u.id!r}: expected a 1-D integer array, "
                        f"found shape {lab.shape} of {lab.dtype}"
                    )
                expected = frames.num_frames(u.num_samples)
                if len(lab) != expected:
                    raise ConfigError(
                        f"frame labels of utterance {u.id!r}: expected {expected} labels "
                        f"({frames.name} frames of {u.num_samples} samples), found {len(lab)}"
                        + _rate_hint(len(lab), u.num_samples)
                    )
                self.frame_labels[u.id] = lab

    def _name(self, u: Utterance) -> str:
        return f"utterance {u.id} ({self.root / u.path})"

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def sizes(self) -> np.ndarray:
        """``(N,)`` int64: the length in samples of every item as returned (after cropping).

        Pass it to :class:`LengthGroupedSampler`.
        """
        n = np.array([u.num_samples for u in self.utterances], dtype=np.int64)
        if self.max_samples is not None:
            n = np.minimum(n, self.max_samples)
        return n

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of ``epoch`` (call once per epoch, before iterating)."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def crop_window(self, index: int) -> tuple[int, int]:
        """``(start, length)`` in samples of item ``index``'s crop in the current epoch."""
        n = self.utterances[index].num_samples
        if self.max_samples is None or n <= self.max_samples:
            return 0, n
        length = self.max_samples
        if self.crop == "start":
            return 0, length
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if self.frame_labels is not None:
            hop = self.frames.hop
            return int(rng.integers(0, (n - length) // hop + 1)) * hop, length
        return int(rng.integers(0, n - length + 1)), length

    def __getitem__(self, index: int) -> dict:
        u = self.utterances[index]
        x = load_audio(
            self.root / u.path, self.sample_rate, self.min_samples, min_reason=self._min_reason
        )
        if x.shape[0] != u.num_samples:
            raise AudioError(
                f"{self._name(u)}: expected {u.num_samples} samples (the manifest's num_samples), "
                f"found {x.shape[0]} in the file; rebuild the manifest"
            )
        if self.normalize:
            x = F.layer_norm(x, x.shape)
        start, length = self.crop_window(index)
        item = {"id": u.id, "audio": x[start:start + length], "speaker": u.speaker}
        if self.frame_labels is not None:
            first = start // self.frames.hop
            lab = self.frame_labels[u.id][first:first + self.frames.num_frames(length)]
            item["labels"] = torch.from_numpy(lab.astype(np.int64))
        return item

    def __repr__(self) -> str:
        return (
            f"AudioDataset({len(self)} utterances, root={str(self.root)!r}, crop={self.crop!r}, "
            f"max_samples={self.max_samples}, labels={'yes' if self.frame_labels is not None else 'no'})"
        )


def collate_audio(batch: Sequence[Mapping], *, pad_to_multiple: int | None = None) -> dict:
    """Pad a list of :class:`AudioDataset` items into a batch.

    Args:
        batch: items with ``"id"``, ``"audio"`` ``(T_i,)`` and optionally ``"speaker"`` and
            ``"labels"`` ``(F_i,)`` (all items or none).
        pad_to_multiple: round the padded length ``T`` up to a multiple of this (e.g. 320 so
            that ``T`` is a whole number of 50 Hz hops). Use
            ``functools.partial(collate_audio, pad_to_multiple=320)`` as ``collate_fn``.

    Returns:
        A dict with

        - ``"audio"``: ``(B, T)`` float32, zero-padded, ``T = max(T_i)`` (rounded up)
        - ``"lengths"``: ``(B,)`` int64 ``T_i``
        - ``"padding_mask"``: ``(B, T)`` bool, ``True`` at padding (fairseq/torchaudio)
        - ``"ids"``: list of ``B`` ids; ``"speakers"``: list of ``B`` speakers when present
        - ``"labels"``: ``(B, F)`` int64 padded with ``-100`` and ``"label_lengths"``
          ``(B,)`` int64, when the items have labels

    Raises:
        ConfigError: an empty batch, items that are not 1-D, or labels in only some items.
    """
    if len(batch) == 0:
        raise ConfigError(
            "collate_audio got an empty batch; check the batch sampler (max_samples smaller than "
            "any utterance?) or drop_last settings"
        )
    if pad_to_multiple is not None and pad_to_multiple < 1:
        raise ConfigError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    for item in batch:
        if item["audio"].dim() != 1:
            raise ConfigError(
                f"item {item.get('id')!r}: expected (T,) audio, found shape {tuple(item['audio'].shape)}"
            )
    lengths = torch.tensor([item["audio"].shape[0] for item in batch], dtype=torch.int64)
    t_max = int(lengths.max())
    if pad_to_multiple is not None:
        t_max = math.ceil(t_max / pad_to_multiple) * pad_to_multiple
    audio = batch[0]["audio"].new_zeros(len(batch), t_max)
    for b, item in enumerate(batch):
        audio[b, : item["audio"].shape[0]] = item["audio"]
    out = {
        "audio": audio,
        "lengths": lengths,
        "padding_mask": torch.arange(t_max)[None, :] >= lengths[:, None],
        "ids": [item["id"] for item in batch],
    }
    if all("speaker" in item for item in batch):
        out["speakers"] = [item["speaker"] for item in batch]
    has_labels = ["labels" in item for item in batch]
    if any(has_labels):
        if not all(has_labels):
            missing = [item.get("id") for item, h in zip(batch, has_labels) if not h]
            raise ConfigError(f"labels present in some items but not in {missing}")
        label_lengths = torch.tensor([len(item["labels"]) for item in batch], dtype=torch.int64)
        labels = torch.full((len(batch), int(label_lengths.max())), IGNORE_INDEX, dtype=torch.int64)
        for b, item in enumerate(batch):
            labels[b, : len(item["labels"])] = torch.as_tensor(item["labels"], dtype=torch.int64)
        out["labels"] = labels
        out["label_lengths"] = label_lengths
    return out


class LengthGroupedSampler(Sampler[list[int]]):
    """Batch sampler that groups utterances of similar length under a padded-size budget.

    Use it as ``DataLoader(ds, batch_sampler=sampler, collate_fn=collate_audio)``. Batches
    are formed as fairseq forms them for ``max_tokens``:

    1. order the items by length (ties broken by a random permutation when shuffling);
    2. cut the ordered list greedily into batches whose *padded* size
       ``batch_size * max(length)`` (lengths rounded up to ``pad_to_multiple``) stays within
       ``max_samples``, and whose size stays within ``max_batch_size`` when given;
    3. shuffle the order of the batches.

    So padding is small (neighbours have similar lengths) and the memory of a batch is
    bounded whatever the lengths. Everything is deterministic given ``(seed, epoch)``; call
    :meth:`set_epoch` every epoch.

    Distributed training (DDP): every rank builds the same batch list and takes every
    ``num_replicas``-th batch starting at ``rank``. The list is first made a multiple of
    ``num_replicas`` long by splitting the batches with the most items in two, so every rank
    gets the same number of batches (DDP hangs otherwise) and every item is used exactly once
    per epoch across ranks. Only when there are too few items for that (fewer than
    ``num_replicas * ceil(batches / num_replicas)``) are some batches repeated, as
    :class:`torch.utils.data.DistributedSampler` repeats items.

    Args:
        lengths: ``(N,)`` length in samples of every item, e.g. :attr:`AudioDataset.sizes`.
        max_samples: bound on ``batch_size * padded max length`` (fairseq's ``max_tokens``).
        max_batch_size: optional bound on the number of items per batch.
        pad_to_multiple: the ``pad_to_multiple`` given to :func:`collate_audio`, so that the
            bound holds for the tensor actually built.
        shuffle: randomise tie order and batch order; ``False`` gives batches in increasing
            length (evaluation).
        seed: base seed (``>= 0``).
        num_replicas: number of DDP processes; defaults to the world size when
            ``torch.distributed`` is initialised, else 1.
        rank: this process's rank; defaults likewise.

    Raises:
        ConfigError: invalid arguments, or an item longer than ``max_samples`` on its own
            (crop it with ``AudioDataset(max_samples=...)``).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_samples: int,
        *,
        max_batch_size: int | None = None,
        pad_to_multiple: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if num_replicas is None or rank is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            if num_replicas is None:
                num_replicas = torch.distributed.get_world_size() if dist else 1
            if rank is None:
                rank = torch.distributed.get_rank() if dist else 0
        if num_replicas < 1:
            raise ConfigError(f"num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank must be in [0, {num_replicas}), got {rank}")
        if max_samples < 1:
            raise ConfigError(f"max_samples must be >= 1, got {max_samples}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if pad_to_multiple < 1:
            raise ConfigError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1:
            raise ConfigError(f"lengths must be 1-D, got shape {lengths.shape}")
        if len(lengths) and lengths.min() < 1:
            i = int(lengths.argmin())
            raise ConfigError(f"item {i} has length {int(lengths[i])}; lengths must be >= 1")
        padded = -(-lengths // pad_to_multiple) * pad_to_multiple
        if len(lengths) and padded.max() > max_samples:
            i = int(padded.argmax())
            raise ConfigError(
                f"item {i} alone is {int(padded[i])} samples (padded), above max_samples={max_samples}; "
                f"raise max_samples or crop the audio (AudioDataset(max_samples=...))"
            )
        if 0 < len(lengths) < num_replicas:
            raise ConfigError(f"{len(lengths)} items cannot be spread over {num_replicas} replicas")
        self.lengths = lengths
        self._padded = padded
        self.max_samples = int(max_samples)
        self.max_batch_size = max_batch_size
        self.pad_to_multiple = pad_to_multiple
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the batches of ``epoch`` (call once per epoch, before iterating)."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def _batches(self, order: np.ndarray) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order.tolist():
            # ``order`` is by increasing length, so item i sets the batch's padded length.
            size = len(current) + 1
            fits = size * int(self._padded[i]) <= self.max_samples
            if self.max_batch_size is not None:
                fits = fits and size <= self.max_batch_size
            if current and not fits:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _balance(self, batches: list[list[int]]) -> list[list[int]]:
        """Make ``len(batches)`` a multiple of ``num_replicas``, splitting before repeating."""
        r = self.num_replicas
        target = math.ceil(len(batches) / r) * r
        while len(batches) < target:
            k = max(range(len(batches)), key=lambda j: len(batches[j]))
            if len(batches[k]) < 2:
                break
            half = len(batches[k]) // 2
            batches[k:k + 1] = [batches[k][:half], batches[k][half:]]
        missing = target - len(batches)
        return batches + batches[:missing]

    def all_batches(self) -> list[list[int]]:
        """The batches of every rank for the current epoch, in iteration order.

        Rank ``r`` iterates over ``all_batches()[r::num_replicas]``.
        """
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        if self.shuffle:
            rng = np.random.default_rng((self.seed, self.epoch))
            perm = rng.permutation(len(self.lengths))
            order = perm[np.argsort(self.lengths[perm], kind="stable")]
        else:
            rng = None
            order = np.argsort(self.lengths, kind="stable")
        batches = self._balance(self._batches(order))
        if rng is not None:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        self._cache = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from (list(b) for b in self.all_batches()[self.rank::self.num_replicas])

    def __len__(self) -> int:
        return len(self.all_batches()) // self.num_replicas

    def __repr__(self) -> str:
        return (
            f"LengthGroupedSampler({len(self.lengths)} items, max_samples={self.max_samples}, "
            f"num_replicas={self.num_replicas}, rank={self.rank}, {len(self)} batches per rank)"
        )
