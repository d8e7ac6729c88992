"""``python -m speechssl.train``: pre-train a model of the book at a scale.

    python -m speechssl.train wav2vec2 --scale tiny                      # the tiny synthetic corpus, CPU
    torchrun --nproc_per_node=8 -m speechssl.train wav2vec2 --scale full \\
        --data librispeech:/data --subsets train-clean-100 train-clean-360 train-other-500

The settings are the model's recipe at the scale (:mod:`speechssl.recipes`); options such as
``--max-steps`` change them before the schedules are derived. The run folder (``--out``, default
``runs/<model>-<scale>``) holds the checkpoints and ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import paths
from .checkpoint import check_run_folder
from .cli import add_data_options, add_run_options, check_run_data, load_split, recipe_overrides, run_command
from .engine.distributed import DistInfo
from .recipes import PRETRAINING, recipe
from .run import start_run

__all__ = ["build_arg_parser", "main"]


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m speechssl.train",
        description="Pre-train a speechssl model (torchrun --nproc_per_node=N -m speechssl.train ... for N GPUs).",
        epilog=f"models: {', '.join(PRETRAINING)}\nscales: {', '.join(paths.SCALES)}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=PRETRAINING, metavar="MODEL", help=f"one of {', '.join(PRETRAINING)}")
    add_data_options(p, split="pretrain")
    add_run_options(p, default_out="<runs_dir>/<model>-<scale>")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 2 for a bad command line or configuration, 1 for a failed run, 0 on success."""
    parser = build_arg_parser()
    args = parser.parse_args(argv)

    def body(info: DistInfo) -> int:
        r = recipe(args.model, args.scale or paths.scale(), **recipe_overrides(args))
        folder = check_run_folder(r.train.resolved_out_dir())
        if info.is_main:
            check_run_data(folder, args.data, args.subsets, args.resume, args.overwrite)
        splits, root, _ = load_split(r, args.data, args.subsets, "pretrain", info, audio_ext=args.audio_ext)
        run = start_run(r, [u for _, utts in splits for u in utts], root, what=f"{args.data} ({args.model})")
        history = run.fit(resume=args.resume, overwrite=args.overwrite)
        if info.is_main:
            print(f"{args.model} ({r.scale}): {run.trainer.step} updates, loss {history[-1]['loss'] if history else None}; "
                  f"run folder {run.trainer.out_dir}")
        return 0

    return run_command(parser.prog, body, scale=lambda: args.scale or paths.scale())


if __name__ == "__main__":
    sys.exit(main())
