"""The training loop shared by every model of the book.

One loop trains wav2vec, vq-wav2vec, wav2vec 2.0, unit BERT, CTC fine-tuning and HuBERT: the models
differ only in their loss, which each computes itself through the contract::

    loss, metrics = model.compute_loss(batch, num_updates)

``batch`` is a collated batch on the training device, ``num_updates`` the number of optimizer updates
done so far (for annealing, e.g. the Gumbel temperature); ``loss`` is the scalar to minimise and
``metrics`` a dict of numbers or one-element tensors to log.

Around it, with fairseq's semantics where the papers relied on them: AdamW with a learning-rate
schedule (:mod:`speechssl.schedules`), gradient accumulation (``update_freq``), gradient-norm clipping
(the norm before clipping is logged), bf16 / fp16 autocast on CUDA (fp16 with a dynamic loss scale),
length-grouped batches under a padded-samples budget (``max_tokens``), atomic checkpoints holding
everything an **exact** resume needs (model, optimizer, schedule, loss scale, random generators, the
position in the data: on the CPU a resumed run reproduces an uninterrupted one bit for bit), a stop
with a clear error at the first non-finite loss or gradient (the last good checkpoint stays), one
metric line per ``log_every`` updates, and DistributedDataParallel under ``torchrun``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import __version__
from ..checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, LAST_NAME, CheckpointError, CheckpointManager,
                          capture_rng_state, check_run_folder, load_checkpoint, model_config_of, restore_rng_state)
from ..data.dataset import LengthGroupedSampler, collate_audio
from ..errors import ConfigError, SpeechSSLError
from ..progress import progress_disabled
from ..schedules import build_scheduler
from .batches import PaddedCollate, SkipBatches, check_batch, move_to, seed_from
from .config import BOOKKEEPING_FIELDS, TrainConfig
from .distributed import broadcast_object, init_distributed
from .metric_log import MetricLog

__all__ = ["NonFiniteError", "Trainer", "seed_everything"]

log = logging.getLogger("speechssl.engine")


class NonFiniteError(SpeechSSLError, FloatingPointError):
    """A NaN or infinite loss or gradient norm stopped the run."""


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU).

    :meth:`Trainer.fit` does it when a run starts; call it before building the model too, so that
    the initial weights are reproducible as well.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _LossModule(nn.Module):
    """Routes ``compute_loss`` through ``forward`` so that DDP's hooks see it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict, num_updates: int):  # noqa: D401
        return self.model.compute_loss(batch, num_updates)


