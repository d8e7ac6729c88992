"""The configuration of a training run (:class:`TrainConfig`), validated on construction."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import paths
from ..checkpoint import to_primitive
from ..errors import ConfigError
from ..schedules import SCHEDULES, resolve_warmup_steps

__all__ = ["OPTIMIZERS", "PRECISIONS", "TrainConfig"]

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
OPTIMIZERS = ("adamw", "adam")

#: Fields that may change between a run and its resume without changing the numbers.
BOOKKEEPING_FIELDS = frozenset({"out_dir", "num_workers", "log_every", "ckpt_every", "keep_checkpoints", "device"})

INF = math.inf
#: name -> (minimum, may be None)
_INTS = {"seed": (0, False), "max_steps": (1, False), "warmup_steps": (0, True), "accum_steps": (1, False),
         "max_batch_samples": (1, False), "max_batch_size": (1, True), "crop_samples": (1, True),
         "pad_to_multiple": (1, False), "num_workers": (0, False), "log_every": (1, False), "ckpt_every": (0, False),
         "keep_checkpoints": (0, False)}
#: name -> (low, high, low bound excluded, may be None)
_FLOATS = {"lr": (0.0, INF, True, False), "warmup_fraction": (0.0, 1.0, False, False),
           "warmup_init_lr": (0.0, INF, False, True), "min_lr": (0.0, INF, False, False),
           "init_lr_scale": (0.0, 1.0, False, False), "final_lr_scale": (0.0, 1.0, True, False),
           "eps": (0.0, INF, True, False), "weight_decay": (0.0, INF, False, False),
           "grad_clip": (0.0, INF, False, True), "min_loss_scale": (0.0, INF, False, False)}
_CHOICES = {"scale": paths.SCALES, "schedule": SCHEDULES, "optimizer": OPTIMIZERS, "precision": PRECISIONS}
_BOOLS = ("normalize", "ddp_find_unused_parameters")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


@dataclass
class TrainConfig:
    """Everything that defines a training run, validated on construction.

    Defaults are those of wav2vec 2.0 BASE pre-training on LibriSpeech (Baevski et al., 2020,
    Sec. 4.2; fairseq ``wav2vec2_base_librispeech.yaml``): Adam with betas (0.9, 0.98), epsilon
    1e-6, weight decay 0.01, peak learning rate 5e-4 warmed up over the first 8% of 400k updates,
    then decayed linearly to 0, 1.4M padded samples per batch (per GPU; the paper used 64 GPUs),
    crops of 250k samples. Each recipe (:mod:`speechssl.recipes`) sets what its paper and its scale
    use.

    Attributes:
        model: name of the model (checkpoints record it; a resume from another model is refused).
        scale: ``tiny``, ``reduced`` or ``full`` (recorded, and used for the default ``out_dir``).
        seed: seed of everything random (initialisation, batch order, crops, masks, workers).
        max_steps: optimizer updates of the run (the schedule spans it).
        lr: peak learning rate.
        schedule: ``cosine`` (wav2vec), ``polynomial`` (wav2vec 2.0, HuBERT: linear warm-up then linear
            decay to ``min_lr``), ``tri_stage`` (fine-tuning) or ``constant``.
        warmup_steps / warmup_fraction: warm-up length in updates, or (when ``warmup_steps`` is
            ``None``) as a fraction of ``max_steps`` (0.08 = 32k of 400k).
        warmup_init_lr: rate at the start of the cosine warm-up (``None``: ``min_lr``, as fairseq);
            the polynomial warm-up starts from 0.
        min_lr: floor of the cosine schedule, end rate of the polynomial one.
        tri_stage_ratios, init_lr_scale, final_lr_scale: the tri-stage schedule (warm-up, hold and
            decay fractions; start and end rates as fractions of ``lr``).
        optimizer: ``adamw`` (decoupled weight decay, what fairseq's ``adam`` does) or ``adam``.
        betas, eps, weight_decay: optimizer parameters.
        grad_clip: clip the global gradient norm to this value; ``None`` or 0 does not clip (the norm
            is logged either way; fairseq ``clip_norm``).
        accum_steps: micro-batches per update (fairseq ``update_freq``); the gradient is that of the mean.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast, on CUDA only (the CPU runs fp32). ``fp16``
            uses a dynamic loss scale and skips updates whose gradients overflow, as fairseq. ``auto``
            picks ``bf16`` on GPUs that have it in hardware (A100, H100), ``fp16`` on older ones (T4, V100).
        min_loss_scale: with ``fp16``, stop when the loss scale falls below this.
        max_batch_samples: budget of a batch, ``batch size * padded length`` (fairseq ``max_tokens``).
        max_batch_size: optional bound on utterances per batch.
        crop_samples: random crop length (fairseq ``max_sample_size``); ``None`` does not crop.
        pad_to_multiple: pad batches to a multiple of this many samples (e.g. 320).
        normalize: standardise each utterance (wav2vec 2.0 LARGE, HuBERT LARGE).
        num_workers: data-loader worker processes.
        log_every: one metric line every this many updates (averaged since the previous line).
        ckpt_every: save a checkpoint every this many updates; 0 saves only at the end.
        keep_checkpoints: numbered checkpoints kept besides ``checkpoint_last.pt``.
        out_dir: run folder; ``None`` is ``<runs_dir>/<model>-<scale>``.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        ddp_find_unused_parameters: let DDP handle parameters without a gradient in some steps.
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

    def _bad(self, name: str, expected: str) -> ConfigError:
        return ConfigError(f"TrainConfig.{name}: expected {expected}, found {getattr(self, name)!r}")

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise self._bad("model", "a non-empty model name")
        for name, (low, optional) in _INTS.items():
            v = getattr(self, name)
            if not (optional and v is None):
                if not _is_int(v) or v < low:
                    raise self._bad(name, f"an integer >= {low}" + (" or None" if optional else ""))
                setattr(self, name, int(v))
        for name, (low, high, low_open, optional) in _FLOATS.items():
            v = getattr(self, name)
            if not (optional and v is None):
                if not (_is_num(v) and math.isfinite(v) and (v > low if low_open else v >= low) and v <= high):
                    bounds = (f"> {low}" if low_open else f">= {low}") + ("" if high == INF else f" and <= {high}")
                    raise self._bad(name, f"a finite number {bounds}" + (" or None" if optional else ""))
                setattr(self, name, float(v))
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise self._bad(name, f"one of {tuple(choices)}")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise self._bad(name, "True or False")
            setattr(self, name, bool(getattr(self, name)))
        self._check_tuples()
        if self.grad_clip == 0.0:
            self.grad_clip = None
        if self.out_dir is not None:
            if not isinstance(self.out_dir, (str, os.PathLike)) or not str(self.out_dir):
                raise self._bad("out_dir", "a folder path or None")
            self.out_dir = str(self.out_dir)
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda")
                                                    or self.device.startswith("cuda:")):
            raise self._bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        self._check_across_fields()

    def _check_tuples(self) -> None:
        ratios = self.tri_stage_ratios
        if (not isinstance(ratios, (tuple, list)) or len(ratios) != 3 or not all(_is_num(r) and 0 <= r <= 1 for r in ratios)
                or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6)):
            raise self._bad("tri_stage_ratios", "3 fractions in [0, 1] summing to 1 (warm-up, hold, decay)")
        self.tri_stage_ratios = tuple(float(r) for r in ratios)  # type: ignore[assignment]
        betas = self.betas
        if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(_is_num(b) and 0 <= b < 1 for b in betas):
            raise self._bad("betas", "two numbers in [0, 1)")
        self.betas = (float(betas[0]), float(betas[1]))

    def _check_across_fields(self) -> None:
        if self.schedule in ("cosine", "polynomial"):
            warmup = resolve_warmup_steps(self)
            if warmup > self.max_steps:
                raise ConfigError(f"TrainConfig.warmup_steps: expected at most max_steps={self.max_steps}, found "
                                  f"{warmup}; lower it (--warmup-steps) or train longer")
            if self.schedule == "cosine" and self.min_lr >= self.lr:
                raise ConfigError(f"TrainConfig.min_lr: expected below lr={self.lr} (the cosine decays from lr to "
                                  f"min_lr), found {self.min_lr}")
            if self.min_lr > self.lr:
                raise ConfigError(f"TrainConfig.min_lr: expected at most lr={self.lr}, found {self.min_lr}")
        if self.crop_samples is not None and self.crop_samples > self.max_batch_samples:
            raise ConfigError(f"TrainConfig.crop_samples: expected at most max_batch_samples={self.max_batch_samples} "
                              f"(a crop must fit in a batch), found {self.crop_samples}")

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
            raise ConfigError(f"{source}: unknown TrainConfig field(s) {unknown}; valid fields are "
                              f"{list(cls.field_names())}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return TrainConfig.from_dict({**dataclasses.asdict(self), **changes}, source="replace()")
