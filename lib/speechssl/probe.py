"""Linear phone probes: how linearly readable are phones from frozen frame features?

A probe is a multinomial logistic regression ``p(y | x) = softmax(W x + b)`` trained on frozen
features ``x`` of labelled frames and scored by frame accuracy on held-out frames. It measures
what a representation makes *linearly* available, not what a deep acoustic model could extract
from it, which is how the chapters compare wav2vec context vectors with MFCCs on the same
frames (the wav2vec paper itself evaluates with a full acoustic model, Sec. 4).

Procedure (:func:`train_linear_probe`):

1. standardise every feature dimension with the mean and standard deviation of the *training*
   frames (the same statistics are applied to the evaluation frames);
2. minimise the mean cross-entropy with AdamW (decoupled weight decay, Loshchilov & Hutter
   2019) over mini-batches of frames shuffled every epoch, with a cosine learning-rate decay;
3. predict the argmax class.

Everything random (initialisation, shuffling) comes from one generator seeded with ``seed``,
so the same inputs give the same probe and accuracy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = ["LinearProbe", "ProbeResult", "collect_frames", "fit_linear_probe", "frame_pairs", "phone_probe",
           "train_linear_probe"]


def _as_tensor(x, dtype: torch.dtype, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if t.is_floating_point() != dtype.is_floating_point:
        if dtype.is_floating_point:
            return t.to(dtype)
        raise ValueError(f"{name} must hold integer class ids, got {t.dtype}")
    return t.to(dtype)


def frame_pairs(features: torch.Tensor, feature_lengths: torch.Tensor, labels: torch.Tensor,
                ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten a padded batch of frame features and frame labels into aligned ``(N, C)``, ``(N,)``.

    Frame ``i`` of the features is paired with frame ``i`` of the labels, for ``i`` below both
    the feature length and the label length of each utterance; padding (``ignore_index``) is
    dropped. On the 100 Hz grid wav2vec frame ``i`` covers samples ``160 i .. 160 i + 464`` and
    MFCC frame ``i`` samples ``160 i .. 160 i + 399``: their centres are 2 ms apart.

    Args:
        features: ``(B, T, C)``; feature_lengths: ``(B,)``; labels: ``(B, F)`` padded with ``ignore_index``.
    """
    if features.dim() != 3 or labels.dim() != 2 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"expected features (B, T, C) and labels (B, F), got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    tsz = min(features.shape[1], labels.shape[1])
    feats = features[:, :tsz]
    labs = labels[:, :tsz].to(features.device)
    valid = (torch.arange(tsz, device=features.device)[None, :] < feature_lengths.to(features.device)[:, None])
    valid &= labs != ignore_index
    return feats[valid], labs[valid].long()


def collect_frames(featurize: Callable[[torch.Tensor], Any], utterances: Sequence, root: str | os.PathLike,
                   labels: Mapping[str, np.ndarray], *, max_utterances: int | None = None):
    """Frame features of whole utterances paired with their frame labels: ``((N, C), (N,))``.

    ``featurize`` maps one ``(T,)`` waveform to ``(F, ...)`` per-frame values on the labels' grid (MFCC,
    a model's frames, unit codes), or to a dict of such tensors (then a dict of ``(N, ...)`` tensors is
    returned with the labels). Frame ``i`` is paired with label ``i`` for ``i`` below both lengths;
    wav2vec's 465-sample frames give one frame fewer than the 400-sample label grid on some lengths, and
    more than 2 frames of difference is an error (a wrong frame rate). Values keep their dtype (float
    features, integer codes). Audio goes through :func:`speechssl.data.audio.load_audio`, so bad files
    fail with their name.
    """
    from .data.audio import load_audio

    parts: dict[str, list[torch.Tensor]] = {}
    labs = []
    for u in list(utterances)[:max_utterances]:
        if u.id not in labels:
            raise ValueError(f"no frame labels for utterance {u.id!r}")
        with torch.no_grad():
            out = featurize(load_audio(Path(root) / u.path))
        out = out if isinstance(out, Mapping) else {"": out}
        lab = torch.as_tensor(np.asarray(labels[u.id]), dtype=torch.int64)
        n = lab.numel()
        for key, f in out.items():
            if f.dim() < 1 or abs(f.shape[0] - lab.numel()) > 2:
                raise ValueError(f"{u.path}: featurize gave {tuple(f.shape)} for {lab.numel()} labelled frames; "
                                 f"expected (about {lab.numel()}, ...): are features and labels on the same frame grid?")
            n = min(n, f.shape[0])
        for key, f in out.items():
            parts.setdefault(key, []).append(f[:n].detach().cpu())
        labs.append(lab[:n])
    if not labs:
        raise ValueError("collect_frames: no utterances")
    feats = {k: torch.cat(v) for k, v in parts.items()}
    return (feats[""] if list(feats) == [""] else feats), torch.cat(labs)


@dataclass
class LinearProbe:
    """A trained probe: ``predict(x) = argmax(W ((x - mean) / std) + b)``."""

    weight: torch.Tensor  # (K, D)
    bias: torch.Tensor    # (K,)
    mean: torch.Tensor    # (D,)
    std: torch.Tensor     # (D,)
    train_accuracy: float

    def logits(self, feats) -> torch.Tensor:
        x = _as_tensor(feats, torch.float32, "feats").to(self.weight.device)
        return ((x - self.mean) / self.std) @ self.weight.t() + self.bias

    def predict(self, feats) -> torch.Tensor:
        """``(N, D)`` features -> ``(N,)`` predicted class ids."""
        return self.logits(feats).argmax(-1)

    def accuracy(self, feats, labels) -> float:
        """Share of frames whose predicted class equals the label."""
        y = _as_tensor(labels, torch.int64, "labels").to(self.weight.device)
        if y.numel() == 0:
            raise ValueError("no frames to score")
        return float((self.predict(feats) == y).float().mean())


