"""Our torch k-means against scikit-learn's MiniBatchKMeans (and faiss, if installed) on the same MFCC frames.

scikit-learn's ``MiniBatchKMeans`` is what fairseq uses to learn HuBERT's teachers
(``examples/hubert/simple_kmeans/learn_kmeans.py``). Both are run here, side by side, on the
39-dim MFCC frames of the synthetic corpus's pre-training split with the same options
(K=100 and K=500, batch 10000, k-means++ init, max_iter 100, max_no_improvement 100, no reassignment),
and the script prints:

- time ratio    = scikit-learn fit time / this fit time (>1: faster than scikit-learn)
- inertia ratio = this inertia / scikit-learn inertia on all frames (<=1: fits as well or better)

Two more rows fit with ``KMeans(algorithm="lloyd")``: one k-means++ seeding, then full passes over
every frame until scikit-learn ``KMeans``'s stopping rule (``tol=1e-4``) or 25 passes (faiss's default;
``python -m speechssl.hubert --kmeans lloyd``), and the same with up to 100 passes. When ``import faiss``
works, ``faiss.Kmeans`` (full-batch Lloyd from a random start, its default 25 iterations, on every frame,
on the GPU when faiss sees one) is a row, and a last row is our Lloyd stopped at the first pass whose
inertia is at most faiss's (the fewest passes that match faiss, found by refitting with 1, 2, ...
passes). ``bench/gpu_check.py`` runs the same comparison at K=500 on a GPU.

faiss is not one of the book's requirements; ``pip install faiss-cpu`` adds its row.

Usage: ``python bench/bench_kmeans.py [--preset tiny] [--k 100 500] [--n-init 20] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans

from speechssl.cluster import LLOYD_OPTIONS, KMeans
from speechssl.data.audio import load_audio
from speechssl.data.manifest import read_manifest
from speechssl.data.synth import ensure_corpus
from speechssl.features import mfcc
from speechssl.paths import corpus_dir

#: fairseq's ``learn_kmeans.py`` options besides K and ``n_init`` (k-means++ init, no reassignment, tol 0).
FAIRSEQ_OPTIONS = {"batch_size": 10_000, "max_iter": 100, "max_no_improvement": 100}

#: A fit: ``(frames (N, D), K, seed) -> centres (K, D)``.
Fit = Callable[[np.ndarray, int, int], np.ndarray]


def mfcc_frames(root: str | os.PathLike, split: str = "pretrain", max_frames: int | None = None,
                threads: int = 1) -> np.ndarray:
    """MFCC frames ``(N, 39)`` of ``split``: its first utterances in manifest order, at most ``max_frames``
    frames, computed by ``threads`` threads."""
    utts, n = [], 0
    for u in read_manifest(root, split):
        if max_frames is not None and n >= max_frames:
            break
        utts.append(u)
        n += int(u.seconds * 100)   # 10 ms frames
    torch_threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)    # parallel over utterances, not inside each small transform
    try:
        with ThreadPoolExecutor(threads) as pool:
            feats = list(pool.map(lambda u: mfcc(load_audio(os.path.join(root, u.path))).numpy(), utts))
    finally:
        torch.set_num_threads(torch_threads)
    return np.concatenate(feats)[:max_frames].astype(np.float32)


def inertia(x: np.ndarray, centers: np.ndarray, device: str | torch.device = "cpu") -> float:
    """Sum of squared distances of every frame to its nearest centre."""
    km = KMeans(len(centers), device=device)
    km.cluster_centers_ = torch.as_tensor(centers, dtype=torch.float32, device=km.device)
    return km.inertia(x)


def sklearn_fit(n_init: int) -> Fit:
    """scikit-learn's ``MiniBatchKMeans`` with fairseq's options."""
    def fit(x: np.ndarray, k: int, seed: int) -> np.ndarray:
        return MiniBatchKMeans(k, init="k-means++", tol=0.0, reassignment_ratio=0.0, compute_labels=False,
                               random_state=seed, n_init=n_init, **FAIRSEQ_OPTIONS).fit(x).cluster_centers_
    return fit


def speechssl_fit(n_init: int, device: str) -> Fit:
    """Our :class:`~speechssl.cluster.KMeans` on ``device`` with fairseq's options."""
    def fit(x: np.ndarray, k: int, seed: int) -> np.ndarray:
        km = KMeans(k, seed=seed, device=device, progress=False, n_init=n_init, **FAIRSEQ_OPTIONS).fit(x)
        return km.cluster_centers_.cpu().numpy()
    return fit


