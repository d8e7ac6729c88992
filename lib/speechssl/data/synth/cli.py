"""The command line, ``python -m speechssl.data.synth``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

from ...errors import ConfigError, SynthesisError
from ..manifest import read_meta
from .config import PRESETS
from .generate import generate_corpus
from .meta import corpus_is_current


def summary(out_dir: str | os.PathLike, wall_seconds: float | None = None) -> str:
    """One line describing a corpus (hours per split, speakers, speed if ``wall_seconds``)."""
    meta = read_meta(out_dir)
    splits = meta["splits"]
    parts = [f"{s} {v['seconds'] / 3600:.2f} h" for s, v in splits.items()]
    audio = sum(v["seconds"] for v in splits.values())
    if "finetune_1h" in splits:               # it contains the finetune audio
        audio -= splits["finetune"]["seconds"]
    line = (f"{meta['preset']} corpus at {out_dir}: " + ", ".join(parts)
            + f", unpaired_text {meta['unpaired_text']['sentences']} sentences; "
            f"{len(meta['speakers'])} speakers")
    if wall_seconds:
        line += (f"; {audio:.0f} s of audio in {wall_seconds:.1f} s "
                 f"({audio / wall_seconds:.0f}x real time)")
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m speechssl.data.synth",
        description="Generate the phone-aligned synthetic speech corpus with eSpeak NG.")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: available CPUs)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep an existing corpus made with the same preset and seed")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        if args.reuse and corpus_is_current(args.out, args.preset, args.seed):
            print(summary(args.out) + " (existing corpus reused)")
            return 0
        out = generate_corpus(args.out, args.preset, seed=args.seed, workers=args.workers,
                              progress=not args.no_progress)
    except (ConfigError, SynthesisError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(out, time.perf_counter() - t0))
    return 0
