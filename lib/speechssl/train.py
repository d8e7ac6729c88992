"""The training engine shared by every model of the book.

One loop trains wav2vec, vq-wav2vec, wav2vec 2.0, HuBERT and wav2vec-U: the models differ
only in their loss, which each model computes itself through the contract::

    loss, metrics = model.compute_loss(batch, num_updates)

``batch`` is a :func:`~speechssl.data.dataset.collate_audio` batch on the training device
(``audio``, ``lengths``, ``padding_mask`` with ``True`` at padding, ``ids``, optional
``labels``), ``num_updates`` the number of optimizer updates done so far (for annealing,
e.g. the Gumbel-softmax temperature); ``loss`` is the scalar to minimise and ``metrics`` a
dict of numbers or one-element tensors to log (accuracy, code perplexity, temperature...).

What the engine does around it, with fairseq's semantics where the papers relied on them:

- AdamW (decoupled weight decay, as fairseq's ``adam``) with the papers' betas / epsilon,
  a learning-rate schedule from :mod:`speechssl.schedules`, gradient accumulation
  (fairseq's ``update_freq``), gradient-norm clipping (the norm before clipping is logged);
- mixed precision on CUDA (``bf16`` autocast, or ``fp16`` autocast with a dynamic loss
  scale); on the CPU everything runs in fp32;
- length-grouped batches under a padded-samples budget
  (:class:`~speechssl.data.dataset.LengthGroupedSampler`, fairseq's ``max_tokens``);
- crash-safe checkpoints (:mod:`speechssl.checkpoint`) holding everything needed for an
  **exact** resume: model, optimizer, schedule, loss scale, random generators and the
  position in the data; a run resumed from a checkpoint produces bit-for-bit the losses of
  an uninterrupted run (on the CPU; CUDA kernels are not all deterministic);
- a stop with a clear error at the first non-finite loss or gradient, naming the step and
  the parameters whose gradients are not finite; the last good checkpoint stays;
- one JSON line of metrics per logged step in ``<out_dir>/metrics.jsonl``;
- multi-GPU / multi-process training with ``torchrun`` (DistributedDataParallel).

From Python (a notebook)::

    config = TrainConfig(model="wav2vec2", scale="tiny", max_steps=400, lr=1e-3,
                         max_batch_samples=64_000, crop_samples=32_000, out_dir="runs/w2v2")
    history = Trainer(model, config, dataset).fit()

From the shell::

    python -m speechssl.train wav2vec2 --scale tiny --data synth
    torchrun --nproc_per_node=4 -m speechssl.train wav2vec2 --scale full \\
        --data librispeech:/data/LibriSpeech --subsets train-clean-100 train-clean-360
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from . import __version__, paths
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    LAST_NAME,
    CheckpointError,
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    model_config_of,
    restore_rng_state,
    to_primitive,
)
from .data.dataset import AudioDataset, LengthGroupedSampler, collate_audio
from .errors import ConfigError, SpeechSSLError
from .progress import progress_disabled
from .schedules import SCHEDULES, build_scheduler, resolve_warmup_steps

__all__ = [
    "DistInfo",
    "METRICS_NAME",
    "NonFiniteError",
    "OPTIMIZERS",
    "PRECISIONS",
    "TrainConfig",
    "Trainer",
    "build_arg_parser",
    "config_from_args",
    "drop_short_utterances",
    "init_distributed",
    "main",
    "make_train_dataset",
    "parse_data_spec",
    "read_metrics",
    "seed_everything",
]

log = logging.getLogger("speechssl.train")

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adam")
#: File name of the metric log in the run folder.
METRICS_NAME = "metrics.jsonl"
#: Keys the engine writes in every metric record; model metrics must use other names.
ENGINE_KEYS = (
    "step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "utterances_per_s", "time",
    "loss_scale", "overflows",
)


#: Batch keys of a model's main input, in the order looked for: waveforms (``collate_audio``),
#: unit tokens (``collate_units``) or precomputed frame features.
INPUT_KEYS = ("audio", "tokens", "features")

#: Fields that may change between a run and its resume without changing the numbers.
_BOOKKEEPING_FIELDS = frozenset(
    {"out_dir", "num_workers", "log_every", "ckpt_every", "keep_checkpoints", "device"}
)


class NonFiniteError(SpeechSSLError, FloatingPointError):
    """A NaN or infinite loss or gradient norm stopped the run."""


# =========================================================================== configuration


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


@dataclass
class TrainConfig:
    """Everything that defines a training run, validated on construction.

    Defaults are those of wav2vec 2.0 BASE pre-training on LibriSpeech (Baevski et al.,
    2020, Sec. 4.2 / fairseq ``examples/wav2vec``): Adam with betas (0.9, 0.98), epsilon
    1e-6, weight decay 0.01, peak learning rate 5e-4 warmed up over the first 8% of 400k
    updates then decayed linearly to 0, 1.4M padded samples per batch (per GPU; the paper
    used 64 GPUs), crops of 250k samples. Each model overrides what its paper used and what
    its scale needs (``ModelSpec.train_overrides(scale)``).

    Attributes:
        model: name of the model (checkpoints record it; a resume from another model's
            checkpoint is refused).
        scale: ``tiny``, ``reduced`` or ``full`` (recorded, and used for the default
            ``out_dir``).
        seed: seed of everything random (model randomness, batch order, crops, workers).
        max_steps: number of optimizer updates of the run (the schedule spans it).
        lr: peak learning rate.
        schedule: ``cosine`` (wav2vec), ``polynomial`` (wav2vec 2.0, HuBERT: linear warm-up
            then linear decay to ``min_lr``), ``tri_stage`` (fine-tuning) or ``constant``.
        warmup_steps: warm-up length in updates; ``None`` uses ``warmup_fraction``.
        warmup_fraction: warm-up length as a fraction of ``max_steps`` (0.08 = 32k of 400k).
        warmup_init_lr: rate at the start of the cosine warm-up (``None``: ``min_lr``, as in
            fairseq); the polynomial warm-up starts from 0.
        min_lr: floor of the cosine schedule, end rate of the polynomial one.
        tri_stage_ratios: fractions of ``max_steps`` for warm-up, hold and decay (sum 1).
        init_lr_scale: tri-stage warm-up starts at ``init_lr_scale * lr``.
        final_lr_scale: tri-stage decay ends at ``final_lr_scale * lr``.
        optimizer: ``adamw`` (decoupled weight decay, what fairseq's ``adam`` does) or
            ``adam`` (L2 penalty added to the gradient).
        betas, eps, weight_decay: optimizer parameters.
        grad_clip: clip the global gradient norm to this value; ``None`` (or 0) does not
            clip (the norm is logged either way).
        accum_steps: micro-batches accumulated per update (fairseq ``update_freq``); the
            loss of each is divided by ``accum_steps``, so the gradient is that of the mean
            loss.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast; on CUDA only (the CPU runs
            fp32). ``fp16`` uses a dynamic loss scale; updates whose gradients overflow are
            skipped, as in fairseq.
        min_loss_scale: with ``fp16``, stop when the loss scale falls below this.
        max_batch_samples: budget of a batch, ``batch size * padded length`` in samples.
        max_batch_size: optional bound on utterances per batch.
        crop_samples: random crop length of :func:`make_train_dataset` (fairseq
            ``max_sample_size``); ``None`` does not crop.
        pad_to_multiple: pad batches to a multiple of this many samples (e.g. 320).
        normalize: standardise each utterance (wav2vec 2.0 LARGE, HuBERT LARGE).
        num_workers: data-loader worker processes.
        log_every: write a metric line every this many updates (metrics are averaged over
            the updates since the previous line).
        ckpt_every: save a checkpoint every this many updates; 0 saves only at the end.
        keep_checkpoints: numbered checkpoints kept besides ``checkpoint_last.pt``.
        out_dir: run folder; ``None`` is ``<runs_dir>/<model>-<scale>``.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        ddp_find_unused_parameters: let DDP handle parameters that get no gradient in
            some steps (slower; only for models that need it).
    """

    model: str
    scale: str = "tiny"
    seed: int = 0
    max_steps: int = 400_000
    lr: float = 5e-4
    schedule: str = "polynomial"
    warmup_steps: int | None = None
    warmup_fraction: float = 0.08
    warmup_init_lr: float | None = None
    min_lr: float = 0.0
    tri_stage_ratios: tuple[float, float, float] = (0.1, 0.4, 0.5)
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.05
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    grad_clip: float | None = None
    accum_steps: int = 1
    precision: str = "fp32"
    min_loss_scale: float = 1e-4
    max_batch_samples: int = 1_400_000
    max_batch_size: int | None = None
    crop_samples: int | None = 250_000
    pad_to_multiple: int = 1
    normalize: bool = False
    num_workers: int = 0
    log_every: int = 100
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    out_dir: str | None = None
    device: str = "auto"
    ddp_find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(
                f"TrainConfig.{name}: expected {expected}, found {getattr(self, name)!r}"
            )

        def check_int(name: str, minimum: int, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if not _is_int(v) or v < minimum:
                raise bad(name, f"an integer >= {minimum}" + (" or None" if optional else ""))
            setattr(self, name, int(v))

        def check_float(name: str, low: float, high: float = math.inf, *, low_open: bool = False,
                        optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            ok = _is_num(v) and math.isfinite(v) and (v > low if low_open else v >= low) and v <= high
            if not ok:
                lo = f"> {low}" if low_open else f">= {low}"
                hi = "" if high == math.inf else f" and <= {high}"
                raise bad(name, f"a finite number {lo}{hi}" + (" or None" if optional else ""))
            setattr(self, name, float(v))

        def check_choice(name: str, choices: Sequence[str]) -> None:
            v = getattr(self, name)
            if v not in choices:
                raise bad(name, f"one of {tuple(choices)}")

        if not isinstance(self.model, str) or not self.model.strip():
            raise bad("model", "a non-empty model name")
        check_choice("scale", paths.SCALES)
        check_int("seed", 0)
        check_int("max_steps", 1)
        check_float("lr", 0.0, low_open=True)
        check_choice("schedule", SCHEDULES)
        check_int("warmup_steps", 0, optional=True)
        check_float("warmup_fraction", 0.0, 1.0)
        check_float("warmup_init_lr", 0.0, optional=True)
        check_float("min_lr", 0.0)
        ratios = self.tri_stage_ratios
        if (
            not isinstance(ratios, (tuple, list))
            or len(ratios) != 3
            or not all(_is_num(r) and 0 <= r <= 1 for r in ratios)
            or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6)
        ):
            raise bad("tri_stage_ratios", "3 fractions in [0, 1] summing to 1 (warm-up, hold, decay)")
        self.tri_stage_ratios = tuple(float(r) for r in ratios)  # type: ignore[assignment]
        check_float("init_lr_scale", 0.0, 1.0)
        check_float("final_lr_scale", 0.0, 1.0, low_open=True)
        check_choice("optimizer", OPTIMIZERS)
        betas = self.betas
        if (
            not isinstance(betas, (tuple, list))
            or len(betas) != 2
            or not all(_is_num(b) and 0 <= b < 1 for b in betas)
        ):
            raise bad("betas", "two numbers in [0, 1)")
        self.betas = (float(betas[0]), float(betas[1]))
        check_float("eps", 0.0, low_open=True)
        check_float("weight_decay", 0.0)
        check_float("grad_clip", 0.0, optional=True)
        if self.grad_clip == 0.0:
            self.grad_clip = None
        check_int("accum_steps", 1)
        check_choice("precision", PRECISIONS)
        check_float("min_loss_scale", 0.0)
        check_int("max_batch_samples", 1)
        check_int("max_batch_size", 1, optional=True)
        check_int("crop_samples", 1, optional=True)
        check_int("pad_to_multiple", 1)
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise bad("normalize", "True or False")
        self.normalize = bool(self.normalize)
        check_int("num_workers", 0)
        check_int("log_every", 1)
        check_int("ckpt_every", 0)
        check_int("keep_checkpoints", 0)
        if self.out_dir is not None:
            if not isinstance(self.out_dir, (str, os.PathLike)) or not str(self.out_dir):
                raise bad("out_dir", "a folder path or None")
            self.out_dir = str(self.out_dir)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if not isinstance(self.ddp_find_unused_parameters, (bool, np.bool_)):
            raise bad("ddp_find_unused_parameters", "True or False")
        # Cross-field checks.
        if self.schedule in ("cosine", "polynomial"):
            warmup = resolve_warmup_steps(self)
            if warmup > self.max_steps:
                raise ConfigError(
                    f"TrainConfig.warmup_steps: expected at most max_steps={self.max_steps}, found {warmup}"
                )
            if self.min_lr >= self.lr and self.schedule == "cosine":
                raise ConfigError(
                    f"TrainConfig.min_lr: expected below lr={self.lr} (the cosine decays from lr "
                    f"to min_lr), found {self.min_lr}"
                )
            if self.min_lr > self.lr:
                raise ConfigError(
                    f"TrainConfig.min_lr: expected at most lr={self.lr}, found {self.min_lr}"
                )
        if self.crop_samples is not None and self.crop_samples > self.max_batch_samples:
            raise ConfigError(
                f"TrainConfig.crop_samples: expected at most max_batch_samples="
                f"{self.max_batch_samples} (a crop must fit in a batch), found {self.crop_samples}"
            )

    @property
    def warmup(self) -> int:
        """Warm-up length in updates (cosine and polynomial schedules)."""
        return resolve_warmup_steps(self)

    def resolved_out_dir(self) -> Path:
        """``out_dir``, or ``<runs_dir>/<model>-<scale>`` when it is ``None``."""
        if self.out_dir is not None:
            return Path(self.out_dir).expanduser()
        return paths.runs_dir() / f"{self.model}-{self.scale}"

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain values (JSON- and checkpoint-friendly)."""
        return to_primitive(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "configuration") -> "TrainConfig":
        """Build from a mapping; an unknown key is an error naming it and ``source``."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"{source}: unknown TrainConfig field(s) {unknown}; valid fields are "
                f"{list(cls.field_names())}"
            )
        return cls(**dict(values))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return TrainConfig.from_dict({**dataclasses.asdict(self), **changes}, source="replace()")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU).

    :meth:`Trainer.fit` does it when a run starts; call it before building the model too,
    so that the initial weights are reproducible as well.
    """
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_train_dataset(
    config: TrainConfig, utterances: Sequence, root: str | os.PathLike, **kwargs: Any
) -> AudioDataset:
    """The training :class:`~speechssl.data.dataset.AudioDataset` of a configuration:
    random crops of ``config.crop_samples`` seeded by ``config.seed``, normalised when
    ``config.normalize``. ``kwargs`` go to ``AudioDataset`` (e.g. ``frame_labels``)."""
    options = dict(
        max_samples=config.crop_samples,
        crop="random" if config.crop_samples is not None else "none",
        seed=config.seed,
        normalize=config.normalize,
    )
    options.update(kwargs)
    return AudioDataset(utterances, root, **options)


def drop_short_utterances(utterances: Sequence, min_samples: int | None, *, what: str = "training set") -> list:
    """The utterances of at least ``min_samples`` samples (all when ``None``), logging how many
    were dropped (fairseq's ``min_sample_size``). A :class:`ConfigError` when none is left."""
    utterances = list(utterances)
    if not min_samples:
        return utterances
    kept = [u for u in utterances if u.num_samples >= min_samples]
    if not kept:
        longest = max((u.num_samples for u in utterances), default=0)
        raise ConfigError(f"{what}: every utterance is shorter than the model's minimum of {min_samples} samples "
                          f"(the longest has {longest}); use longer recordings or a model that needs fewer frames")
    if len(kept) < len(utterances):
        log.info("%s: dropped %d of %d utterances shorter than %d samples", what, len(utterances) - len(kept),
                 len(utterances), min_samples)
    return kept


# =========================================================================== distributed


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a distributed run (``world_size == 1``: not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise ConfigError(
                f"environment variable {name} is not set, but WORLD_SIZE={os.environ.get('WORLD_SIZE')} "
                f"asks for a distributed run; launch with torchrun, which sets RANK, LOCAL_RANK, "
                f"MASTER_ADDR and MASTER_PORT"
            )
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}: expected an integer, found {raw!r}") from None


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group of a ``torchrun`` launch (``WORLD_SIZE > 1``), once.

    Uses NCCL when CUDA is available (and makes ``cuda:LOCAL_RANK`` the current device),
    Gloo otherwise. Without ``WORLD_SIZE > 1`` (a plain ``python`` run, a notebook) it does
    nothing and returns ``DistInfo(1, 0, 0)``. A process group initialised beforehand is
    used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return DistInfo(dist.get_world_size(), rank, _env_int("LOCAL_RANK", rank))
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world} but this PyTorch build has no torch.distributed")
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", rank)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank)
    return DistInfo(world, rank, local_rank)