def lloyd_fit(device: str, max_iter: int = LLOYD_OPTIONS["max_iter"]) -> Fit:
    """Our :class:`~speechssl.cluster.KMeans` with ``algorithm="lloyd"``, as ``python -m speechssl.hubert
    --kmeans lloyd`` runs it (:data:`~speechssl.cluster.LLOYD_OPTIONS`: one k-means++ seeding on 30,000
    frames, as the mini-batch seeding, then full passes until scikit-learn ``KMeans``'s ``tol=1e-4`` or 25
    passes, faiss's default), with at most ``max_iter`` passes."""
    def fit(x: np.ndarray, k: int, seed: int) -> np.ndarray:
        km = KMeans(k, seed=seed, device=device, progress=False, **{**LLOYD_OPTIONS, "max_iter": max_iter}).fit(x)
        return km.cluster_centers_.cpu().numpy()
    return fit


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def faiss_fit(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``faiss.Kmeans`` with its defaults, on every frame (not its default subsample of 256 per centre),
    on the GPU when faiss has one."""
    import faiss

    km = faiss.Kmeans(x.shape[1], k, seed=seed, gpu=faiss.get_num_gpus() > 0,
                      max_points_per_centroid=math.ceil(len(x) / k), verbose=False)
    km.train(np.ascontiguousarray(x))
    return km.centroids


def compare(x: np.ndarray, k: int, fits: Mapping[str, Fit], *, seeds: Sequence[int],
            inertia_device: str | torch.device = "cpu") -> dict[str, list[tuple[float, float]]]:
    """``{name: [(fit seconds, inertia on all of x), ...]}``, one entry per seed; every fit of a seed runs
    before the next seed's. CUDA is synchronised around each fit."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for seed in seeds:
        for name, fit in fits.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            centers = fit(x, k, seed)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            rows.setdefault(name, []).append((time.perf_counter() - t0, inertia(x, centers, inertia_device)))
    return rows


def lloyd_at(x: np.ndarray, k: int, seed: int, target: float, most: int = 100) -> tuple[float, float]:
    """Fit time and inertia of our Lloyd with the fewest passes whose inertia is at most ``target``."""
    for passes in range(1, most + 1):
        t0 = time.perf_counter()
        centers = lloyd_fit("cpu", passes)(x, k, seed)
        seconds, value = time.perf_counter() - t0, inertia(x, centers)
        if value <= target:
            break
    return seconds, value


def summarize(rows: Mapping[str, list[tuple[float, float]]], reference: str = "sklearn") -> dict[str, dict]:
    """Median fit time and inertia of each row, and both ratios against ``reference``."""
    med = {name: (statistics.median(t for t, _ in v), statistics.median(i for _, i in v)) for name, v in rows.items()}
    ref_t, ref_i = med[reference]
    return {name: {"fit_s": t, "inertia": i, "time_ratio": ref_t / t, "inertia_ratio": i / ref_i,
                   "repeats": len(rows[name])} for name, (t, i) in med.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--k", type=int, nargs="+", default=[100, 500], help="K values (HuBERT: 100 and 500)")
    ap.add_argument("--n-init", type=int, default=20, help="fairseq uses 20")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    root = ensure_corpus(corpus_dir(args.preset), args.preset)
    x = mfcc_frames(root)
    print(f"MFCC frames: {x.shape[0]} x {x.shape[1]} ({x.shape[0] / 100 / 60:.1f} min of audio), "
          f"n_init={args.n_init}, torch threads={torch.get_num_threads()}")
    fits = {"sklearn": sklearn_fit(args.n_init), "speechssl (cpu)": speechssl_fit(args.n_init, "cpu"),
            "speechssl Lloyd (cpu)": lloyd_fit("cpu"), "Lloyd, 100 passes (cpu)": lloyd_fit("cpu", 100)}
    if torch.cuda.is_available():
        fits["speechssl (cuda)"] = speechssl_fit(args.n_init, "cuda")
        fits["speechssl Lloyd (cuda)"] = lloyd_fit("cuda")
    if faiss_available():
        fits["faiss"] = faiss_fit
    for k in args.k:
        rows = compare(x, k, fits, seeds=range(args.repeats))
        if "faiss" in rows:
            rows["Lloyd at faiss's inertia"] = [lloyd_at(x, k, seed, value)
                                                for seed, (_, value) in zip(range(args.repeats), rows["faiss"])]
        summary = summarize(rows)
        print(f"\nK={k}, median of {args.repeats} seeds")
        print(f"{'implementation':24s} {'fit s (median)':>14s} {'inertia (median)':>17s} {'time ratio':>11s} {'inertia ratio':>14s}")
        for name, s in summary.items():
            print(f"{name:24s} {s['fit_s']:14.2f} {s['inertia']:17.4g} {s['time_ratio']:10.2f}x {s['inertia_ratio']:14.4f}")


if __name__ == "__main__":
    main()