def train_linear_probe(train_feats, train_labels, num_classes: int, *, epochs: int = 30, lr: float = 1e-2,
                       weight_decay: float = 1e-4, batch_size: int = 4096, seed: int = 0,
                       device: str | torch.device | None = None) -> LinearProbe:
    """Fit a softmax classifier on frozen features (see the module docstring).

    Args:
        train_feats: ``(N, D)`` float features; train_labels: ``(N,)`` ids in ``[0, num_classes)``.
        epochs: passes over the training frames.
        lr: peak AdamW learning rate (cosine decay to 0 over all steps).
        weight_decay: AdamW weight decay on ``W``.
        batch_size: frames per step (use ``N`` for full-batch training).
        seed: seeds initialisation and shuffling.
        device: where to train (default: the features' device).

    Raises:
        ConfigError: invalid sizes or hyper-parameters; ValueError: mismatched inputs or labels
            outside ``[0, num_classes)``.
    """
    for name, v in (("num_classes", num_classes), ("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"train_linear_probe.{name}: expected an integer >= 1, found {v!r}")
    if lr <= 0 or weight_decay < 0:
        raise ConfigError(f"train_linear_probe: expected lr > 0 and weight_decay >= 0, found lr={lr!r}, "
                          f"weight_decay={weight_decay!r}")
    x = _as_tensor(train_feats, torch.float32, "train_feats")
    y = _as_tensor(train_labels, torch.int64, "train_labels")
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"expected train_feats (N, D) and train_labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no training frames")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"train_labels must lie in [0, {num_classes}), found [{int(y.min())}, {int(y.max())}]")
    dev = torch.device(device) if device is not None else x.device
    x, y = x.to(dev), y.to(dev)
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-6)
    xs = (x - mean) / std                                                  # (N, D)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    n, d = xs.shape
    weight = (torch.randn(num_classes, d, generator=gen) * 0.01).to(dev).requires_grad_(True)
    bias = torch.zeros(num_classes, device=dev, requires_grad=True)
    opt = torch.optim.AdamW([{"params": [weight], "weight_decay": weight_decay},
                             {"params": [bias], "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(dev)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(xs[idx] @ weight.t() + bias, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    weight, bias = weight.detach(), bias.detach()
    train_acc = float(((xs @ weight.t() + bias).argmax(-1) == y).float().mean())
    return LinearProbe(weight=weight, bias=bias, mean=mean, std=std, train_accuracy=train_acc)


def fit_linear_probe(train_feats, train_labels, eval_feats, eval_labels, num_classes: int, epochs: int = 30,
                     lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0, *, batch_size: int = 4096,
                     device: str | torch.device | None = None) -> float:
    """Frame accuracy on ``(eval_feats, eval_labels)`` of a probe trained on the training frames.

    Shapes: ``train_feats`` ``(N, D)``, ``train_labels`` ``(N,)``, ``eval_feats`` ``(M, D)``,
    ``eval_labels`` ``(M,)``. Deterministic given ``seed``. See :func:`train_linear_probe`.
    """
    probe = train_linear_probe(train_feats, train_labels, num_classes, epochs=epochs, lr=lr,
                               weight_decay=weight_decay, batch_size=batch_size, seed=seed, device=device)
    ex = _as_tensor(eval_feats, torch.float32, "eval_feats")
    ey = _as_tensor(eval_labels, torch.int64, "eval_labels")
    if ex.dim() != 2 or ey.shape != (ex.shape[0],) or ex.shape[1] != probe.weight.shape[1]:
        raise ValueError(f"expected eval_feats (M, {probe.weight.shape[1]}) and eval_labels (M,), got "
                         f"{tuple(ex.shape)} and {tuple(ey.shape)}")
    return probe.accuracy(ex, ey)


@dataclass
class ProbeResult:
    """A linear phone probe on one representation: its size, the frames used and the accuracies."""

    dims: int
    accuracy: float
    train_frames: int
    eval_frames: int
    majority: float      # accuracy of always answering the most frequent training phone


def phone_probe(featurize: Callable[[torch.Tensor], torch.Tensor], train: Sequence, evaluate: Sequence,
                root: str | os.PathLike, train_labels: Mapping[str, np.ndarray], eval_labels: Mapping[str, np.ndarray],
                num_classes: int, *, seed: int = 0, **kwargs: Any) -> ProbeResult:
    """Frame accuracy on the ``evaluate`` utterances of a linear probe trained on the ``train`` utterances'
    frames of ``featurize`` (see :func:`collect_frames` and :func:`train_linear_probe`)."""
    x_tr, y_tr = collect_frames(featurize, train, root, train_labels)
    x_ev, y_ev = collect_frames(featurize, evaluate, root, eval_labels)
    acc = fit_linear_probe(x_tr, y_tr, x_ev, y_ev, num_classes, seed=seed, **kwargs)
    majority = float((y_ev == torch.bincount(y_tr, minlength=num_classes).argmax()).float().mean())
    return ProbeResult(int(x_tr.shape[1]), acc, len(y_tr), len(y_ev), majority)
