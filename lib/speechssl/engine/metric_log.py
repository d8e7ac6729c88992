"""The metric log of a run: sums over the updates since the last line, one JSON line per ``log_every``
updates in ``<run folder>/metrics.jsonl``."""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .batches import METRICS_NAME, read_metrics

__all__ = ["ENGINE_KEYS", "MetricLog"]

#: Keys the engine writes in every metric record; model metrics must use other names.
ENGINE_KEYS = ("step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "utterances_per_s", "time",
               "loss_scale", "overflows")


def _number(value: Any) -> float | None:
    return value if not isinstance(value, float) or math.isfinite(value) else None


class MetricLog:
    """Accumulates one interval of updates and writes it as a record.

    ``records`` holds the run's records (those before a resume included). Only the process that
    ``writes`` appends to the file; every rank keeps the same records.
    """

    def __init__(self, folder: Path, owner: str, *, writes: bool = True) -> None:
        self.path = folder / METRICS_NAME
        self.owner, self.writes = owner, writes
        self.records: list[dict[str, Any]] = []
        self.reset()

    def reset(self) -> None:
        """Start a new interval."""
        self.updates, self.loss, self.grad_norm, self.samples, self.utterances = 0, 0.0, 0.0, 0.0, 0.0
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.start = time.perf_counter()

    def add_model_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Add one micro-batch's ``compute_loss`` metrics (numbers or one-element tensors)."""
        for key, value in metrics.items():
            if key in ENGINE_KEYS:
                raise ConfigError(f"{self.owner}.compute_loss: metric name {key!r} is reserved by the engine "
                                  f"({', '.join(ENGINE_KEYS)}); rename it")
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.detach().float().reshape(())
            elif isinstance(value, numbers.Real):
                value = float(value)
            else:
                found = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
                raise ConfigError(f"{self.owner}.compute_loss: metric {key!r} must be a number or a one-element "
                                  f"tensor, found {found}")
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def add_update(self, loss: float, grad_norm: float, samples: float, utterances: float) -> None:
        """Add one optimizer update (the loss averaged over its micro-batches and ranks)."""
        self.updates += 1
        self.loss += loss
        self.grad_norm += grad_norm
        self.samples += samples
        self.utterances += utterances

    def flush(self, **fields: Any) -> dict[str, Any] | None:
        """Write the interval as a record (with ``fields``: step, epoch, lr, time...) and start a new one."""
        if self.updates == 0:
            return None
        n, dt = self.updates, max(time.perf_counter() - self.start, 1e-9)
        record = {"step": fields.pop("step"), "epoch": fields.pop("epoch"), "loss": self.loss / n,
                  "lr": fields.pop("lr"), "grad_norm": self.grad_norm / n, "samples_per_s": self.samples / dt,
                  "utterances_per_s": self.utterances / dt, **fields}
        record.update({key: float(total) / self.counts[key] for key, total in self.sums.items()})
        record = {k: _number(v) for k, v in record.items()}
        self.records.append(record)
        if self.writes:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")
        self.reset()
        return record

    def clear(self) -> None:
        """A fresh run: no records, no file."""
        self.records = []
        if self.writes and self.path.exists():
            self.path.unlink()

    def resume_at(self, step: int) -> None:
        """Keep the records up to ``step`` (later ones will be redone), in memory and on disk."""
        self.records = []
        if self.writes:
            self.records = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
            tmp = self.path.with_name(f".{METRICS_NAME}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for r in self.records:
                    f.write(json.dumps(r, allow_nan=False) + "\n")
            os.replace(tmp, self.path)
