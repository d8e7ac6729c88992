"""Our torch k-means against scikit-learn's MiniBatchKMeans on the same MFCC frames.

scikit-learn's ``MiniBatchKMeans`` is what fairseq uses to learn HuBERT's teachers
(``examples/hubert/simple_kmeans/learn_kmeans.py``). Both are run here, side by side, on the
39-dim MFCC frames of the synthetic corpus's pre-training split with the same options
(K=100, batch 10000, k-means++ init, max_iter 100, max_no_improvement 100, no reassignment),
and the script prints:

- time ratio    = scikit-learn fit time / our fit time (>1: ours is faster)
- inertia ratio = our inertia / scikit-learn inertia on all frames (<=1: ours fits as well or better)

Usage: ``python bench/bench_kmeans.py [--preset tiny] [--k 100] [--n-init 20] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans

from speechssl.cluster import KMeans
from speechssl.data.audio import load_audio
from speechssl.data.manifest import read_manifest
from speechssl.data.synth import ensure_corpus
from speechssl.features import mfcc
from speechssl.paths import corpus_dir


def mfcc_frames(root, split="pretrain") -> np.ndarray:
    feats = [mfcc(load_audio(root / u.path)).numpy() for u in read_manifest(root, split)]
    return np.concatenate(feats).astype(np.float32)


def inertia(x: np.ndarray, centers: np.ndarray) -> float:
    km = KMeans(len(centers), device="cpu")
    km.cluster_centers_ = torch.as_tensor(centers, dtype=torch.float32)
    return km.inertia(x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--n-init", type=int, default=20, help="fairseq uses 20")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    root = ensure_corpus(corpus_dir(args.preset), args.preset)
    x = mfcc_frames(root)
    print(f"MFCC frames: {x.shape[0]} x {x.shape[1]} ({x.shape[0] / 100 / 60:.1f} min of audio), "
          f"K={args.k}, n_init={args.n_init}, torch threads={torch.get_num_threads()}")
    opts = dict(batch_size=10_000, max_iter=100, n_init=args.n_init, max_no_improvement=100)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = {}
    for r in range(args.repeats):
        t0 = time.perf_counter()
        ref = MiniBatchKMeans(args.k, init="k-means++", tol=0.0, reassignment_ratio=0.0, compute_labels=False,
                              random_state=r, **opts).fit(x)
        rows.setdefault("sklearn", []).append((time.perf_counter() - t0, inertia(x, ref.cluster_centers_)))
        for dev in devices:
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            ours = KMeans(args.k, seed=r, device=dev, progress=False, **opts).fit(x)
            if dev == "cuda":
                torch.cuda.synchronize()
            rows.setdefault(f"speechssl ({dev})", []).append(
                (time.perf_counter() - t0, inertia(x, ours.cluster_centers_.cpu().numpy())))
    ref_t = statistics.median(t for t, _ in rows["sklearn"])
    ref_i = statistics.median(i for _, i in rows["sklearn"])
    print(f"{'implementation':22s} {'fit s (median)':>14s} {'inertia (median)':>17s} {'time ratio':>11s} {'inertia ratio':>14s}")
    for name, vals in rows.items():
        t = statistics.median(v for v, _ in vals)
        i = statistics.median(v for _, v in vals)
        print(f"{name:22s} {t:14.2f} {i:17.4g} {ref_t / t:10.2f}x {i / ref_i:14.4f}")


if __name__ == "__main__":
    main()
