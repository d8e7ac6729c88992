"""Small models and datasets for the training-engine tests, and the DDP test's worker.

As a script it is one process of a 2-process Gloo run, launched the way ``torchrun`` does
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` in the
environment)::

    python tests/ddp_worker.py OUT_DIR

Each rank trains :class:`TinyConvModel` on :func:`equal_length_items` and saves its final
parameters and history to ``OUT_DIR/rank<r>.pt``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


class TinyConvModel(nn.Module):
    """A strided convolution and a linear predictor of the next frame (CPC-like, tiny).

    The loss of an utterance is the mean squared error of predicting frame ``t + 1`` from
    frame ``t`` over its valid frames; the batch loss is the mean over utterances, so a
    batch of ``2b`` equal-length utterances has the mean of the losses of its two halves.

    Args:
        dropout: dropout on the frames (uses torch's random generator).
        noisy_metrics: also report ``rand_py`` / ``rand_np`` metrics drawn from Python's and
            NumPy's generators (so that a resume that forgot one would show).
        nan_at: return a NaN loss when ``num_updates`` equals this.
        nan_grad_at: return a finite loss whose gradient for ``extra`` is NaN at this update.
        loss_scale: multiply the loss (large values give large gradients, for clipping).
    """

    def __init__(self, dropout: float = 0.0, noisy_metrics: bool = False, nan_at: int | None = None,
                 nan_grad_at: int | None = None, loss_scale: float = 1.0, channels: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, channels, kernel_size=10, stride=5)
        self.proj = nn.Linear(channels, channels)
        self.extra = nn.Parameter(torch.ones(3))
        self.drop = nn.Dropout(dropout)
        self.noisy_metrics = noisy_metrics
        self.nan_at = nan_at
        self.nan_grad_at = nan_grad_at
        self.loss_scale = loss_scale
        self.config = {"channels": channels, "kernel": 10, "stride": 5}

    def compute_loss(self, batch: dict, num_updates: int):
        x = batch["audio"].unsqueeze(1)
        h = torch.tanh(self.conv(x)).transpose(1, 2)  # (B, F, C)
        h = self.drop(h)
        frames = (batch["lengths"] - 10) // 5 + 1
        pred = self.proj(h[:, :-1])
        err = ((pred - h[:, 1:].detach()) ** 2).mean(-1)  # (B, F - 1)
        valid = (torch.arange(err.shape[1], device=err.device)[None, :] < (frames - 1)[:, None]).float()
        per_utt = (err * valid).sum(1) / valid.sum(1)
        loss = self.loss_scale * per_utt.mean() + 0.01 * (self.extra ** 2).sum()
        if self.nan_at is not None and num_updates == self.nan_at:
            loss = loss * float("nan")
        if self.nan_grad_at is not None and num_updates == self.nan_grad_at:
            loss = loss + torch.sqrt(self.extra.sum() * 0.0)  # value 0, gradient inf * 0 = nan
        metrics = {"frame_err": per_utt.mean().detach(), "num_updates_seen": float(num_updates)}
        if self.noisy_metrics:
            metrics["rand_py"] = random.random()
            metrics["rand_np"] = float(np.random.rand())
        return loss, metrics


class MemoryDataset(torch.utils.data.Dataset):
    """Waveforms held in memory, with ``sizes`` for the length-grouped sampler."""

    def __init__(self, waves: list[torch.Tensor]) -> None:
        self.waves = waves
        self.epochs: list[int] = []

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(w) for w in self.waves], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> dict:
        return {"id": f"utt{i}", "audio": self.waves[i]}


def equal_length_items(n: int = 8, length: int = 1600, seed: int = 5) -> MemoryDataset:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 16000.0
    waves = [
        (0.3 * torch.sin(2 * torch.pi * (200 + 50 * i) * t) + 0.05 * torch.randn(length, generator=g)).float()
        for i in range(n)
    ]
    return MemoryDataset(waves)


class PairedBatches:
    """The batches of two DDP ranks merged: update ``s`` gets ``all[2s] + all[2s + 1]``."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        b = self.sampler.all_batches()
        for s in range(len(b) // 2):
            yield list(b[2 * s]) + list(b[2 * s + 1])

    def __len__(self) -> int:
        return len(self.sampler.all_batches()) // 2


def ddp_config(out_dir: str, **overrides):
    from speechssl.engine import TrainConfig

    values = dict(
        model="tiny_conv", seed=3, max_steps=6, lr=3e-3, schedule="polynomial", warmup_steps=2,
        max_batch_samples=100_000, max_batch_size=2, crop_samples=None, grad_clip=1.0,
        log_every=1, ckpt_every=3, out_dir=out_dir,
    )
    values.update(overrides)
    return TrainConfig(**values)


def main(out_dir: str) -> None:
    import torch.distributed as dist

    from speechssl.engine import Trainer

    torch.manual_seed(0)
    model = TinyConvModel()
    trainer = Trainer(model, ddp_config(out_dir), equal_length_items())
    assert trainer.dist.world_size == 2 and dist.get_backend() == "gloo"
    history = trainer.fit()
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"params": params, "history": history, "sampler_len": len(trainer.sampler)},
               Path(out_dir) / f"rank{trainer.dist.rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