class Trainer:
    """Trains a model that implements ``compute_loss(batch, num_updates)``.

    Args:
        model: the model; moved to the device.
        config: the run's :class:`~speechssl.engine.TrainConfig`.
        train_dataset: a map-style dataset. Unless ``batch_sampler`` is given it exposes ``sizes``
            (item lengths, for :class:`~speechssl.data.dataset.LengthGroupedSampler`); its
            ``set_epoch(epoch)`` is called every epoch when it has one.
        collate: the collate function (default ``collate_audio``, padded to ``config.pad_to_multiple``).
        batch_sampler: replaces the length-grouped sampler: ``__iter__`` (lists of indices), ``__len__``
            and optionally ``set_epoch``, deterministic given the epoch, already sharded for DDP.
        model_name: name recorded in checkpoints; defaults to ``config.model``.

    The optimizer, scheduler and loss scaler are built here, so a notebook can inspect them before
    :meth:`fit`. Under ``torchrun`` the process group is joined here.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train_dataset: Dataset,
                 collate: Callable[[list], Mapping] | None = collate_audio, *, batch_sampler: Any = None,
                 model_name: str | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config: expected a TrainConfig, found {type(config).__name__}")
        if not callable(getattr(model, "compute_loss", None)):
            raise ConfigError(f"model {type(model).__name__} has no compute_loss(batch, num_updates) method; every "
                              f"model trained by the engine implements it")
        try:
            n_items = len(train_dataset)  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError(f"train_dataset ({type(train_dataset).__name__}) has no length; the engine needs a "
                              f"map-style dataset") from None
        if n_items == 0:
            raise ConfigError("the training dataset is empty (0 utterances): check the corpus split, or the filters "
                              "that built the utterance list")
        self.config, self.model_name = config, model_name or config.model
        self.dist = init_distributed()
        self.device = self._resolve_device(config.device)
        self.model = model.to(self.device)
        self.dataset = train_dataset
        if collate is None or (collate is collate_audio and config.pad_to_multiple > 1):
            collate = PaddedCollate(config.pad_to_multiple) if config.pad_to_multiple > 1 else collate_audio
        self.collate = collate
        self.sampler = batch_sampler if batch_sampler is not None else self._build_sampler(train_dataset)

        self.amp_dtype = self._resolve_precision(config.precision)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError(f"model {type(model).__name__} has no trainable parameters")
        optim_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optim_cls(self.params, lr=config.lr, betas=config.betas, eps=config.eps,
                                   weight_decay=config.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.loss_module: nn.Module = _LossModule(self.model)
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        if self.dist.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.ddp_find_unused_parameters)
            self.loss_module = self.ddp

        self.out_dir = config.resolved_out_dir()
        if self.dist.is_main:
            check_run_folder(self.out_dir, option="TrainConfig.out_dir")
        self.checkpoints = CheckpointManager(self.out_dir, keep=config.keep_checkpoints)
        self.metric_log = MetricLog(self.out_dir, type(model).__name__, writes=self.dist.is_main)
        self.step = self.epoch = self.batch_in_epoch = self.overflows = 0
        self.elapsed = 0.0
        self.lr = float(self.scheduler.get_last_lr()[0])     # the rate of the last update
        self.last_checkpoint: Path | None = None

    @property
    def history(self) -> list[dict[str, Any]]:
        """The metric records of the run so far (see :meth:`fit`)."""
        return self.metric_log.records

    # ------------------------------------------------------------------ setup

    def _resolve_device(self, name: str) -> torch.device:
        if name != "auto" and name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"TrainConfig.device: expected an available device, found {name!r} without CUDA")
        if name == "auto" and not torch.cuda.is_available():
            return torch.device("cpu")
        device = torch.device("cuda" if name == "auto" else name)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", self.dist.local_rank if self.dist.distributed else torch.cuda.current_device())
        return device

    def _resolve_precision(self, precision: str) -> torch.dtype | None:
        if precision == "fp32" or (precision == "auto" and self.device.type != "cuda"):
            return None
        if precision == "auto":   # bf16 from compute capability 8 (A100, H100); fp16 before it (T4, V100)
            precision = "bf16" if torch.cuda.get_device_capability(self.device)[0] >= 8 else "fp16"
        if self.device.type != "cuda":
            warnings.warn(f"precision={precision!r} applies on CUDA only; training on {self.device} runs in fp32",
                          stacklevel=3)
            return None
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"TrainConfig.precision: expected a precision this GPU supports, found 'bf16' on "
                              f"{torch.cuda.get_device_name(self.device)} (no bfloat16); use 'fp16'")
        return torch.bfloat16 if precision == "bf16" else torch.float16

    def _build_sampler(self, dataset: Dataset) -> LengthGroupedSampler:
        sizes = getattr(dataset, "sizes", None)
        if sizes is None:
            raise ConfigError(f"train_dataset ({type(dataset).__name__}) has no `sizes` (item lengths in samples) "
                              f"for length-grouped batching; give it one, or pass batch_sampler=")
        cfg = self.config
        return LengthGroupedSampler(np.asarray(sizes), cfg.max_batch_samples, max_batch_size=cfg.max_batch_size,
                                    pad_to_multiple=cfg.pad_to_multiple, shuffle=True, seed=cfg.seed,
                                    num_replicas=self.dist.world_size, rank=self.dist.rank)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of the current state (see :mod:`speechssl.checkpoint`)."""
        rng = capture_rng_state(self.device)
        rng_per_rank = None
        if self.dist.distributed:
            rng_per_rank = [None] * self.dist.world_size
            dist.all_gather_object(rng_per_rank, rng)
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_name": self.model_name,
            "model_config": model_config_of(self.model), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng, "rng_per_rank": rng_per_rank,
            "data": {"epoch": self.epoch, "batch": self.batch_in_epoch}, "step": self.step, "elapsed": self.elapsed,
            "overflows": self.overflows, "config": self.config.to_dict(), "world_size": self.dist.world_size,
            "speechssl_version": __version__, "torch_version": str(torch.__version__),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, source: str = "checkpoint") -> None:
        """Restore a state from :meth:`state_dict`."""
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{source}: the model weights do not fit model {self.model_name!r} "
                                  f"({type(self.model).__name__}): {e}") from e
        saved = state.get("config") or {}
        diffs = {k: (saved[k], v) for k, v in self.config.to_dict().items()
                 if k in saved and saved[k] != v and k not in BOOKKEEPING_FIELDS}
        if diffs:
            text = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diffs.items()))
            warnings.warn(f"resuming from {source} with a changed configuration ({text}); the run will not match "
                          f"an uninterrupted one", stacklevel=3)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.elapsed, self.overflows = int(state["step"]), float(state.get("elapsed", 0.0)), \
            int(state.get("overflows", 0))
        self.epoch, self.batch_in_epoch = int(state["data"]["epoch"]), int(state["data"]["batch"])
        if not self.dist.distributed:
            restore_rng_state(state["rng"], self.device)
        elif state.get("rng_per_rank") is not None and len(state["rng_per_rank"]) == self.dist.world_size:
            restore_rng_state(state["rng_per_rank"][self.dist.rank], self.device)
        else:
            warnings.warn(f"{source} was saved by {state.get('world_size', 1)} process(es), this run has "
                          f"{self.dist.world_size}: random generators are re-seeded, the run will not match an "
                          f"uninterrupted one", stacklevel=3)
            seed_everything(seed_from(self.config.seed, self.step, self.dist.rank))

    def save_checkpoint(self) -> Path | None:
        """Save the current state into the run folder (every rank calls it under DDP; rank 0 writes)."""
        state = self.state_dict()
        if not self.dist.is_main:
            return None
        try:
            path = self.checkpoints.save(state, self.step)
        except CheckpointError as e:
            raise CheckpointError(f"step {self.step}: {e}; {self._last_good()} and intact. Free some space (or "
                                  f"choose another --out) and resume") from None
        self.last_checkpoint = self.checkpoints.last_path if self.checkpoints.keep else path
        log.info("step %d: saved %s", self.step, path)
        return path

    def _start(self, resume: bool | str | os.PathLike, overwrite: bool) -> tuple[str | None, str | None]:
        """On rank 0: ``(error message or None, checkpoint to resume from or None)``; a fresh start
        empties the run folder."""
        latest = self.checkpoints.latest()
        if resume not in (False, None):
            if isinstance(resume, (str, os.PathLike)) and str(resume) != "auto":
                return None, str(resume)
            if latest is not None:
                return None, str(latest)
            if resume is True:
                return (f"resume requested but {self.out_dir} holds no checkpoint (expected {LAST_NAME}); start "
                        f"without resume, or use resume='auto' to resume only when there is one"), None
        elif latest is not None and not overwrite:
            return (f"{self.out_dir} already holds a run of {self.model_name!r} ({latest.name}); pass resume=True "
                    f"(--resume) to continue it, or overwrite=True (--overwrite) to delete its checkpoints and "
                    f"metrics and start over"), None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints.remove_all()
        return None, None

    def _last_good(self) -> str:
        latest = self.checkpoints.latest()
        return "no checkpoint was saved before it" if latest is None else f"the last good checkpoint is {latest}"

    # ------------------------------------------------------------------ data

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[int, int, Any]]:
        """``(epoch, index in epoch, batch)`` from position ``(epoch, start)`` on, forever."""
        while True:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
            n = len(self.sampler)
            if n == 0:
                raise ConfigError(f"epoch {epoch} has no batches for rank {self.dist.rank} of {self.dist.world_size}: "
                                  f"{len(self.dataset)} utterances; max_batch_samples={self.config.max_batch_samples}")
            if start < n:
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(epoch)
                generator = torch.Generator().manual_seed(seed_from(self.config.seed, epoch, self.dist.rank))
                loader = DataLoader(self.dataset, batch_sampler=SkipBatches(self.sampler, start),
                                    collate_fn=self.collate, num_workers=self.config.num_workers,
                                    pin_memory=self.device.type == "cuda", generator=generator)
                for index, batch in enumerate(loader, start):
                    yield epoch, index, batch
            epoch, start = epoch + 1, 0

    # ------------------------------------------------------------------ one update

    def _loss(self, batch: dict) -> tuple[torch.Tensor, Mapping[str, Any]]:
        """The model's ``(loss, metrics)`` for one micro-batch, checked against the contract."""
        name = type(self.model).__name__
        with torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext():
            out = self.loss_module(batch, self.step)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ConfigError(f"{name}.compute_loss must return (loss, metrics), found {type(out).__name__}")
        loss, metrics = out
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            found = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ConfigError(f"{name}.compute_loss: expected a scalar loss tensor, found {found}")
        if not loss.requires_grad:
            raise ConfigError(f"{name}.compute_loss returned a loss that does not require grad (detached, or "
                              f"computed under torch.no_grad?)")
        if not isinstance(metrics or {}, Mapping):
            raise ConfigError(f"{name}.compute_loss: expected a dict of metrics, found {type(metrics).__name__}")
        return loss.reshape(()), metrics or {}

    def _update(self, stream: Iterator) -> bool:
        """One optimizer update over ``accum_steps`` micro-batches; ``False`` when an fp16 overflow
        skipped it."""
        cfg, accum = self.config, self.config.accum_steps
        losses, samples, utterances = [], 0, 0
        for micro in range(accum):
            epoch, index, batch = next(stream)
            self.epoch, self.batch_in_epoch = epoch, index + 1
            batch, n_utts, n_samples = check_batch(batch, f"step {self.step + 1}, batch {index} of epoch {epoch}")
            batch = move_to(batch, self.device, non_blocking=self.device.type == "cuda")
            last = micro == accum - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                loss, metrics = self._loss(batch)
                self.scaler.scale(loss.float() / accum).backward()
            losses.append(loss.detach().float())
            self.metric_log.add_model_metrics(metrics)
            samples, utterances = samples + n_samples, utterances + n_utts
        micro_losses = torch.stack(losses)
        stats = torch.stack([micro_losses.sum(), (~torch.isfinite(micro_losses)).sum().float(),
                             torch.tensor(float(samples), device=micro_losses.device),
                             torch.tensor(float(utterances), device=micro_losses.device)]).double()
        if self.dist.distributed:
            dist.all_reduce(stats)
        loss_sum, n_bad, samples_all, utts_all = stats.tolist()
        step = self.step + 1
        where = f"step {step} (num_updates={self.step}, epoch {self.epoch})"
        if n_bad:
            values = ", ".join(f"{v:g}" for v in micro_losses.tolist())
            ranks = f" ({int(n_bad)} micro-batch(es) over all ranks)" if self.dist.distributed else ""
            raise NonFiniteError(f"{where}: the loss is not finite{ranks}; micro-batch losses on rank "
                                 f"{self.dist.rank}: [{values}]. Training stopped; {self._last_good()}")
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g.detach(), 2.0, dtype=torch.float32) for g in grads]))) if grads else 0.0
        if not math.isfinite(norm) and not self.scaler.is_enabled():
            bad = [f"{n} ({'nan' if bool(torch.isnan(p.grad).any()) else 'inf'})"
                   for n, p in self.model.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
            shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            raise NonFiniteError(f"{where}: the gradient norm is {norm} (loss {loss_sum / (accum * self.dist.world_size):g}); "
                                 f"non-finite gradients in {len(bad)} parameter(s): {shown}. Training stopped; "
                                 f"{self._last_good()}")
        coef = cfg.grad_clip / (norm + 1e-6) if cfg.grad_clip is not None and math.isfinite(norm) else 1.0
        if coef < 1.0:                                        # the rule of torch.nn.utils.clip_grad_norm_
            for g in grads:
                g.detach().mul_(coef)
        self.lr = self.scheduler.get_last_lr()[0]
        if self.scaler.is_enabled():
            scale_before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if not math.isfinite(norm):
                self.overflows += 1
                self.optimizer.zero_grad(set_to_none=True)
                scale = self.scaler.get_scale()
                log.info("step %d: fp16 gradient overflow, loss scale %g -> %g, update skipped", step, scale_before, scale)
                if scale < cfg.min_loss_scale:
                    raise NonFiniteError(f"step {step}: the fp16 loss scale fell to {scale:g}, below min_loss_scale="
                                         f"{cfg.min_loss_scale:g}, after gradient overflows: the loss keeps overflowing "
                                         f"in fp16 (try precision='bf16' or a lower lr). {self._last_good()}")
                return False
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = step
        self.metric_log.add_update(loss_sum / (accum * self.dist.world_size), norm, samples_all, utts_all)
        return True

    # ------------------------------------------------------------------ the loop

    def fit(self, resume: bool | str | os.PathLike = False, *, stop_at: int | None = None,
            overwrite: bool = False) -> list[dict[str, Any]]:
        """Train up to ``config.max_steps`` updates (or ``stop_at``) and return the metric records.

        Args:
            resume: ``False``: a new run (an ``out_dir`` that holds a run is an error unless
                ``overwrite``); ``True``: continue from ``<out_dir>/checkpoint_last.pt``; ``"auto"``:
                continue when there is a checkpoint, else start; a path: continue from that checkpoint.
            stop_at: stop (and save a checkpoint) after this many updates without changing the schedule,
                which still spans ``max_steps``: a long run can be trained in chunks.
            overwrite: on a fresh start, delete the checkpoints and metrics already in ``out_dir``.

        Returns the records of the run (those before a resume included): ``step``, ``epoch``, ``loss``,
        ``lr``, ``grad_norm``, ``samples_per_s``, ``utterances_per_s``, ``time`` and the model's metrics,
        averaged over the updates since the previous record.

        Raises:
            NonFiniteError: a non-finite loss or gradient (the last good checkpoint stays).
            CheckpointError: a resume from a missing, corrupt or other model's checkpoint.
            ConfigError: an empty dataset or batch, a run folder that already holds a run.
        """
        cfg = self.config
        if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, int) or stop_at < 1):
            raise ConfigError(f"stop_at: expected an integer >= 1 or None, found {stop_at!r}")
        error, resume_path = broadcast_object(self._start(resume, overwrite) if self.dist.is_main else None, self.dist)
        if error is not None:
            raise ConfigError(error)
        if resume_path is not None:
            state = load_checkpoint(resume_path, model_name=self.model_name,
                                    model_config=model_config_of(self.model, primitive=False))
            self.load_state_dict(state, source=str(resume_path))
            if self.dist.is_main:
                self.checkpoints.remove_stale_temp_files()
            self.metric_log.resume_at(self.step)
            log.info("resumed %s from %s at step %d", self.model_name, resume_path, self.step)
        else:
            self.step = self.epoch = self.batch_in_epoch = self.overflows = 0
            self.elapsed = 0.0
            self.metric_log.clear()
            seed_everything(seed_from(cfg.seed, self.dist.rank) if self.dist.distributed else cfg.seed)
        target = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
        if self.step >= target:
            log.info("%s is at step %d, nothing to train (target %d)", self.model_name, self.step, target)
            return self.history

        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=self.step, desc=self.model_name, unit="update", dynamic_ncols=True,
                   disable=progress_disabled() or not self.dist.is_main)
        self.model.train()
        stream = self._batches(self.epoch, self.batch_in_epoch)
        self.metric_log.reset()
        try:
            while self.step < target:
                t0 = time.perf_counter()
                updated = self._update(stream)
                self.elapsed += time.perf_counter() - t0
                if not updated:
                    continue
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == target:
                    extra = {"loss_scale": float(self.scaler.get_scale()), "overflows": self.overflows} \
                        if self.scaler.is_enabled() else {}
                    record = self.metric_log.flush(step=self.step, epoch=self.epoch, lr=self.lr, time=self.elapsed, **extra)
                    bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.3g}", refresh=False)
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or self.step == target:
                    self.save_checkpoint()
        finally:
            stream.close()
            bar.close()
        return self.history