def _broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# =========================================================================== data plumbing


class _SkipBatches(Sampler):
    """A batch sampler without its first ``start`` batches (resume in the middle of an epoch).

    Batches are skipped as index lists, so the audio of skipped batches is never loaded.
    """

    def __init__(self, batch_sampler: Any, start: int) -> None:
        self.batch_sampler = batch_sampler
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batch_sampler), self.start, None)

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.start)


def _seed_from(*values: int) -> int:
    """A 63-bit seed mixing several integers (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0] >> 1)


def _move(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: _move(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_move(v, device, non_blocking) for v in batch]
    if isinstance(batch, tuple):
        return tuple(_move(v, device, non_blocking) for v in batch)
    return batch


class _LossModule(nn.Module):
    """Routes ``compute_loss`` through ``forward`` so that DDP's hooks see it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict, num_updates: int):  # noqa: D401
        return self.model.compute_loss(batch, num_updates)


def _grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of a list of gradients (no modification)."""
    if not grads:
        return torch.zeros(())
    norms = [torch.linalg.vector_norm(g.detach(), 2.0, dtype=torch.float32) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms), 2.0)


def _clip_(grads: list[torch.Tensor], max_norm: float, total_norm: float) -> None:
    """Scale gradients by ``max_norm / total_norm`` when the norm exceeds ``max_norm``
    (the rule of :func:`torch.nn.utils.clip_grad_norm_`)."""
    coef = max_norm / (total_norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.detach().mul_(coef)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a crash: the log ends there
    return out


# =========================================================================== trainer


class _Interval:
    """Sums over the updates since the last metric line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.updates = 0
        self.loss = 0.0
        self.grad_norm = 0.0
        self.samples = 0.0
        self.utterances = 0.0
        self.metric_sums: dict[str, Any] = {}
        self.metric_counts: dict[str, int] = {}
        self.start = time.perf_counter()


