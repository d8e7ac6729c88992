"""k-means with k-means++ initialisation, mini-batch or full-batch, in PyTorch (CPU or GPU).

HuBERT's teachers are k-means clusterings of MFCC frames (iteration 1) or of a previous
model's hidden states (later iterations). fairseq learns them with scikit-learn's
``MiniBatchKMeans`` (``examples/hubert/simple_kmeans/learn_kmeans.py``: ``init="k-means++"``,
``batch_size=10000``, ``max_iter=100``, ``n_init=20``, ``max_no_improvement=100``,
``reassignment_ratio=0.0``). This module implements the same algorithm with tensors so that
it runs on a GPU when one is present, with the same defaults; ``bench/bench_kmeans.py``
compares it with scikit-learn on the same frames. ``algorithm="lloyd"`` replaces step 2 by
full passes over every point (Lloyd's algorithm, scikit-learn ``KMeans``'s stopping rule): on
the tiny corpus's frames it fits with a lower inertia in a fraction of the time
(``bench/RESULTS.md``), since a pass is one matrix product per chunk of points.

Algorithm:

1. **k-means++ seeding** (Arthur & Vassilvitskii 2007), greedy variant: each new centre is the
   best of ``2 + log(K)`` candidates drawn with probability proportional to the squared
   distance to the nearest chosen centre. Seeding runs on a random subset of
   ``init_size`` points (default ``3 * batch_size``); ``n_init`` seedings, each on its own subset,
   run side by side as one batch, and the one with the lowest inertia on its subset is kept.
2. **Mini-batch updates** (Sculley 2010): for each mini-batch, assign points to their nearest
   centre, then move every centre towards the mean of its points with a per-centre learning
   rate ``n_batch / n_seen``, so each centre is the running mean of all points it was given.
3. **Stopping**: after ``max_iter`` passes over the data, or when the exponentially smoothed
   mini-batch inertia has not improved for ``max_no_improvement`` consecutive batches.

With ``algorithm="lloyd"``, step 2 assigns every point to its nearest centre and moves each centre
to the mean of its points, and step 3 stops when no assignment changes or when the centres move by
less than ``tol`` times the data's mean variance (summed squared moves; scikit-learn ``KMeans``),
or after ``max_iter`` passes. A centre left without points stays where it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import ConfigError
from .progress import progress_disabled


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def squared_distances(x: torch.Tensor, centers: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
    """``||x_i - c_k||^2`` for ``x (N, D)`` and ``centers (K, D)`` -> ``(N, K)``.

    Uses the expansion ``|x|^2 - 2 x.c + |c|^2`` (one matrix product) and clamps the small
    negative values it can produce to 0.
    """
    if x_sq is None:
        x_sq = (x * x).sum(1)
    c_sq = (centers * centers).sum(1)
    d = torch.addmm(c_sq.unsqueeze(0), x, centers.t(), alpha=-2.0)
    return (d + x_sq.unsqueeze(1)).clamp_min_(0)


def _distances_t(centers: torch.Tensor, x_t: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
    """Squared distances for a batch of ``R`` point sets, points last: ``centers (R, K, D)``,
    ``x_t (R, D, N)`` and ``x_sq = |x|^2 (R, N)`` -> ``(R, K, N)``. With the points along the last axis
    the matrix product, the minimum and the sums over points all run on contiguous memory."""
    d = torch.bmm(centers, x_t).mul_(-2.0)
    return d.add_((centers * centers).sum(2).unsqueeze(2)).add_(x_sq.unsqueeze(1)).clamp_min_(0)


#: ``KMeans(algorithm=...)``: Sculley's mini-batch updates, or Lloyd's full passes.
ALGORITHMS = ("minibatch", "lloyd")

#: Lloyd as ``python -m speechssl.hubert --kmeans lloyd`` fits it (and ``bench/bench_kmeans.py`` measures it):
#: one k-means++ seeding, then at most 25 passes (faiss's default), stopping early at scikit-learn ``KMeans``'s
#: ``tol``.
LLOYD_OPTIONS = {"algorithm": "lloyd", "n_init": 1, "max_iter": 25, "tol": 1e-4}


@dataclass
class KMeansResult:
    n_steps: int
    n_epochs: float
    converged: bool


class KMeans:
    """Mini-batch k-means (scikit-learn ``MiniBatchKMeans`` semantics, fairseq defaults), or full-batch
    k-means (Lloyd) after the same seeding.

    Args:
        n_clusters: K, the number of units (HuBERT: 100 for MFCC, 500 for later iterations).
        batch_size: points per mini-batch (fairseq ``batch_size=10000``).
        max_iter: maximum passes over the data (fairseq ``max_iter=100``).
        n_init: number of k-means++ seedings tried (fairseq ``n_init=20``).
        init_size: points used for seeding (default ``3 * batch_size``, as scikit-learn).
        max_no_improvement: stop after this many mini-batches without a lower smoothed inertia.
        tol: mini-batch: stop when the mean squared centre move per mini-batch, relative to the data
            variance, falls below ``tol`` (0 disables, as fairseq); Lloyd: stop when the summed squared
            centre move of a pass falls below ``tol`` times the data's mean variance (scikit-learn
            ``KMeans``, whose default is 1e-4; 0: only when no assignment changes).
        seed: seeds every random choice; the same seed and data give the same centres.
        device: ``"auto"`` (CUDA if present), ``"cpu"`` or ``"cuda"``.
        algorithm: ``"minibatch"`` (Sculley's updates, fairseq's and the HuBERT paper's) or ``"lloyd"``
            (full passes over every point); ``batch_size`` is then the chunk of points per matrix product,
            and ``max_no_improvement`` is unused.
    """

    def __init__(self, n_clusters: int, *, batch_size: int = 10_000, max_iter: int = 100, n_init: int = 20,
                 init_size: int | None = None, max_no_improvement: int | None = 100, tol: float = 0.0,
                 seed: int = 0, device: str | torch.device | None = "auto", progress: bool = True,
                 algorithm: str = "minibatch"):
        if n_clusters < 1:
            raise ConfigError(f"n_clusters must be >= 1, got {n_clusters}")
        if batch_size < 1 or max_iter < 1 or n_init < 1:
            raise ConfigError(f"batch_size, max_iter and n_init must be >= 1; got {batch_size}, {max_iter}, {n_init}")
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm: expected one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        self.algorithm = algorithm
        self.n_clusters = n_clusters
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_size = init_size
        self.max_no_improvement = max_no_improvement
        self.tol = tol
        self.seed = seed
        self.device = pick_device(device)
        self.progress = progress
        self.cluster_centers_: torch.Tensor | None = None
        self.result_: KMeansResult | None = None

    # -- seeding ---------------------------------------------------------------------------
    def _kmeanspp(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Greedy k-means++ on ``x (R, n, D)``, ``R`` independent seedings at once -> ``(R, K, D)`` centres.

        The seedings are batched so that one Python step places the i-th centre of every seeding:
        the loop runs ``K`` times, not ``R * K`` times (scikit-learn's ``_kmeans_plusplus`` runs one
        seeding at a time).
        """
        r, n, _ = x.shape
        k = self.n_clusters
        n_trials = 2 + int(math.log(k))          # scikit-learn's n_local_trials
        rows = torch.arange(r, device=x.device)
        x_t = x.transpose(1, 2).contiguous()                              # (R, D, n): points along the last axis
        x_sq = (x * x).sum(2)                                             # (R, n)
        first = torch.randint(n, (r,), generator=gen).to(x.device)
        centers = torch.empty(r, k, x.shape[2], dtype=x.dtype, device=x.device)
        centers[:, 0] = x[rows, first]
        closest = _distances_t(centers[:, :1], x_t, x_sq)[:, 0]            # (R, n)
        for i in range(1, k):
            # Candidates drawn with probability proportional to the squared distance (D^2 sampling);
            # a seeding whose points are all chosen already (fewer distinct points than K) draws uniformly.
            # (torch.multinomial accumulates float32 weights in float64 on the CPU.)
            weights = closest.cpu()
            spent = weights.sum(1) <= 0
            if bool(spent.any()):
                weights = weights.masked_fill(spent.unsqueeze(1), 1.0)
            cand = torch.multinomial(weights, n_trials, replacement=True, generator=gen).to(x.device)  # (R, t)
            cand_x = x[rows.unsqueeze(1), cand]                                                        # (R, t, D)
            new_closest = torch.minimum(_distances_t(cand_x, x_t, x_sq), closest.unsqueeze(1))        # (R, t, n)
            # Greedy choice: the candidate that lowers the potential (the sum of squared distances) most.
            best = new_closest.sum(2).argmin(1)                                                        # (R,)
            closest = new_closest[rows, best]
            centers[:, i] = cand_x[rows, best]
        return centers

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, x: torch.Tensor | np.ndarray) -> "KMeans":
        """Learn ``n_clusters`` centres from ``x (N, D)``."""
        x = torch.as_tensor(x, dtype=torch.float32).to(self.device)
        if x.dim() != 2:
            raise ValueError(f"expected features of shape (N, D), got {tuple(x.shape)}")
        n = x.shape[0]
        if n < self.n_clusters:
            raise ValueError(f"k-means needs at least n_clusters={self.n_clusters} points, got {n}")
        if not torch.isfinite(x).all():
            raise ValueError("features contain NaN or Inf")
        gen = torch.Generator().manual_seed(self.seed)
        batch = min(self.batch_size, n)

        # 1. Seeding: n_init k-means++ runs, each on its own random subset; keep the best on its subset.
        init_size = self.init_size or 3 * batch
        init_size = min(n, max(init_size, self.n_clusters))
        idx = torch.stack([torch.randperm(n, generator=gen)[:init_size] for _ in range(self.n_init)]).to(self.device)
        subsets = x[idx]                                                  # (n_init, init_size, D)
        seeds = self._kmeanspp(subsets, gen)
        inertias = torch.stack([_distances_t(c.unsqueeze(0), sub.t().unsqueeze(0), (sub * sub).sum(1, keepdim=True).t())
                                .min(1).values.sum(dtype=torch.float64) for c, sub in zip(seeds, subsets)])
        centers = seeds[int(inertias.argmin())].clone()
        del subsets, seeds
        if self.algorithm == "lloyd":
            return self._lloyd(x, centers)

        # 2. Mini-batch updates with per-centre counts.
        k = self.n_clusters
        counts = torch.zeros(k, dtype=torch.float64, device=self.device)
        steps_per_epoch = max(1, n // batch)
        total_steps = self.max_iter * steps_per_epoch
        variance = float(x.var(0).mean()) if n > 1 else 1.0
        ewa, best_ewa, no_improve = None, math.inf, 0
        alpha = min(1.0, 2.0 * batch / (n + 1))  # scikit-learn's smoothing factor
        converged = False
        step = 0
        bar = tqdm(total=total_steps, desc=f"k-means K={k}", leave=False,
                   disable=not self.progress or progress_disabled())
        while step < total_steps and not converged:
            order = torch.randperm(n, generator=gen).to(self.device)
            for s in range(steps_per_epoch):
                xb = x[order[s * batch:(s + 1) * batch]]
                # Nearest centre: |x|^2 is the same for every centre, so argmin(|c|^2 - 2 x.c) suffices;
                # |x|^2 is added back only to the B minima for the inertia.
                part = torch.addmm((centers * centers).sum(1).unsqueeze(0), xb, centers.t(), alpha=-2.0)
                mins, assign = part.min(1)
                batch_inertia = float((mins + (xb * xb).sum(1)).clamp_min_(0).sum()) / xb.shape[0]
                # Sculley's update: centre = running mean of every point assigned to it, i.e.
                # c += (sum of its new points - n_b c) / (points seen so far), for every centre at once.
                n_b = torch.bincount(assign, minlength=k).to(counts.dtype)
                sums = torch.zeros_like(centers).index_add_(0, assign, xb)
                counts += n_b
                delta = (sums - n_b.to(centers.dtype).unsqueeze(1) * centers) / counts.clamp_min(1).to(centers.dtype).unsqueeze(1)
                centers += delta
                step += 1
                bar.update(1)
                # 3. Early stopping on the smoothed inertia and (optionally) on the centre moves.
                ewa = batch_inertia if ewa is None else ewa * (1 - alpha) + batch_inertia * alpha
                if ewa < best_ewa:
                    best_ewa, no_improve = ewa, 0
                else:
                    no_improve += 1
                if self.tol > 0 and float((delta * delta).sum()) / k / variance < self.tol:
                    converged = True
                if self.max_no_improvement is not None and no_improve >= self.max_no_improvement:
                    converged = True
                if converged or step >= total_steps:
                    break
        bar.close()
        self.cluster_centers_ = centers
        self.result_ = KMeansResult(n_steps=step, n_epochs=step / steps_per_epoch, converged=converged)
        return self

    def _lloyd(self, x: torch.Tensor, centers: torch.Tensor) -> "KMeans":
        """Steps 2 and 3 of ``algorithm="lloyd"``: full passes from the seeded ``centers``."""
        n, k = x.shape[0], self.n_clusters
        chunk = min(self.batch_size, n)
        threshold = self.tol * float(x.var(0).mean()) if n > 1 else 0.0
        assign = torch.full((n,), -1, dtype=torch.long, device=x.device)
        converged, passes = False, 0
        for passes in tqdm(range(1, self.max_iter + 1), desc=f"k-means K={k} (Lloyd)", leave=False,
                           disable=not self.progress or progress_disabled()):
            c_sq = (centers * centers).sum(1).unsqueeze(0)
            # (``min(1).indices``: the same first minimum as ``argmin(1)``, whose CPU kernel is 2.5x slower here)
            new = torch.cat([torch.addmm(c_sq, x[i:i + chunk], centers.t(), alpha=-2.0).min(1).indices
                             for i in range(0, n, chunk)])
            changed = bool((new != assign).any())
            assign = new
            counts = torch.bincount(assign, minlength=k)
            sums = torch.zeros_like(centers).index_add_(0, assign, x)
            moved = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype), centers)
            shift = float((moved - centers).square().sum())
            centers = moved
            if not changed or shift <= threshold:
                converged = True
                break
        self.cluster_centers_ = centers
        self.result_ = KMeansResult(n_steps=passes, n_epochs=float(passes), converged=converged)
        return self

    # -- using the centres -----------------------------------------------------------------
    def _check_fitted(self) -> torch.Tensor:
        if self.cluster_centers_ is None:
            raise RuntimeError("KMeans is not fitted yet; call fit() first")
        return self.cluster_centers_

    def predict(self, x: torch.Tensor | np.ndarray, chunk: int = 65_536) -> np.ndarray:
        """Nearest centre of every row of ``x (N, D)`` -> ``(N,)`` int64 unit ids."""
        centers = self._check_fitted()
        x = torch.as_tensor(x, dtype=torch.float32)
        out = [squared_distances(x[i:i + chunk].to(self.device), centers).min(1).indices.cpu()
               for i in range(0, x.shape[0], chunk)]
        return torch.cat(out).numpy() if out else np.zeros(0, np.int64)

    def inertia(self, x: torch.Tensor | np.ndarray, chunk: int = 65_536) -> float:
        """Sum of squared distances of every row of ``x`` to its nearest centre."""
        centers = self._check_fitted()
        x = torch.as_tensor(x, dtype=torch.float32)
        return float(sum(squared_distances(x[i:i + chunk].to(self.device), centers).min(1).values.double().sum()
                         for i in range(0, x.shape[0], chunk)))
