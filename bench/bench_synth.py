"""Speed of the synthetic corpus generator, in multiples of real time.

Generates a preset (default ``tiny``) into a temporary folder with 2 workers and with 1 worker,
each in a fresh Python process so that every run pays what a user pays (reading the sentence
files, starting the worker processes), and prints audio seconds, wall seconds and their ratio
side by side. The goal is at least 200x real time with 2 workers on 2 cores.

It also prints the CPU time of all processes of a run (main process, fork server, workers and
the processes they fork). Audio seconds per CPU second does not depend on what else runs on
the machine, so it stays comparable on a shared computer where wall-clock ratios do not; with
two idle cores, the 2-worker ratio approaches twice that figure.

It then profiles the stages of one utterance in a single process (eSpeak NG synthesis,
resampling, alignment, post-processing and writing the WAV file), which shows where the time
goes if the goal is missed.

Usage::

    PYTHONPATH=lib python bench/bench_synth.py [--preset tiny] [--workers 2,1] [--repeats 1]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 200.0


def _child(preset: str, workers: int, out: str) -> None:
    """Run one generation and print a JSON line with the measurements."""
    t0 = time.perf_counter()
    from speechssl.data import synth
    from speechssl.data.manifest import read_meta
    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    root = synth.generate_corpus(out, preset, seed=0, workers=workers, progress=False)
    wall = time.perf_counter() - t1
    meta = read_meta(root)
    splits = meta["splits"]
    audio = sum(v["seconds"] for v in splits.values())
    if "finetune_1h" in splits:          # contains the finetune utterances
        audio -= splits["finetune"]["seconds"]
    # Stop the fork server (and so reap it) before exiting, so that its CPU time and that of
    # the workers it reaped reach the parent's RUSAGE_CHILDREN. Private API; measurement only.
    from multiprocessing import forkserver
    if hasattr(forkserver, "_forkserver") and hasattr(forkserver._forkserver, "_stop"):
        forkserver._forkserver._stop()
    print(json.dumps({"workers": workers, "audio_s": audio, "wall_s": wall, "import_s": t_import,
                      "utterances": sum(v["utterances"] for v in splits.values()),
                      "speakers": len(meta["speakers"]),
                      "minutes": {s: v["seconds"] / 60 for s, v in splits.items()},
                      "unpaired": meta["unpaired_text"]["sentences"]}))


def _run(preset: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        cmd = [sys.executable, __file__, "--child", "--preset", preset, "--workers", str(workers),
               "--out", str(Path(tmp, "corpus"))]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"generation failed:\n{proc.stderr}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return result


def _profile(n: int) -> None:
    """Time the stages of rendering ``n`` utterances in this process."""
    import numpy as np
    import soundfile as sf

    from speechssl.data import synth
    from speechssl.data.sentences import load_sentences

    espeak = synth.get_espeak()
    resample = synth.Resampler()
    sentences = load_sentences()[:n]
    voices = [f"{v}+{w}" for v in synth.ENGLISH_VOICES for w in synth.DEFAULT_VARIANTS]
    stages = dict.fromkeys(("espeak", "resample", "align", "post", "write"), 0.0)
    audio = 0.0
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        for i, text in enumerate(sentences):
            voice = voices[(i * 7) % len(voices)]
            t = time.perf_counter()
            raw = espeak.synthesize_raw(text, voice, 170, 50, seed=i)
            t, t0 = time.perf_counter(), t
            stages["espeak"] += t - t0
            x = resample(raw.audio.astype(np.float32) / 32768.0)
            t, t0 = time.perf_counter(), t
            stages["resample"] += t - t0
            synth.align_phonemes(raw.events, len(x))
            t, t0 = time.perf_counter(), t
            stages["align"] += t - t0
            y = np.concatenate([np.zeros(3200, np.float32), x * 0.7, np.zeros(3200, np.float32)])
            y += np.random.default_rng(i).standard_normal(len(y), dtype=np.float32) * 1e-3
            pcm = np.clip(np.rint(y * 32767), -32768, 32767).astype(np.int16)
            t, t0 = time.perf_counter(), t
            stages["post"] += t - t0
            buf = io.BytesIO()           # as synth.workers._render does
            sf.write(buf, pcm, 16_000, subtype="PCM_16", format="WAV")
            Path(tmp, f"{i}.wav").write_bytes(buf.getbuffer())
            t, t0 = time.perf_counter(), t
            stages["write"] += t - t0
            audio += len(pcm) / 16_000
    total = sum(stages.values())
    print(f"\nstage profile, one process, {n} utterances, {audio:.0f} s of audio "
          f"({audio / total:.0f}x real time on one core without process overheads):")
    for name, sec in stages.items():
        print(f"  {name:9s} {sec * 1000 / n:6.2f} ms/utt  {100 * sec / total:5.1f}%  "
              f"({audio / sec:7.0f}x real time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--workers", default="2,1", help="comma-separated worker counts")
    parser.add_argument("--repeats", type=int, default=1, help="runs per worker count (best is kept)")
    parser.add_argument("--profile", type=int, default=200, help="utterances to profile (0: skip)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.preset, int(args.workers), args.out)
        return

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"preset {args.preset!r}, seed 0, {cpus} CPUs available, best of {args.repeats} run(s)")
    results = []
    for w in (int(x) for x in args.workers.split(",")):
        runs = [_run(args.preset, w) for _ in range(args.repeats)]
        results.append(min(runs, key=lambda r: r["wall_s"]))
    first = results[0]
    print(f"corpus: {first['utterances']} utterances, {first['speakers']} speakers, "
          f"{first['unpaired']} unpaired sentences; minutes per split: "
          + ", ".join(f"{s} {m:.1f}" for s, m in first["minutes"].items()))
    print(f"\n{'workers':>7} {'audio s':>9} {'wall s':>8} {'x real time':>12} {'CPU s':>7} "
          f"{'audio s / CPU s':>16}")
    for r in results:
        print(f"{r['workers']:>7} {r['audio_s']:>9.1f} {r['wall_s']:>8.2f} "
              f"{r['audio_s'] / r['wall_s']:>12.0f} {r['cpu_s']:>7.2f} "
              f"{r['audio_s'] / r['cpu_s']:>16.0f}")
    print(f"(load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; on a "
          "shared machine the wall-clock ratios vary with the other load, the CPU ratio does not)")
    two = [r for r in results if r["workers"] == 2]
    if two:
        ratio = two[0]["audio_s"] / two[0]["wall_s"]
        print(f"\ngoal >= {GOAL:.0f}x real time with 2 workers: {'met' if ratio >= GOAL else 'MISSED'} "
              f"({ratio:.0f}x)")
    if args.profile:
        _profile(args.profile)


if __name__ == "__main__":
    main()