class Trainer:
    """Trains a model that implements ``compute_loss(batch, num_updates)``.

    Args:
        model: the model (``nn.Module`` with ``compute_loss``); moved to the device.
        config: the run's :class:`TrainConfig`.
        train_dataset: the training set. Unless ``batch_sampler`` is given it must expose
            ``sizes`` (length of every item in samples, as
            :attr:`~speechssl.data.dataset.AudioDataset.sizes`), used by
            :class:`~speechssl.data.dataset.LengthGroupedSampler`. ``set_epoch(epoch)`` is
            called every epoch when it has one.
        collate: the batch collate function (default
            :func:`~speechssl.data.dataset.collate_audio`, padded to
            ``config.pad_to_multiple``); it must return a dict with ``"audio"``.
        batch_sampler: replaces the length-grouped sampler: an object with ``__iter__``
            (lists of indices), ``__len__`` and optionally ``set_epoch``, deterministic given
            the epoch (for exact resume), already sharded for DDP.
        model_name: name recorded in checkpoints; defaults to ``config.model``.

    The optimizer, scheduler and loss scaler are built here (so a notebook can inspect or
    hook them before :meth:`fit`). Under ``torchrun`` the process group is joined here.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_dataset: Dataset,
        collate: Callable[[list], Mapping] | None = collate_audio,
        *,
        batch_sampler: Any = None,
        model_name: str | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config: expected a TrainConfig, found {type(config).__name__}")
        if not callable(getattr(model, "compute_loss", None)):
            raise ConfigError(
                f"model {type(model).__name__} has no compute_loss(batch, num_updates) method; "
                f"every model trained by speechssl.train implements it"
            )
        self.config = config
        self.model_name = model_name or config.model
        self.dist = init_distributed()
        self.device = self._resolve_device(config.device)
        self.model = model.to(self.device)
        self.dataset = train_dataset
        try:
            n_items = len(train_dataset)  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError(
                f"train_dataset ({type(train_dataset).__name__}) has no length; the engine needs a "
                f"map-style dataset"
            ) from None
        if n_items == 0:
            raise ConfigError(
                "the training dataset is empty (0 utterances): check the corpus split, or the "
                "filters that built the utterance list"
            )
        if collate is None:
            collate = collate_audio
        if collate is collate_audio and config.pad_to_multiple > 1:
            collate = _PaddedCollate(config.pad_to_multiple)
        self.collate = collate
        self.sampler = batch_sampler if batch_sampler is not None else self._build_sampler(train_dataset)

        self.amp_dtype = self._resolve_precision(config.precision)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"model {type(model).__name__} has no trainable parameters")
        self.params = params
        optim_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optim_cls(
            params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
        )
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=(self.amp_dtype == torch.float16 and self.device.type == "cuda")
        )
        self.loss_module: nn.Module = _LossModule(self.model)
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        if self.dist.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.loss_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.ddp_find_unused_parameters,
            )
            self.loss_module = self.ddp

        self.out_dir = config.resolved_out_dir()
        self.checkpoints = CheckpointManager(self.out_dir, keep=config.keep_checkpoints)
        self.metrics_path = self.out_dir / METRICS_NAME
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.elapsed = 0.0
        self.overflows = 0
        self.history: list[dict[str, Any]] = []
        self.last_checkpoint: Path | None = None
        self._lr_of_last_update = float(self.scheduler.get_last_lr()[0])

    # ------------------------------------------------------------------ setup helpers

    def _resolve_device(self, name: str) -> torch.device:
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", self.dist.local_rank if self.dist.distributed else torch.cuda.current_device())
            return torch.device("cpu")
        device = torch.device(name)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"TrainConfig.device: expected an available device, found {name!r} without CUDA")
            if device.index is None:
                device = torch.device("cuda", self.dist.local_rank if self.dist.distributed else torch.cuda.current_device())
        return device

    def _resolve_precision(self, precision: str) -> torch.dtype | None:
        if precision == "fp32":
            return None
        if self.device.type != "cuda":
            warnings.warn(
                f"precision={precision!r} applies on CUDA only; training on {self.device} runs in fp32",
                stacklevel=3,
            )
            return None
        if precision == "bf16":
            if not torch.cuda.is_bf16_supported():
                raise ConfigError(
                    f"TrainConfig.precision: expected a precision this GPU supports, found 'bf16' on "
                    f"{torch.cuda.get_device_name(self.device)} (no bfloat16); use 'fp16'"
                )
            return torch.bfloat16
        return torch.float16

    def _build_sampler(self, dataset: Dataset) -> LengthGroupedSampler:
        sizes = getattr(dataset, "sizes", None)
        if sizes is None:
            raise ConfigError(
                f"train_dataset ({type(dataset).__name__}) has no `sizes` (item lengths in samples) "
                f"for length-grouped batching; give it one, or pass batch_sampler="
            )
        cfg = self.config
        return LengthGroupedSampler(
            np.asarray(sizes),
            cfg.max_batch_samples,
            max_batch_size=cfg.max_batch_size,
            pad_to_multiple=cfg.pad_to_multiple,
            shuffle=True,
            seed=cfg.seed,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
        )

    def _autocast(self):
        if self.amp_dtype is not None and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return nullcontext()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of the current state (see :mod:`speechssl.checkpoint`)."""
        rng = capture_rng_state(self.device)
        rng_per_rank = None
        if self.dist.distributed:
            rng_per_rank = [None] * self.dist.world_size
            dist.all_gather_object(rng_per_rank, rng)
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model_name": self.model_name,
            "model_config": model_config_of(self.model),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "rng_per_rank": rng_per_rank,
            "data": {"epoch": self.epoch, "batch": self.batch_in_epoch},
            "step": self.step,
            "elapsed": self.elapsed,
            "overflows": self.overflows,
            "config": self.config.to_dict(),
            "world_size": self.dist.world_size,
            "speechssl_version": __version__,
            "torch_version": str(torch.__version__),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, source: str = "checkpoint") -> None:
        """Restore a state from :meth:`state_dict` (model, optimizer, schedule, loss scale,
        random generators, data position, step)."""
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(
                f"{source}: the model weights do not fit model {self.model_name!r} "
                f"({type(self.model).__name__}): {e}"
            ) from e
        saved_cfg = state.get("config") or {}
        diffs = {
            k: (saved_cfg[k], v)
            for k, v in self.config.to_dict().items()
            if k in saved_cfg and saved_cfg[k] != v and k not in _BOOKKEEPING_FIELDS
        }
        if diffs:
            text = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diffs.items()))
            warnings.warn(
                f"resuming from {source} with a changed configuration ({text}); the run will not "
                f"match an uninterrupted one",
                stacklevel=3,
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        scaler_state = state.get("scaler") or {}
        if self.scaler.is_enabled() and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        self.step = int(state["step"])
        self.epoch = int(state["data"]["epoch"])
        self.batch_in_epoch = int(state["data"]["batch"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.overflows = int(state.get("overflows", 0))
        per_rank = state.get("rng_per_rank")
        if self.dist.distributed:
            if per_rank is not None and len(per_rank) == self.dist.world_size:
                restore_rng_state(per_rank[self.dist.rank], self.device)
            else:
                warnings.warn(
                    f"{source} was saved by {state.get('world_size', 1)} process(es), this run has "
                    f"{self.dist.world_size}: random generators are re-seeded, the run will not "
                    f"match an uninterrupted one",
                    stacklevel=3,
                )
                self._seed_all(_seed_from(self.config.seed, self.step, self.dist.rank))
        else:
            restore_rng_state(state["rng"], self.device)

    def _seed_all(self, seed: int) -> None:
        seed_everything(seed)

    def save_checkpoint(self) -> Path | None:
        """Save the current state into the run folder (every rank must call it under DDP;
        rank 0 writes). Returns the path written on rank 0, ``None`` elsewhere."""
        state = self.state_dict()
        if not self.dist.is_main:
            return None
        path = self.checkpoints.save(state, self.step)
        self.last_checkpoint = self.checkpoints.last_path if self.checkpoints.keep else path
        log.info("step %d: saved %s", self.step, path)
        return path

    # ------------------------------------------------------------------ run folder

    def _prepare_run_folder(self, resume: bool | str | os.PathLike, overwrite: bool) -> tuple[str | None, str | None]:
        """On rank 0: ``(error message or None, checkpoint to resume from or None)``."""
        latest = self.checkpoints.latest()
        if resume is not False and resume is not None:
            if isinstance(resume, (str, os.PathLike)) and str(resume) != "auto":
                return None, str(resume)
            if latest is not None:
                return None, str(latest)
            if resume is True:
                return (
                    f"resume requested but {self.out_dir} holds no checkpoint (expected {LAST_NAME}); "
                    f"start without resume, or use resume='auto' to resume only when there is one",
                    None,
                )
        elif latest is not None and not overwrite:
            return (
                f"{self.out_dir} already holds a run of {self.model_name!r} ({latest.name}); pass "
                f"resume=True (--resume) to continue it, or overwrite=True (--overwrite) to delete "
                f"its checkpoints and metrics and start over",
                None,
            )
        # Fresh start.
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints.remove_all()
        if self.metrics_path.exists():
            self.metrics_path.unlink()
        return None, None

    def _truncate_metrics(self) -> None:
        """Keep the metric lines up to the resumed step (later ones will be redone)."""
        records = [r for r in read_metrics(self.metrics_path) if r.get("step", 0) <= self.step]
        tmp = self.metrics_path.with_name(f".{METRICS_NAME}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, allow_nan=False) + "\n")
        os.replace(tmp, self.metrics_path)
        self.history = records

    # ------------------------------------------------------------------ data

    def _epoch_len(self, epoch: int) -> int:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        return len(self.sampler)

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[int, int, Any]]:
        """``(epoch, index in epoch, batch)`` from position ``(epoch, start)`` on, forever."""
        cfg = self.config
        while True:
            n = self._epoch_len(epoch)
            if n == 0:
                raise ConfigError(
                    f"epoch {epoch} has no batches for rank {self.dist.rank} of {self.dist.world_size}: "
                    f"{len(self.dataset)} utterances; max_batch_samples={cfg.max_batch_samples}"
                )
            if start < n:
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(epoch)
                generator = torch.Generator()
                generator.manual_seed(_seed_from(cfg.seed, epoch, self.dist.rank))
                loader = DataLoader(
                    self.dataset,
                    batch_sampler=_SkipBatches(self.sampler, start),
                    collate_fn=self.collate,
                    num_workers=cfg.num_workers,
                    pin_memory=self.device.type == "cuda",
                    generator=generator,
                )
                for index, batch in enumerate(loader, start):
                    yield epoch, index, batch
            epoch, start = epoch + 1, 0

    def _check_batch(self, batch: Any, epoch: int, index: int) -> tuple[dict, int, int]:
        where = f"step {self.step + 1}, batch {index} of epoch {epoch}"
        key = next((k for k in INPUT_KEYS if isinstance(batch, Mapping) and isinstance(batch.get(k), torch.Tensor)),
                   None)
        if key is None:
            raise ConfigError(
                f"{where}: expected the collate function to return a dict with one of the input tensors "
                f"{INPUT_KEYS}, found {type(batch).__name__}"
                + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else "")
            )
        inputs = batch[key]
        if inputs.dim() == 0 or inputs.shape[0] == 0 or inputs.numel() == 0:
            raise ConfigError(f"{where}: empty batch ({key} of shape {tuple(inputs.shape)})")
        lengths = batch.get("lengths")
        samples = int(lengths.sum()) if isinstance(lengths, torch.Tensor) else int(inputs.numel())
        return dict(batch), int(inputs.shape[0]), samples

    # ------------------------------------------------------------------ one update

    def _unpack(self, out: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
        name = type(self.model).__name__
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ConfigError(
                f"{name}.compute_loss must return (loss, metrics), found {type(out).__name__}"
            )
        loss, metrics = out
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ConfigError(f"{name}.compute_loss: expected a scalar loss tensor, found {shape}")
        if not loss.requires_grad:
            raise ConfigError(
                f"{name}.compute_loss returned a loss that does not require grad (detached, or "
                f"computed under torch.no_grad?)"
            )
        if metrics is None:
            metrics = {}
        if not isinstance(metrics, Mapping):
            raise ConfigError(f"{name}.compute_loss: expected a dict of metrics, found {type(metrics).__name__}")
        return loss.reshape(()), metrics

    def _add_metrics(self, interval: _Interval, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            if key in ENGINE_KEYS:
                raise ConfigError(
                    f"{type(self.model).__name__}.compute_loss: metric name {key!r} is reserved by "
                    f"the engine ({', '.join(ENGINE_KEYS)}); rename it"
                )
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ConfigError(
                        f"{type(self.model).__name__}.compute_loss: metric {key!r} must be a number "
                        f"or a one-element tensor, found shape {tuple(value.shape)}"
                    )
                value = value.detach().float().reshape(())
            elif _is_num(value) or isinstance(value, bool):
                value = float(value)
            else:
                raise ConfigError(
                    f"{type(self.model).__name__}.compute_loss: metric {key!r} must be a number or a "
                    f"one-element tensor, found {type(value).__name__}"
                )
            interval.metric_sums[key] = interval.metric_sums.get(key, 0.0) + value
            interval.metric_counts[key] = interval.metric_counts.get(key, 0) + 1

    def _nonfinite_parameters(self) -> list[str]:
        bad = []
        for name, p in self.model.named_parameters():
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                kind = "nan" if bool(torch.isnan(p.grad).any()) else "inf"
                bad.append(f"{name} ({kind})")
        return bad

    def _last_good(self) -> str:
        latest = self.checkpoints.latest()
        if latest is None:
            return "no checkpoint was saved before it"
        return f"the last good checkpoint is {latest}"

    def _update(self, stream: Iterator, interval: _Interval) -> bool:
        """One optimizer update over ``accum_steps`` micro-batches; ``False`` when the fp16
        loss scale overflowed and the update was skipped."""
        cfg = self.config
        accum = cfg.accum_steps
        losses = []
        samples = utterances = 0
        for micro in range(accum):
            epoch, index, batch = next(stream)
            self.epoch, self.batch_in_epoch = epoch, index + 1
            batch, n_utts, n_samples = self._check_batch(batch, epoch, index)
            batch = _move(batch, self.device, non_blocking=self.device.type == "cuda")
            sync = micro == accum - 1
            context = self.ddp.no_sync() if (self.ddp is not None and not sync) else nullcontext()
            with context:
                with self._autocast():
                    out = self.loss_module(batch, self.step)
                loss, metrics = self._unpack(out)
                scaled = loss.float() / accum if accum > 1 else loss.float()
                self.scaler.scale(scaled).backward()
            losses.append(loss.detach().float())
            self._add_metrics(interval, metrics)
            samples += n_samples
            utterances += n_utts

        step_losses = torch.stack(losses)
        stats = torch.stack([
            step_losses.sum(),
            (~torch.isfinite(step_losses)).sum().float(),
            torch.tensor(float(samples), device=step_losses.device),
            torch.tensor(float(utterances), device=step_losses.device),
        ]).double()
        if self.dist.distributed:
            dist.all_reduce(stats)
        loss_sum, n_bad, samples_all, utts_all = stats.tolist()
        step = self.step + 1
        if n_bad:
            values = ", ".join(f"{v:g}" for v in step_losses.tolist())
            where = "" if not self.dist.distributed else f" ({int(n_bad)} micro-batch(es) over all ranks)"
            raise NonFiniteError(
                f"step {step} (num_updates={self.step}, epoch {self.epoch}): the loss is not finite"
                f"{where}; micro-batch losses on rank {self.dist.rank}: [{values}]. Training stopped; "
                f"{self._last_good()}"
            )

        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = float(_grad_norm(grads))
        fp16 = self.scaler.is_enabled()
        if not math.isfinite(norm) and not fp16:
            bad = self._nonfinite_parameters()
            shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            raise NonFiniteError(
                f"step {step} (num_updates={self.step}, epoch {self.epoch}): the gradient norm is "
                f"{norm} (loss {loss_sum / (accum * self.dist.world_size):g}); non-finite gradients in "
                f"{len(bad)} parameter(s): {shown}. Training stopped; {self._last_good()}"
            )
        if math.isfinite(norm) and cfg.grad_clip is not None:
            _clip_(grads, cfg.grad_clip, norm)

        lr = self.scheduler.get_last_lr()[0]
        if fp16:
            scale_before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if not math.isfinite(norm):
                self.overflows += 1
                self.optimizer.zero_grad(set_to_none=True)
                scale = self.scaler.get_scale()
                log.info("step %d: fp16 gradient overflow, loss scale %g -> %g, update skipped",
                         step, scale_before, scale)
                if scale < cfg.min_loss_scale:
                    raise NonFiniteError(
                        f"step {step}: the fp16 loss scale fell to {scale:g}, below min_loss_scale="
                        f"{cfg.min_loss_scale:g}, after gradient overflows: the loss keeps overflowing "
                        f"in fp16 (try precision='bf16' or a lower lr). {self._last_good()}"
                    )
                return False
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = step

        interval.updates += 1
        interval.loss += loss_sum / (accum * self.dist.world_size)
        interval.grad_norm += norm
        interval.samples += samples_all
        interval.utterances += utts_all
        self._lr_of_last_update = lr
        return True

    def _log(self, interval: _Interval, bar: Any) -> None:
        if interval.updates == 0:
            return
        now = time.perf_counter()
        dt = max(now - interval.start, 1e-9)
        n = interval.updates
        record: dict[str, Any] = {
            "step": self.step,
            "epoch": self.epoch,
            "loss": interval.loss / n,
            "lr": self._lr_of_last_update,
            "grad_norm": interval.grad_norm / n,
            "samples_per_s": interval.samples / dt,
            "utterances_per_s": interval.utterances / dt,
            "time": self.elapsed,
        }
        if self.scaler.is_enabled():
            record["loss_scale"] = float(self.scaler.get_scale())
            record["overflows"] = self.overflows
        for key, total in interval.metric_sums.items():
            record[key] = float(total) / interval.metric_counts[key]
        record = {k: (_finite_or_none(v) if isinstance(v, float) else v) for k, v in record.items()}
        self.history.append(record)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")
        if bar is not None:
            bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.3g}", refresh=False)
        interval.reset()

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        resume: bool | str | os.PathLike = False,
        *,
        stop_at: int | None = None,
        overwrite: bool = False,
    ) -> list[dict[str, Any]]:
        """Train up to ``config.max_steps`` updates (or ``stop_at``) and return the history.

        Args:
            resume: ``False``: start a new run (an ``out_dir`` already holding a run is an
                error unless ``overwrite``); ``True``: continue from
                ``<out_dir>/checkpoint_last.pt``; ``"auto"``: continue when there is a
                checkpoint, else start; a path: continue from that checkpoint.
            stop_at: stop (and save a checkpoint) after this many updates, without changing
                the schedule, which still spans ``max_steps``: a long run can be trained in
                chunks, and continued with ``resume=True``.
            overwrite: on a fresh start, delete the checkpoints and metrics already in
                ``out_dir``.

        Returns:
            The metric records of the run (those before a resume included): dicts with
            ``step``, ``epoch``, ``loss``, ``lr``, ``grad_norm``, ``samples_per_s``,
            ``utterances_per_s``, ``time`` and the model's metrics, averaged over the
            updates since the previous record.

        Raises:
            NonFiniteError: a non-finite loss or gradient (the last good checkpoint stays).
            CheckpointError: a resume from a missing, corrupt or other model's checkpoint.
            ConfigError: an empty dataset or batch, a run folder that already holds a run.
        """
        cfg = self.config
        if stop_at is not None and (not _is_int(stop_at) or stop_at < 1):
            raise ConfigError(f"stop_at: expected an integer >= 1 or None, found {stop_at!r}")
        decision = self._prepare_run_folder(resume, overwrite) if self.dist.is_main else None
        error, resume_path = _broadcast_object(decision, self.dist)
        if error is not None:
            raise ConfigError(error)
        if resume_path is not None:
            state = load_checkpoint(
                resume_path, model_name=self.model_name, model_config=model_config_of(self.model)
            )
            self.load_state_dict(state, source=str(resume_path))
            self.history = []
            if self.dist.is_main:
                self.checkpoints.remove_stale_temp_files()
                self._truncate_metrics()
            log.info("resumed %s from %s at step %d", self.model_name, resume_path, self.step)
        else:
            self.step, self.epoch, self.batch_in_epoch, self.elapsed, self.overflows = 0, 0, 0, 0.0, 0
            self.history = []
            self._seed_all(_seed_from(cfg.seed, self.dist.rank) if self.dist.distributed else cfg.seed)

        target = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
        if self.step >= target:
            log.info("%s is at step %d, nothing to train (target %d)", self.model_name, self.step, target)
            return self.history

        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc=self.model_name,
            unit="update",
            disable=progress_disabled() or not self.dist.is_main,
            dynamic_ncols=True,
        )
        self.model.train()
        stream = self._batches(self.epoch, self.batch_in_epoch)
        interval = _Interval()
        self._lr_of_last_update = self.scheduler.get_last_lr()[0]
        try:
            while self.step < target:
                t0 = time.perf_counter()
                updated = self._update(stream, interval)
                self.elapsed += time.perf_counter() - t0
                if not updated:
                    continue
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == target:
                    self._log(interval, bar)
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or self.step == target:
                    self.save_checkpoint()
        finally:
            stream.close()
            bar.close()
        return self.history


class _PaddedCollate:
    """``collate_audio`` with ``pad_to_multiple`` (picklable, for worker processes)."""

    def __init__(self, multiple: int) -> None:
        self.multiple = multiple

    def __call__(self, items: list) -> dict:
        return collate_audio(items, pad_to_multiple=self.multiple)


# =========================================================================== command line


def parse_data_spec(spec: str) -> tuple[str, Path | None]:
    """``"synth"`` -> ``("synth", None)``; ``"librispeech:PATH"`` -> ``("librispeech", PATH)``."""
    if not isinstance(spec, str):
        raise ConfigError(f"--data: expected 'synth' or 'librispeech:PATH', found {spec!r}")
    text = spec.strip()
    if text == "synth":
        return "synth", None
    kind, sep, rest = text.partition(":")
    if kind == "librispeech" and sep:
        if not rest.strip():
            raise ConfigError(
                f"--data: expected 'librispeech:PATH' with the folder containing LibriSpeech/, "
                f"found {spec!r} (no path)"
            )
        return "librispeech", Path(rest.strip()).expanduser()
    if kind == "librispeech":
        raise ConfigError(f"--data: expected 'librispeech:PATH' (a colon, then the folder), found {spec!r}")
    raise ConfigError(f"--data: expected 'synth' or 'librispeech:PATH', found {spec!r}")


def _model_specs() -> Mapping[str, Any]:
    """The model registry, imported only when the command line needs it."""
    from .models import MODEL_SPECS

    return MODEL_SPECS


def _resolve_spec(name: str) -> Any:
    specs = _model_specs()
    if name not in specs:
        raise ConfigError(f"unknown model {name!r}; available models: {', '.join(sorted(specs)) or '(none)'}")
    return specs[name]


def build_arg_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m speechssl.train``."""
    p = argparse.ArgumentParser(
        prog="python -m speechssl.train",
        description=(
            "Train a speechssl model. Under torchrun (torchrun --nproc_per_node=N -m "
            "speechssl.train ...) the run is distributed over N processes."
        ),
    )
    p.add_argument("model", help="model name (a key of speechssl.models.MODEL_SPECS)")
    p.add_argument(
        "--scale", choices=paths.SCALES, default=None,
        help="tiny (CPU, minutes), reduced (one GPU) or full; default: $SPEECHSSL_SCALE or tiny",
    )
    p.add_argument(
        "--data", default="synth",
        help="'synth' (the synthetic corpus of the scale's preset, split 'pretrain') or "
             "'librispeech:PATH' (PATH contains LibriSpeech/)",
    )
    p.add_argument(
        "--subsets", nargs="+", default=["train-clean-100"], metavar="SUBSET",
        help="LibriSpeech subsets for --data librispeech:PATH (default: train-clean-100)",
    )
    add_run_options(p, default_out="<runs_dir>/<model>-<scale>")
    return p


def add_run_options(p: argparse.ArgumentParser, *, default_out: str) -> None:
    """The options of a training run shared by the training commands (``--out``, ``--resume``
    and the fields of :data:`_CLI_FIELDS`)."""
    p.add_argument("--out", default=None, help=f"run folder (default: {default_out})")
    p.add_argument("--max-steps", type=int, default=None, help="number of updates")
    p.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="auto|CHECKPOINT",
        help="continue the run in --out (--resume), only if there is one (--resume auto), or "
             "from a given checkpoint file",
    )
    p.add_argument("--overwrite", action="store_true", help="delete a run already in --out and start over")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--accum-steps", type=int, default=None, help="micro-batches per update")
    p.add_argument("--precision", choices=PRECISIONS, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--ckpt-every", type=int, default=None)


_CLI_FIELDS = {
    "max_steps": "max_steps", "seed": "seed", "lr": "lr", "accum_steps": "accum_steps",
    "precision": "precision", "num_workers": "num_workers", "device": "device",
    "log_every": "log_every", "ckpt_every": "ckpt_every",
}


def config_from_args(args: argparse.Namespace, spec: Any) -> TrainConfig:
    """Defaults, then ``spec.train_overrides(scale)``, then the command-line options."""
    scale = args.scale or paths.scale()
    overrides = dict(spec.train_overrides(scale)) if hasattr(spec, "train_overrides") else {}
    values: dict[str, Any] = {"model": args.model, "scale": scale}
    unknown = sorted(set(overrides) - set(TrainConfig.field_names()))
    if unknown:
        raise ConfigError(
            f"train_overrides({scale!r}) of model {args.model!r}: unknown TrainConfig field(s) "
            f"{unknown}; valid fields are {list(TrainConfig.field_names())}"
        )
    values.update({k: v for k, v in overrides.items() if k not in ("model", "scale")})
    for attr, fname in _CLI_FIELDS.items():
        value = getattr(args, attr, None)
        if value is not None:
            values[fname] = value
    if args.out is not None:
        values["out_dir"] = args.out
    return TrainConfig.from_dict(values, source=f"configuration of {args.model!r}")


def synth_corpus(scale: str) -> Path:
    """The synthetic corpus of a scale (``tiny`` for ``tiny``, ``reduced`` otherwise), generated if missing."""
    from .data.synth import ensure_corpus

    preset = "tiny" if scale == "tiny" else "reduced"
    return Path(ensure_corpus(paths.corpus_dir(preset), preset))


T = TypeVar("T")


def main_process_first(info: DistInfo, load: Callable[[], T]) -> T:
    """``load()`` on the main process, then (after a barrier) on the others, so that the main
    process alone creates what is missing, such as a synthetic corpus."""
    if info.is_main:
        out = load()
    if info.distributed:
        dist.barrier()
    if not info.is_main:
        out = load()
    return out


def run_distributed(prog: str, body: Callable[[DistInfo], int]) -> int:
    """``body(info)`` inside a process group (one when run under torchrun); a
    :class:`~speechssl.errors.ConfigError` is exit status 2, another package error 1, each printed
    after ``prog``. A process group created here is destroyed at the end."""
    created_group = not (dist.is_available() and dist.is_initialized())
    info = DistInfo()
    try:
        info = init_distributed()
        return body(info)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except SpeechSSLError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    finally:
        if info.distributed and created_group and dist.is_initialized():
            dist.destroy_process_group()


def _load_utterances(kind: str, path: Path | None, scale: str, subsets: Sequence[str], info: DistInfo):
    """``(utterances, corpus root)`` of the ``--data`` choice."""
    from .data.manifest import read_manifest

    if kind == "synth":
        root = main_process_first(info, lambda: synth_corpus(scale))
        return read_manifest(root, "pretrain"), root
    from .data.librispeech import read_librispeech

    return read_librispeech(path, list(subsets), progress=info.is_main and not progress_disabled()), Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m speechssl.train``; returns the exit status.

    Exit status 2 for a bad command line or configuration (unknown model, bad ``--data``,
    invalid values), 1 for a failed run (missing corpus, non-finite loss...), 0 on success.
    """
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    prog = parser.prog
    try:
        kind, data_path = parse_data_spec(args.data)
        spec = _resolve_spec(args.model)
        config = config_from_args(args, spec)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2

    def run(info: DistInfo) -> int:
        utterances, root = _load_utterances(kind, data_path, config.scale, args.subsets, info)
        extra: dict[str, Any] = {}
        dataset_kwargs = getattr(spec, "dataset_kwargs", None)
        if callable(dataset_kwargs):
            extra = dict(dataset_kwargs(config.scale, root, "pretrain" if kind == "synth" else "+".join(args.subsets)))
        seed_everything(config.seed)
        model = spec.build(config.scale)
        utterances = drop_short_utterances(utterances, getattr(model, "min_input_samples", None),
                                           what=f"{args.data} ({args.model})")
        dataset = make_train_dataset(config, utterances, root, **extra)
        trainer = Trainer(model, config, dataset)
        history = trainer.fit(resume=args.resume, overwrite=args.overwrite)
        if info.is_main:
            last = history[-1] if history else {}
            print(
                f"{args.model} ({config.scale}): {trainer.step} updates, loss {last.get('loss')}; "
                f"run folder {trainer.out_dir}"
            )
        return 0

    return run_distributed(prog, run)


if __name__ == "__main__":
    sys.exit(main())
